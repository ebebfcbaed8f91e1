"""Calibration and evaluation data sources for `--calib`: the model's bundled data (`demo`), `random`,
a folder of images, a `.npy` array, or a `.npz` archive (arrays `x` and optional `y`, or one array).

Every source ends as a `DataSet` of float32 model inputs shaped like the model's input. A net with
several inputs is fed only by sources that can give each of them (`more_shapes`, `names`): its
bundled data, `random` (every input seeded N(0,1)) or a `.npz` with one array per input name; an
image folder or a single array feeds one input, so it is refused with the fix.
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
              bundled: Callable[[], DataSet] | None = None, more_shapes: Sequence[tuple[int, ...]] = (),
              names: Sequence[str] = ()) -> DataSet:
    """Load `spec.source` as model inputs of shape (N, *input_shape[1:]); at most `count` samples
    (the first ones in array order; from an image folder, drawn evenly across its sub-folders with
    `seed` — see `draw_files`). `more_shapes`: the shapes of a net's inputs after the first, which
    the data must supply too; `names`: every input's name (what a .npz names its arrays)."""
    if count is not None and count <= 0:
        raise UserError(f"--calib-samples {count} must be a positive number of samples")
    source = spec.source.strip()
    if source in ("demo", "bundled"):
        data = _bundled(bundled, input_shape, count, more_shapes)
    elif source == "random":
        data = random_data(input_shape, count or DEFAULT_RANDOM_COUNT, seed, more_shapes)
    elif more_shapes:
        data = _named_arrays(Path(source).expanduser(), (tuple(input_shape), *map(tuple, more_shapes)), names,
                             spec, model_mean, model_std, count)
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


def random_data(input_shape: Sequence[int], count: int, seed: int = 0,
                more_shapes: Sequence[Sequence[int]] = ()) -> DataSet:
    """Seeded standard-normal inputs: lets a model without data run, marked as not a real calibration.
    Every input of a net with several is drawn from the same seeded stream, after the first (which is
    so the same as a one-input net's)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, *input_shape[1:])).astype(np.float32)
    more = tuple(rng.standard_normal((count, *s[1:])).astype(np.float32) for s in more_shapes)
    return DataSet(x, None, source=RANDOM_SOURCE + (" for every input" if more else ""), real=False, more=more)


def _bundled(bundled: Callable[[], DataSet] | None, input_shape: Sequence[int], count: int | None,
             more_shapes: Sequence[Sequence[int]] = ()) -> DataSet:
    if bundled is None:
        raise UserError("the model bundles no calibration data; pass an image folder, a .npy/.npz file "
                        "or 'random' to --calib")
    data = bundled()
    pp.to_model_input(data.x, input_shape, "NCHW", f"bundled data ({data.source})")
    if len(data.more) != len(more_shapes):
        raise UserError(f"the model takes {len(more_shapes) + 1} inputs but its bundled data ({data.source}) gives "
                        f"{len(data.more) + 1}; bundle one array per input (DataSet.more) or pass --calib random")
    for i, (m, shape) in enumerate(zip(data.more, more_shapes, strict=True)):
        pp.to_model_input(m, shape, "NCHW", f"bundled data ({data.source}), input {i + 2}")
    return data.take(0, count) if count else data


def _named_arrays(path: Path, shapes: Sequence[tuple[int, ...]], names: Sequence[str], spec: "CalibSpec",
                  model_mean: Sequence[float], model_std: Sequence[float], count: int | None) -> DataSet:
    """A net with several inputs from a .npz holding one array per input name (labels as `y`).
    The first input is read as a one-input net's (pixels scaled, --mean/--std or the model's
    normalisation); the others are used as stored — float model inputs, in --layout, pixel
    integers scaled to [0, 1] — since the mean and std are the first input's."""
    want = ", ".join(names)
    how = f"numpy.savez(path, {', '.join(f'{n}=...' for n in names)})"
    if path.suffix.lower() != ".npz" or not path.is_file():
        what = "does not exist" if not path.exists() else "feeds one input"
        raise UserError(f"calibration data {path} {what}; the model takes {len(shapes)} inputs ({want}): pass a "
                        f".npz with one array per input, {how}, or 'random' to --calib")
    try:
        with np.load(path, allow_pickle=False) as loaded:
            found = {n: loaded[n] for n in loaded.files}
    except Exception as e:  # numpy raises ValueError, OSError, EOFError or zipfile.BadZipFile here
        raise UserError(f"calibration data {path.name} is not a readable .npz ({type(e).__name__}); "
                        f"write it with {how}") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise UserError(f"calibration data {path.name} has no array for input(s) {', '.join(missing)} (it holds "
                        f"{', '.join(found) or 'none'}); the model takes {want}: write it with {how}")
    mean, std = pp.resolve_norm(spec.mean, spec.std, model_mean, model_std)
    out = []
    for i, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        what = f"calibration data {path.name}[{name}]"
        a = found[name]
        pp.check_dtype(a, what)
        pp.check_finite(a, what)
        a, pixels = pp.scale_pixels(pp.to_model_input(a, shape, spec.layout.upper(), what))
        if i == 0:
            a = pp.normalize(a, mean, std, what) if pixels else pp.normalize(a, spec.mean, spec.std, what)
        out.append(a)
    if len({len(a) for a in out}) > 1:
        raise UserError(f"calibration data {path.name}: the inputs have different sample counts "
                        f"({', '.join(f'{n} {len(a)}' for n, a in zip(names, out, strict=True))}); give each as many")
    y = pp.check_labels(found.get("y"), len(out[0]), f"calibration data {path.name}[y]")
    if count:
        out, y = [a[:count] for a in out], (None if y is None else y[:count])
    out = [np.ascontiguousarray(a, dtype=np.float32) for a in out]
    return DataSet(out[0], y, source=f"arrays {path} (inputs {want}; {names[0]} preprocessed as a one-input "
                   "net's, the others as stored)", more=tuple(out[1:]))


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
