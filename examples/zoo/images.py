"""Real photos for the zoo: BatchNorm statistics and the coverage bench's calibration folder.

The photos ship inside installed packages (nothing is downloaded): scikit-learn's two sample
photos (`load_sample_images()`: china.jpg, flower.jpg, CC BY 2.0) and, where scikit-image is
installed, a few of `skimage.data`'s bundled colour images. Crops are drawn with a fixed seed
(position, side, mirror), so the same call gives the same pixels on every machine.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left")


@functools.lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """uint8 H×W×3 photos, in a fixed order (sklearn's first, then skimage's when importable)."""
    from sklearn.datasets import load_sample_images

    out = [np.ascontiguousarray(a) for a in load_sample_images().images]
    try:
        import skimage.data as sd
    except ImportError:  # optional: not a dependency of the project
        sd = None
    for name in SKIMAGE_PHOTOS if sd is not None else ():
        try:
            a = getattr(sd, name)()
        except Exception:  # images outside the package try a download and fail offline
            continue
        if a.ndim == 3 and a.shape[2] >= 3:
            out.append(np.ascontiguousarray(a[..., :3]))
    for a in out:
        a.setflags(write=False)
    return tuple(out)


def crops(n: int, side: int = 256, seed: int = 0) -> list["Image.Image"]:  # noqa: F821
    """`n` square RGB crops (PIL images, `side`×`side`), cycling over the photos; seeded."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pics = photos()
    out = []
    for i in range(n):
        a = pics[i % len(pics)]
        h, w = a.shape[:2]
        s = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        c = a[y:y + s, x:x + s]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        out.append(Image.fromarray(np.ascontiguousarray(c)).resize((side, side), Image.Resampling.BILINEAR))
    return out


def batch(n: int, height: int, width: int, mean=(), std=(), seed: int = 0) -> np.ndarray:
    """N×3×H×W float32 model inputs: crops resized bilinearly (as `--calib FOLDER` does), scaled to
    [0, 1], then normalised with mean/std when given."""
    from PIL import Image

    x = np.stack([np.asarray(c.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
                  .transpose(2, 0, 1) / 255.0 for c in crops(n, 256, seed)])
    if mean:
        x = x - np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    if std:
        x = x / np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def write_folder(path: str | Path, n: int, side: int = 256, seed: int = 0) -> Path:
    """Write `n` crops as PNGs (lossless: the pixels are exactly `crops()`) into `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(crops(n, side, seed)):
        img.save(path / f"crop{i:03d}.png")
    return path
