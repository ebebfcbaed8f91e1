"""What each output of a net means, and the task metric parity judges it by.

A classifier's "top-1 agreement" means nothing on a segmentation map, an image or a detection
head. A model declares its outputs (`ModelSpec.outputs`: name and kind, in the order forward
returns them), or edgeconv infers each kind from the fp32 reference and states that it did:

| kind        | shape                    | task metric against a reference                          |
|-------------|--------------------------|----------------------------------------------------------|
| `logits`    | (N, C)                   | top-1 agreement (the numeric verdict's decisive top-1)   |
| `class-map` | (N, C>1, H, W)           | per-pixel argmax agreement, mIoU over the classes        |
| `mask`      | (N, 1, H, W)             | IoU of the thresholded map (0.5 on probabilities, else 0)|
| `image`     | (N, 3 or 1, H, W)        | PSNR, peak = the reference's range                       |
| `boxes`     | (N, A·4, H, W) / (N,K,4) | mean IoU of each anchor's box, matched by anchor         |
| `scores`    | (N, A·C, H, W) / (N,K,C) | overlap of the top-k (anchor, class) scores, max |Δ prob|  |
| `embedding` | (N, D)                   | worst per-sample cosine                                  |

Boxes are raw regression outputs as detection heads emit them (decoding and NMS run outside the
net): each anchor's 4 values are decoded as (dx, dy, log w, log h) on a unit anchor. IoU is
invariant to the anchor's position and scale under that encoding, so the number is the IoU the
decoded boxes have whatever the anchors are.
"""
from __future__ import annotations

import dataclasses
import enum

import numpy as np


class OutputKind(enum.Enum):
    LOGITS = "logits"
    CLASS_MAP = "class-map"
    MASK = "mask"
    IMAGE = "image"
    BOXES = "boxes"
    SCORES = "scores"
    EMBEDDING = "embedding"


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """One output a model declares: its name in every artifact, and what it is."""

    name: str
    kind: OutputKind | str

    def __post_init__(self) -> None:
        if not isinstance(self.kind, OutputKind):
            try:
                object.__setattr__(self, "kind", OutputKind(self.kind))
            except ValueError:
                from edgeconv.errors import UserError

                raise UserError(f"output {self.name!r}: unknown kind {self.kind!r}; choose one of: "
                                + ", ".join(k.value for k in OutputKind)) from None


def output_names(declared: tuple[OutputSpec, ...], count: int) -> tuple[str, ...]:
    """The names every format gives the outputs: the declared ones, else output_0, output_1, … for
    a net with several; () for one undeclared output (each converter's own name is kept)."""
    if declared:
        return tuple(o.name for o in declared)
    return tuple(f"output_{i}" for i in range(count)) if count > 1 else ()


def infer(ref: np.ndarray) -> tuple[OutputKind, str]:
    """The kind of an undeclared output, from the fp32 reference, and why."""
    shape = ref.shape
    if ref.ndim == 2:
        return OutputKind.LOGITS, f"inferred from shape (N, {shape[1]})"
    if ref.ndim == 4 and shape[1] == 3:
        return OutputKind.IMAGE, "inferred: 3 channels at full resolution"
    if ref.ndim == 4 and shape[1] == 1:
        if ref.size and float(ref.min()) >= 0.0 and float(ref.max()) <= 1.0:
            return OutputKind.MASK, "inferred: one channel of values in [0, 1]"
        return OutputKind.IMAGE, "inferred: one channel of unbounded values (a regressed map)"
    if ref.ndim == 4:
        return OutputKind.CLASS_MAP, f"inferred: {shape[1]} channels per pixel, judged by argmax"
    return OutputKind.EMBEDDING, f"inferred from shape {tuple(shape)}"


def kinds(declared: tuple[OutputSpec, ...], refs: list[np.ndarray]) -> list[tuple[OutputKind, str]]:
    if declared and len(declared) == len(refs):
        return [(o.kind, "declared") for o in declared]  # type: ignore[misc]
    return [infer(r) for r in refs]


# --- the metrics ---------------------------------------------------------------------------------

def class_map(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    a, b = out.argmax(1), ref.argmax(1)
    ious = []
    for c in range(ref.shape[1]):
        inter, union = np.sum((a == c) & (b == c)), np.sum((a == c) | (b == c))
        if union:
            ious.append(inter / union)
    return {"pixel_agreement": float((a == b).mean()), "miou": float(np.mean(ious)) if ious else 1.0}


def mask(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    t = 0.5 if float(ref.min()) >= 0.0 and float(ref.max()) <= 1.0 else 0.0
    a, b = out > t, ref > t
    union = np.sum(a | b)
    return {"iou": float(np.sum(a & b) / union) if union else 1.0, "pixel_agreement": float((a == b).mean())}


# Identical images have infinite PSNR, which JSON cannot hold: reported as this cap.
PSNR_CAP_DB = 300.0


def psnr(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    peak = float(ref.max() - ref.min()) or 1.0
    mse = float(np.mean((out.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return {"psnr_db": PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, float(10 * np.log10(peak * peak / mse)))}


def _per_anchor(x: np.ndarray, width: int) -> np.ndarray:
    """(N, A·w, H, W) conv maps or (N, K, w) rows → (N, anchors, w)."""
    if x.ndim == 4:
        n, c, h, w = x.shape
        return x.reshape(n, c // width, width, h, w).transpose(0, 1, 3, 4, 2).reshape(n, -1, width)
    return x.reshape(x.shape[0], -1, width)


def _decode(d: np.ndarray) -> np.ndarray:
    wh = np.exp(np.clip(d[..., 2:4], -4.0, 4.0))  # torchvision clips log-size deltas likewise
    return np.concatenate([d[..., :2] - wh / 2, d[..., :2] + wh / 2], -1)


def _area(z: np.ndarray) -> np.ndarray:
    return np.prod(z[..., 2:] - z[..., :2], -1)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z.astype(np.float64), -60, 60)))


def boxes(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    a, b = _decode(_per_anchor(out.astype(np.float64), 4)), _decode(_per_anchor(ref.astype(np.float64), 4))
    lt, rb = np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    iou = inter / (_area(a) + _area(b) - inter)
    return {"box_iou_mean": float(iou.mean()), "box_iou_p5": float(np.percentile(iou, 5))}


TOP_K = 100


def scores(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Overlap of the k highest (anchor, class) scores per sample: what survives to NMS."""
    a, b = out.reshape(len(out), -1), ref.reshape(len(ref), -1)
    k = min(TOP_K, a.shape[1])
    ta, tb = np.argpartition(-a, k - 1, 1)[:, :k], np.argpartition(-b, k - 1, 1)[:, :k]
    overlap = np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(ta, tb)])
    return {"topk_overlap": float(overlap), "max_prob_delta": float(np.abs(_sigmoid(a) - _sigmoid(b)).max())}


def logits(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    return {"top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean())}


def embedding(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    a, b = out.reshape(len(out), -1).astype(np.float64), ref.reshape(len(ref), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
    return {"cosine_min": float(cos.min())}


METRICS = {OutputKind.LOGITS: logits, OutputKind.CLASS_MAP: class_map, OutputKind.MASK: mask,
           OutputKind.IMAGE: psnr, OutputKind.BOXES: boxes, OutputKind.SCORES: scores,
           OutputKind.EMBEDDING: embedding}


def metrics(kind: OutputKind, out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    return METRICS[kind](out, ref)


# --- floors --------------------------------------------------------------------------------------
# The metric each kind is judged by (higher is better) and its floor against torch fp32, per
# precision class. Float artifacts reproduce fp32 to rounding: a metric below these is a bug. fp16
# keeps ~3 digits. int8 moves the outputs by quantization itself: its floor is the torch quantized
# simulation's own metric less a slack (the lowering may add a little, not much), never a constant
# tuned on one demo. PSNR slack in dB, the rest in metric units.
HEADLINE = {OutputKind.LOGITS: "top1_agreement", OutputKind.CLASS_MAP: "miou", OutputKind.MASK: "iou",
            OutputKind.IMAGE: "psnr_db", OutputKind.BOXES: "box_iou_mean", OutputKind.SCORES: "topk_overlap",
            OutputKind.EMBEDDING: "cosine_min"}
FLOORS = {
    "float": {"top1_agreement": 0.99, "miou": 0.99, "iou": 0.99, "psnr_db": 60.0, "box_iou_mean": 0.999,
              "topk_overlap": 0.95, "cosine_min": 0.9999},
    "fp16": {"top1_agreement": 0.95, "miou": 0.95, "iou": 0.95, "psnr_db": 40.0, "box_iou_mean": 0.99,
             "topk_overlap": 0.85, "cosine_min": 0.995},
}
INT8_SLACK = {"top1_agreement": 0.05, "miou": 0.05, "iou": 0.05, "psnr_db": 3.0, "box_iou_mean": 0.05,
              "topk_overlap": 0.1, "cosine_min": 0.02}


def floor(kind: OutputKind, precision: str, sim_vs_fp32: dict[str, float] | None) -> tuple[str, float | None, str]:
    """(metric, floor against fp32, how the floor was set); floor None: nothing to hold it to."""
    name = HEADLINE[kind]
    if precision == "int8":
        if sim_vs_fp32 is None:
            return name, None, "no simulation to follow"
        return name, sim_vs_fp32[name] - INT8_SLACK[name], (
            f"the int8 simulation's own {name} vs fp32 ({sim_vs_fp32[name]:.4g}) less {INT8_SLACK[name]:g}")
    return name, FLOORS[precision][name], f"{precision} floor"
