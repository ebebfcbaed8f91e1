"""Turn images and arrays into model inputs: float32, batch first, channels first, normalised.

Every check raises a one-line `UserError` that names the data and says how to fix it. PIL is
imported inside the functions that read images (the CLI imports this module on its fast path).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgeconv.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

LAYOUTS = ("NCHW", "NHWC")


def _dims(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape)


def model_shape_text(input_shape: Sequence[int]) -> str:
    """The model's input shape with the batch dimension written as N: `(N, 3, 32, 32)`."""
    return "(" + ", ".join(["N", *(str(d) for d in input_shape[1:])]) + ")"


def resolve_norm(spec_mean: Sequence[float], spec_std: Sequence[float], model_mean: Sequence[float],
                 model_std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The user's --mean/--std win over what the model declares."""
    mean = tuple(spec_mean) if spec_mean else tuple(model_mean)
    std = tuple(spec_std) if spec_std else tuple(model_std)
    return mean, std


def normalize(x: np.ndarray, mean: Sequence[float], std: Sequence[float], what: str) -> np.ndarray:
    """(x - mean) / std along axis 1 (channels, or features for N×F inputs)."""
    if not mean and not std:
        return x
    channels = x.shape[1] if x.ndim > 1 else 1
    m = _per_channel(mean, 0.0, channels, "mean", what)
    s = _per_channel(std, 1.0, channels, "std", what)
    if np.any(s <= 0):
        raise UserError(f"std {list(std)} for {what} has a value <= 0; pass positive --std values")
    bshape = (1, channels) + (1,) * (x.ndim - 2)
    return ((x - m.reshape(bshape)) / s.reshape(bshape)).astype(np.float32)


def _per_channel(values: Sequence[float], default: float, channels: int, name: str, what: str) -> np.ndarray:
    if not values:
        return np.full(channels, default, np.float32)
    if len(values) not in (1, channels):
        raise UserError(f"{name} {list(values)} for {what} has {len(values)} values but the model input has "
                        f"{channels} channels; pass 1 or {channels} values to --{name}")
    return np.broadcast_to(np.asarray(values, np.float32), (channels,)).copy()


# --- images ---------------------------------------------------------------------------------------

def image_to_chw(img: "Image.Image", height: int, width: int, channels: int) -> np.ndarray:
    """One PIL image -> float32 C×H×W in [0, 1]: bilinear resize, grey→RGB, alpha dropped."""
    from PIL import Image

    img = _to_mode(img, channels)
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    a = np.asarray(img)
    scale = 65535.0 if img.mode.startswith("I;16") else 255.0
    a = a.astype(np.float32) / scale
    if a.ndim == 2:
        a = a[:, :, None]
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def _to_mode(img: "Image.Image", channels: int) -> "Image.Image":
    target = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if target is None:
        raise UserError(f"the model takes {channels}-channel inputs, which images cannot provide; "
                        "pass a .npy/.npz array of model inputs with --calib instead")
    if channels == 1 and img.mode.startswith("I;16"):
        return img  # 16-bit greyscale keeps its precision
    img = _8bit(img)
    return img if img.mode == target else img.convert(target)  # grey→RGB replicates; RGBA→RGB drops alpha


def _8bit(img: "Image.Image") -> "Image.Image":
    # PIL cannot convert 16-bit greyscale straight to RGB without clipping at 255.
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode != "F" else max(float(a.max()), 1.0)
        from PIL import Image

        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return img


# --- arrays ---------------------------------------------------------------------------------------

_BAD_KINDS = {"b": "bool", "c": "complex", "O": "object", "U": "string", "S": "bytes", "V": "structured",
              "M": "datetime", "m": "timedelta"}


def check_dtype(a: np.ndarray, what: str) -> None:
    if a.dtype.kind in _BAD_KINDS:
        raise UserError(f"{what} has dtype {a.dtype} ({_BAD_KINDS[a.dtype.kind]}); calibration data must be "
                        "numbers: save float32 model inputs or uint8 pixels")


def check_finite(a: np.ndarray, what: str) -> None:
    if a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        nan = int(np.isnan(a).sum())
        inf = int(bad.sum()) - nan
        raise UserError(f"{what} contains {nan} NaN and {inf} Inf values (of {a.size}); "
                        "remove or replace them before calibrating")


def to_model_input(a: np.ndarray, input_shape: Sequence[int], layout: str, what: str) -> np.ndarray:
    """Bring an array to the model's (N, *input_shape[1:]) layout, without changing the values."""
    if layout not in LAYOUTS:
        raise UserError(f"calibration layout {layout!r} is not one of {', '.join(LAYOUTS)}; "
                        "pass --calib-layout NCHW or NHWC")
    sample = tuple(input_shape[1:])
    if a.ndim == 4 and layout == "NHWC":
        a = a.transpose(0, 3, 1, 2)
    elif a.ndim == len(sample) and a.shape == sample:
        a = a[None]  # one sample without its batch dimension
    elif len(sample) == 3 and sample[0] == 1 and a.ndim == 3 and a.shape[1:] == sample[1:]:
        a = a[:, None]  # N×H×W greyscale for a one-channel model
    if a.ndim != len(input_shape) or a.shape[1:] != sample or a.shape[0] == 0:
        raise UserError(_shape_message(a if layout != "NHWC" or a.ndim != 4 else a.transpose(0, 2, 3, 1),
                                       input_shape, layout, what))
    return np.ascontiguousarray(a)


def _shape_message(a: np.ndarray, input_shape: Sequence[int], layout: str, what: str) -> str:
    if a.shape and a.shape[0] == 0:
        return f"{what} holds no samples (shape {tuple(a.shape)}); pass at least one sample"
    want = "N×" + _dims(input_shape[1:])
    hint = ""
    if len(input_shape) == 4:
        c, h, w = input_shape[1:]
        hint = (f" (or N×{h}×{w}×{c} with --calib-layout NHWC)" if layout == "NCHW"
                else f" (or N×{c}×{h}×{w} with --calib-layout NCHW)")
        if layout == "NHWC":
            want = f"N×{h}×{w}×{c}"
    return (f"{what} has shape {tuple(a.shape)}, the model takes {model_shape_text(input_shape)}; "
            f"pass arrays shaped {want}{hint}")


def scale_pixels(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """Unsigned integers are pixels: -> float32 in [0, 1]. Returns (array, whether it was pixels).

    Signed integers and floats are taken as values in the model's own units.
    """
    if a.dtype.kind == "u":
        return (a.astype(np.float32) / float(np.iinfo(a.dtype).max)), True
    return a.astype(np.float32), False


def check_labels(y: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if y is None:
        return None
    if y.dtype.kind not in "iuf" or y.ndim == 0:
        raise UserError(f"labels in {what} have dtype {y.dtype} and shape {tuple(y.shape)}; "
                        "save one integer label per sample as y")
    if len(y) != n:
        raise UserError(f"{what} has {n} samples but {len(y)} labels; save exactly one label per sample")
    check_finite(y, f"labels in {what}")
    return y.astype(np.int64) if y.dtype.kind in "iu" else y
