"""Calibration and evaluation data sources for `--calib`: the model's bundled data (`demo`), `random`,
a folder of images, a `.npy` array, or a `.npz` archive (arrays `x` and optional `y`, or one array).

Every source ends as a `DataSet` of float32 model inputs shaped like the model's input.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from edgeconv.calib import preprocess as pp
from edgeconv.calib.data import DataSet
from edgeconv.errors import UserError

if TYPE_CHECKING:
    from edgeconv.config import CalibSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
RANDOM_SOURCE = "random (not a real calibration)"
DEFAULT_RANDOM_COUNT = 128


def load_data(spec: "CalibSpec", input_shape: tuple[int, ...], *, model_mean: Sequence[float] = (),
              model_std: Sequence[float] = (), count: int | None = None, seed: int = 0,
              bundled: Callable[[], DataSet] | None = None) -> DataSet:
    """Load `spec.source` as model inputs of shape (N, *input_shape[1:]); at most `count` samples
    (the first ones in array order; from an image folder, drawn evenly across its sub-folders with
    `seed` — see `draw_files`)."""
    if count is not None and count <= 0:
        raise UserError(f"--calib-samples {count} must be a positive number of samples")
    source = spec.source.strip()
    if source in ("demo", "bundled"):
        data = _bundled(bundled, input_shape, count)
    elif source == "random":
        data = random_data(input_shape, count or DEFAULT_RANDOM_COUNT, seed)
    else:
        mean, std = pp.resolve_norm(spec.mean, spec.std, model_mean, model_std)
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(f"calibration data {source} does not exist; pass an image folder, a .npy/.npz file, "
                            "'demo' or 'random' to --calib")
        if path.is_dir():
            data = _folder(path, input_shape, mean, std, count, seed)
        elif path.suffix.lower() in (".npy", ".npz"):
            data = _arrays(path, input_shape, spec, mean, std, count)
        else:
            raise UserError(f"calibration data {path} is neither a folder of images nor a .npy/.npz file; "
                            "pass one of those to --calib")
    pp.check_finite(data.x, f"calibration data {data.source}")
    return data


def random_data(input_shape: Sequence[int], count: int, seed: int = 0) -> DataSet:
    """Seeded standard-normal inputs: lets a model without data run, marked as not a real calibration."""
    x = np.random.default_rng(seed).standard_normal((count, *input_shape[1:])).astype(np.float32)
    return DataSet(x, None, source=RANDOM_SOURCE, real=False)


def _bundled(bundled: Callable[[], DataSet] | None, input_shape: Sequence[int], count: int | None) -> DataSet:
    if bundled is None:
        raise UserError("the model bundles no calibration data; pass an image folder, a .npy/.npz file "
                        "or 'random' to --calib")
    data = bundled()
    pp.to_model_input(data.x, input_shape, "NCHW", f"bundled data ({data.source})")
    return data.take(0, count) if count else data


def _folder(path: Path, input_shape: Sequence[int], mean: Sequence[float], std: Sequence[float],
            count: int | None, seed: int = 0) -> DataSet:
    if len(input_shape) != 4:
        raise UserError(f"calibration folder {path} holds images but the model takes "
                        f"{pp.model_shape_text(input_shape)}; pass a .npy/.npz array instead")
    found = image_files(path)
    if not found:
        raise UserError(f"calibration folder {path} has no images (looked for "
                        f"{', '.join(IMAGE_SUFFIXES)}); put images there or pass a .npy/.npz file")
    files = draw_files(found, path, count, seed)
    _, c, h, w = input_shape
    x = np.stack([pp.image_to_chw(_open(f), h, w, c) for f in files])
    x = pp.normalize(x, mean, std, f"calibration folder {path}")
    groups = len({f.parent for f in found})
    how = f"{len(files)} of {len(found)} images" if len(files) < len(found) else f"{len(files)} images"
    spread = f", drawn evenly from {groups} sub-folders" if groups > 1 else ""
    return DataSet(x, None, source=f"image folder {path} ({how}{spread}, seed {seed})")


def draw_files(files: Sequence[Path], root: Path, count: int | None, seed: int = 0) -> list[Path]:
    """`count` of `files` (all when None), drawn evenly and reproducibly across their folders.

    Each folder (on a class-per-folder dataset: each class) is shuffled with `seed`, the folders are
    put in a seeded order, and the draw takes one file from each folder in turn: any prefix of the
    result — the calibration samples, then the held-out ones after them — spans as many folders as
    it can, never just the first classes in name order. Same files and seed: same draw."""
    rng = np.random.default_rng(seed)
    groups: dict[Path, list[Path]] = {}
    for f in sorted(files):
        groups.setdefault(f.parent.relative_to(root) if f.is_relative_to(root) else f.parent, []).append(f)
    keys = sorted(groups)
    queues = [[groups[keys[g]][i] for i in rng.permutation(len(groups[keys[g]]))]
              for g in rng.permutation(len(keys))]
    drawn = [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)]
    return drawn[:count] if count else drawn


def image_files(path: Path) -> list[Path]:
    """Images under `path` (subfolders too), sorted so that runs are reproducible; hidden files skipped."""
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"image {path} cannot be read ({type(e).__name__}); replace or remove it") from None


def _arrays(path: Path, input_shape: Sequence[int], spec: "CalibSpec", mean: Sequence[float],
            std: Sequence[float], count: int | None) -> DataSet:
    x, y, what = _read_arrays(path)
    pp.check_dtype(x, what)
    pp.check_finite(x, what)
    x = pp.to_model_input(x, input_shape, spec.layout.upper(), what)
    y = pp.check_labels(y, len(x), what)
    if count:
        x, y = x[:count], (None if y is None else y[:count])
    x, pixels = pp.scale_pixels(x)
    # Float arrays are model inputs already; only an explicit --mean/--std changes them.
    x = pp.normalize(x, mean, std, what) if pixels else pp.normalize(x, spec.mean, spec.std, what)
    return DataSet(np.ascontiguousarray(x, dtype=np.float32), y, source=f"arrays {path}")


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    try:
        # allow_pickle=False: a data file is untrusted input; object arrays are refused, not unpickled.
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded, None, f"calibration data {path.name}"
        with loaded:
            names = list(loaded.files)
            if "x" in names:
                return loaded["x"], (loaded["y"] if "y" in names else None), f"calibration data {path.name}[x]"
            if len(names) == 1:
                return loaded[names[0]], None, f"calibration data {path.name}[{names[0]}]"
    except Exception as e:  # numpy raises ValueError, OSError, EOFError or zipfile.BadZipFile here
        if "Object arrays" in str(e):
            raise UserError(f"calibration data {path.name} holds Python objects (dtype object); "
                            "save numeric arrays with numpy.save / numpy.savez") from None
        reason = str(e).split(". ")[0][:120] or type(e).__name__
        raise UserError(f"calibration data {path.name} is not a readable numpy file ({reason}); "
                        "write it with numpy.save / numpy.savez") from None
    raise UserError(f"calibration data {path.name} holds arrays {names or 'none'}; save the inputs as 'x' "
                    "(and labels as 'y'): numpy.savez(path, x=inputs, y=labels)")
