"""Calibration methods: how an activation's int8 range is chosen from what calibration saw.

- min-max: the running minimum and maximum of every batch.
- moving-average: an exponential moving average of each batch's min and max.
- percentile: the (100 - p)-th and p-th percentiles of all values seen (p = 99.99 by default).
- entropy: TensorRT's KL-divergence threshold, on each side of zero's histogram of non-zero values
  (1,025-2,048 bins up to the extreme), each candidate quantized to that side's share of the 256
  levels (128 per side for zero-centred data, as TensorRT; 256 for a ReLU output). Point masses
  below a candidate (a conv's answer to a constant background) are left out of KL, like exact zeros.
- mse: the range whose int8 quantization has the least mean squared error over the histogram.

The range search is numpy over a `Hist` (this module, light to import); the torchao observers that
collect the histogram during PT2E calibration, and the PT2E quantizer built from them, are in
`edgeconv.calib.observers` (imports torch).
Activations are per-tensor asymmetric int8 (quant range -128..127); `qparams` reproduces torchao's
scale/zero-point formula so that a range can be scored exactly as it will be quantized.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from edgeconv.config import CalibMethod

QMIN, QMAX = -128, 127
# Smallest scale, as litert-torch's own TFLite config sets it: keeps int32 bias scales
# (input scale × weight scale) representable for the TFLite kernels.
EPS = 2.0 ** -12
HIST_BINS = 2048  # per sign; the |x| histogram spans 1,025-2,048 of them up to max |x|
ENTROPY_LEVELS = 128  # int8 levels per side of zero for zero-centred data, as TensorRT quantizes |x|
SPIKE_WINDOW = 16  # bins each side whose median is the level a point mass stands out from
# A LayerNorm computed in int8 (calib.rewrites.layer_norm_to_primitives) quantizes its centred input,
# its square, the variance and the rsqrt: a few tokens of outlying variance set min-max ranges that
# leave the typical token a handful of levels. With min-max activations (the default) those tensors
# take the least-squared-error range instead: timm ConvNeXt-atto at 64², full-integer, the int8
# simulation's rel-L2 error vs fp32 0.134 -> see bench/results/norm_calib.json.
NORM_METHOD = CalibMethod.MSE
MOVING_AVERAGE_CONSTANT = 0.05  # ~20-batch window; torch's 0.01 is meant for thousands of QAT steps


# --- the int8 grid --------------------------------------------------------------------------------

def qparams(lo: float, hi: float, qmin: int = QMIN, qmax: int = QMAX, eps: float = EPS) -> tuple[float, int]:
    """Per-tensor affine scale and zero point for the range [lo, hi], exactly as torchao computes them:
    the range is widened to include 0, scale = (hi - lo) / (qmax - qmin), zero point rounds -lo/scale."""
    f32 = np.float32  # in float32 step by step, as torch does, so that ties round the same way
    lo32, hi32 = f32(min(lo, 0.0)), f32(max(hi, 0.0))
    scale = max(f32(hi32 - lo32) / f32(qmax - qmin), f32(eps))
    zero_point = int(np.clip(qmin - np.round(lo32 / scale), qmin, qmax))
    return float(np.float32(scale)), zero_point


def fake_quant(x: np.ndarray, scale: float | np.ndarray, zero_point: int | np.ndarray,
               qmin: int = QMIN, qmax: int = QMAX) -> np.ndarray:
    """Quantize then dequantize: the values the int8 model computes with."""
    q = np.clip(np.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def quant_mse(x: np.ndarray, lo: float, hi: float) -> float:
    """Mean squared error of quantizing `x` to int8 with the range [lo, hi]."""
    scale, zp = qparams(lo, hi)
    x = np.asarray(x, np.float64)
    return float(np.mean((x - fake_quant(x, scale, zp)) ** 2))


# --- the histogram the range search reads ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Hist:
    """Counts of values seen: `neg[j]` counts x < 0 with |x| in bin j, `pos[j]` counts x > 0 in bin j,
    `zeros` counts exact zeros (ReLU outputs are often half zeros). Bin j covers [j, j+1) × edge / bins."""

    neg: np.ndarray
    pos: np.ndarray
    zeros: float
    edge: float
    lo: float  # exact minimum seen
    hi: float  # exact maximum seen

    @classmethod
    def of(cls, x: np.ndarray, bins: int = HIST_BINS) -> "Hist":
        """The histogram of a sample at once (the observers build the same one batch by batch)."""
        x = np.asarray(x, np.float64).ravel()
        edge = float(np.abs(x).max()) if x.size else 0.0
        rng = (0.0, edge if edge > 0 else 1.0)
        neg = np.histogram(-x[x < 0], bins, rng)[0].astype(np.float64)
        pos = np.histogram(x[x > 0], bins, rng)[0].astype(np.float64)
        return cls(neg, pos, float((x == 0).sum()), edge, float(x.min()), float(x.max()))

    @property
    def width(self) -> float:
        return self.edge / len(self.pos)

    def signed(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts) in ascending order: bin centres (kept inside [lo, hi]) and the zero mass."""
        centres = (np.arange(len(self.pos)) + 0.5) * self.width
        values = np.concatenate([-centres[::-1], [0.0], centres]).clip(self.lo, self.hi)
        counts = np.concatenate([self.neg[::-1], [self.zeros], self.pos])
        keep = counts > 0
        return values[keep], counts[keep]


# --- the methods ----------------------------------------------------------------------------------

def percentile_range(h: Hist, p: float) -> tuple[float, float]:
    """The (100 - p)-th and p-th percentiles, interpolated linearly inside a histogram bin."""
    if not 50.0 < p <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {p}")
    w = h.width
    n = len(h.pos)
    # Ascending bin edges; the zero mass is a zero-width bin at 0.
    edges = np.concatenate([-np.arange(n, -1, -1) * w, np.arange(0, n + 1) * w])
    counts = np.concatenate([h.neg[::-1], [h.zeros], h.pos])
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    total = cum[-1]

    def quantile(q: float) -> float:
        target = q * total
        i = int(np.searchsorted(cum, target, side="left"))
        if i == 0:
            return float(edges[0])
        frac = (target - cum[i - 1]) / (cum[i] - cum[i - 1])
        return float(edges[i - 1] + frac * (edges[i] - edges[i - 1]))

    clamp = lambda v: min(max(v, h.lo), h.hi)  # noqa: E731 - interpolation can step past the data
    return clamp(quantile(1.0 - p / 100.0)), clamp(quantile(p / 100.0))


def entropy_range(h: Hist, levels: int = 2 * ENTROPY_LEVELS) -> tuple[float, float]:
    """TensorRT's entropy calibration, on each side of zero: the threshold T whose clipped, quantized
    distribution has the least KL divergence from the observed one.

    TensorRT folds x into |x| for symmetric int8. These activations are asymmetric, so each side keeps
    its own histogram and gets its share of the `levels` int8 levels in the min-max range (128 each
    for zero-centred data, as in TensorRT; all 256 for a ReLU output). Folding would mix the sides:
    a normalised image's background spike at -0.94 then pulls T to 0.95 and clips every stroke.
    """
    span = max(h.hi, 0.0) - min(h.lo, 0.0)
    if span <= 0:
        return h.lo, h.hi
    lo = h.lo if h.lo >= 0 else -_kl_threshold(h.neg, max(1, round(levels * -h.lo / span))) * h.width
    hi = h.hi if h.hi <= 0 else _kl_threshold(h.pos, max(1, round(levels * h.hi / span))) * h.width
    return max(h.lo, lo), min(h.hi, hi)


def _kl_threshold(side: np.ndarray, levels: int) -> float:
    """The number of bins (from zero) to keep: TensorRT's KL search over one side's histogram.
    Exact zeros are not in `side`: the zero point represents them without error, and their spike
    (half of a ReLU output), smeared over a merged group, would pull the threshold far too low.
    Other point masses are left out below each candidate for the same reason (`_point_masses`)."""
    nb = int(np.count_nonzero(side) and np.flatnonzero(side)[-1] + 1)  # bins up to the extreme
    if nb <= levels:
        return math.inf  # fewer bins than levels: nothing to clip
    hist = side[:nb]
    spikes = _point_masses(hist)
    # Never clip more than half of the values: below the median (data offset from zero, e.g. all in
    # [0.3, 0.6]) everything is clipped onto one bin, and KL, which compares normalised
    # distributions, sees a spike equal to itself and scores 0. Zero-centred data never come close.
    median_bin = int(np.searchsorted(np.cumsum(hist), 0.5 * hist.sum())) + 1
    first = max(levels, median_bin)
    step = max(1, (nb - first) // 512)  # ~512 candidates bound the cost per observer
    candidates = list(range(first, nb, step)) + [nb]
    kl = [_kl_for_threshold(hist, i, levels, spikes) for i in candidates]
    if not np.isfinite(min(kl)):
        return math.inf  # nothing to compare (e.g. all point masses): clip nothing
    return float(candidates[int(np.argmin(kl))])


def _point_masses(hist: np.ndarray, window: int = SPIKE_WINDOW, ratio: float = 4.0) -> np.ndarray:
    """The part of each bin's count that is a point mass: its excess over the median of the non-empty
    bins among its `window` neighbours on each side, where it stands far above them (beyond Poisson
    noise). A conv's response to a constant background (MNIST's, or the zero padding) is one value
    per channel, and such spikes can hold most of a tensor. Discrete data (an 8-bit image: a comb of
    equal teeth with empty bins between) has no spikes: empty bins are not neighbours.

    TensorRT's Q spreads every merged group evenly over its non-empty bins, so a spike costs about
    p·log(bins per level), which shrinks with the threshold; summed over many spikes this outweighed
    clipping: the MNIST CNN's first ReLU (99th percentile 2.5) was clipped at 1.0 and its int8
    accuracy fell from 91 % to 29 %. The grid rounds a point mass to one level, within half a step,
    as it does any value; only clipping moves it further."""
    padded = np.pad(hist, window, mode="reflect").astype(np.float64)
    padded[padded == 0] = np.nan
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * window + 1)
    around = np.delete(win, window, axis=1)
    has = ~np.isnan(around).all(axis=1)
    base = np.zeros(len(hist))
    base[has] = np.nanmedian(around[has], axis=1)
    spike = has & (hist > ratio * base + 10.0 * np.sqrt(base + 1.0))  # 10 sigma of Poisson noise
    return np.where(spike, hist - base, 0.0)


def _kl_for_threshold(hist: np.ndarray, i: int, levels: int, spikes: np.ndarray | None = None) -> float:
    """KL(P || Q) for the threshold of `i` bins. P: the histogram with everything beyond the threshold
    clipped onto its last bin. Q: what the int8 grid can represent — the first i bins merged into
    `levels` groups, each group's count spread evenly over the bins that were non-empty. Point masses
    (`spikes`) below the threshold are left out of both, like the exact zeros (in P's last bin, one
    would also hide the clipped tail: KL sees little change in a bin that was already large);
    beyond it, they are clipped like any value."""
    kept = hist[:i] if spikes is None else hist[:i] - spikes[:i]
    p = kept.copy()
    p[i - 1] += hist[i:].sum()  # values beyond the threshold are clipped onto it
    starts = (np.arange(levels) * i) // levels
    nonzero = (kept > 0).astype(np.float64)
    group_sum = np.add.reduceat(kept, starts)
    group_n = np.add.reduceat(nonzero, starts)
    per_bin = np.divide(group_sum, group_n, out=np.zeros_like(group_sum), where=group_n > 0)
    q = np.repeat(per_bin, np.diff(np.append(starts, i))) * nonzero
    if not q.any():
        return math.inf  # every value lies beyond this threshold
    return _kl(_smooth(p), _smooth(q))


def _smooth(d: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Give empty bins a little mass (taken from the others) so that KL stays finite."""
    zero = d == 0
    n_zero, n_nonzero = int(zero.sum()), int((~zero).sum())
    d = d / d.sum()
    if n_zero == 0 or n_nonzero == 0:
        return d
    take = eps * n_zero / n_nonzero
    return np.where(zero, eps, d - take).clip(min=1e-12)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * np.log(p / q)))


def mse_range(h: Hist, grid: int = 100) -> tuple[float, float]:
    """The [lo, hi] with the least int8 quantization MSE over the histogram: both ends shrunk together
    from min/max, then each end on its own, each search a coarse grid refined around its best."""
    values, counts = h.signed()
    if h.lo >= h.hi:
        return h.lo, h.hi

    def err(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        scale = np.maximum((hi - lo) / float(QMAX - QMIN), EPS)[:, None]
        zp = np.clip(QMIN - np.round(lo / scale[:, 0]), QMIN, QMAX)[:, None]
        return ((values - fake_quant(values, scale, zp)) ** 2) @ counts

    a = _search(lambda f: err(f * h.lo, f * h.hi), grid)
    lo, hi = a * h.lo, a * h.hi
    hi = _search(lambda f: err(np.full_like(f, lo), f * h.hi), grid) * h.hi
    lo = _search(lambda f: err(f * h.lo, np.full_like(f, hi)), grid) * h.lo
    return lo, hi


def _search(errors: Any, grid: int) -> float:
    """argmin over factors in (0, 1]: a grid of `grid` points, then `grid` points around the best."""
    coarse = np.linspace(1.0 / grid, 1.0, grid)
    best = coarse[int(np.argmin(errors(coarse)))]
    fine = np.linspace(max(best - 1.0 / grid, 1e-6), min(best + 1.0 / grid, 1.0), grid)
    cand = np.append(fine, best)
    return float(cand[int(np.argmin(errors(cand)))])


def choose_range(method: CalibMethod, h: Hist, percentile: float = 99.99) -> tuple[float, float]:
    """The range a histogram-based method picks (min-max picks (h.lo, h.hi))."""
    if method is CalibMethod.PERCENTILE:
        return percentile_range(h, percentile)
    if method is CalibMethod.ENTROPY:
        return entropy_range(h)
    if method is CalibMethod.MSE:
        return mse_range(h)
    if method is CalibMethod.MINMAX:
        return h.lo, h.hi
    raise ValueError(f"{method.value} is not chosen from a histogram")


def describe(method: CalibMethod, percentile: float = 99.99) -> str:
    """One line for the manifest: what the method does, with its parameters."""
    return {
        CalibMethod.MINMAX: "min-max: running min and max over all calibration batches",
        CalibMethod.MOVING_AVERAGE: f"moving-average: EMA of per-batch min/max, constant {MOVING_AVERAGE_CONSTANT}",
        CalibMethod.PERCENTILE: f"percentile: {100 - percentile:g}th..{percentile:g}th percentile "
                                f"of a {HIST_BINS}-bin-per-sign histogram",
        CalibMethod.ENTROPY: f"entropy: KL-optimal threshold per side of zero, {HIST_BINS}-bin histograms, "
                             "each side its share of the 256 levels",
        CalibMethod.MSE: "mse: range minimising int8 quantization MSE over the histogram",
    }[method]
