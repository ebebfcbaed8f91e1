"""Fitting the roofline to published latencies (used by bench/fit_costmodel.py and the tests).

One group = compute unit × precision (e.g. NPU int8). Within a group every device gets its own
effective rates, but the *shape* across op classes (how much slower a depthwise conv is than a
dense one, per MAC) is shared and each device may deviate from it only at a ridge penalty:

    log θ_c[d, class] = s[d] + r[class] + δ[d, class],   penalty λ·δ²
    log θ_w[d], log θ_a[d], log t_launch[d], log t_fixed[d]   free per device

A device has 11 to 15 fitted models, too few to determine 11 free constants of its own; pooling
the op-class shape across the devices of a group keeps the fit determined. Residuals are
log(pred / measured), so every model counts by its relative error whatever its size.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from edgeconv.costops import OP_CLASSES, Op
from edgeconv.devices.costmodel.roofline import BYTES_PER_ELEMENT, Constants

K = len(OP_CLASSES)
NP = 5  # per-device scalars: compute scale, weight and activation bandwidth, launch, fixed
REF_CLASS = OP_CLASSES.index(next(c for c in OP_CLASSES if c.value == "conv"))


@dataclasses.dataclass(frozen=True)
class Measurement:
    model: str
    device: str
    unit: str  # NPU / GPU / CPU
    precision: str  # fp16 / fp32 / int8 (as run)
    ms: float
    job_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Flat:
    """All ops of all (device, model) pairs of a group, as arrays for a vectorised model."""

    dev: np.ndarray  # device index per op
    cls: np.ndarray
    macs: np.ndarray
    wbytes: np.ndarray
    abytes: np.ndarray
    row: np.ndarray  # measurement index per op
    n_ops: np.ndarray  # ops per measurement
    mdev: np.ndarray  # device index per measurement
    ms: np.ndarray


def _flatten(meas: Sequence[Measurement], graphs: dict[str, list[Op]], devices: list[str]) -> _Flat:
    dev, cls, macs, wbytes, abytes, row, n_ops, mdev = [], [], [], [], [], [], [], []
    index = {c: i for i, c in enumerate(OP_CLASSES)}
    for j, m in enumerate(meas):
        d = devices.index(m.device)
        bpe = BYTES_PER_ELEMENT[m.precision]
        ops = graphs[m.model]
        for o in ops:
            dev.append(d)
            cls.append(index[o.cls])
            macs.append(max(o.macs, 1))
            wbytes.append(o.weights * bpe)
            abytes.append((o.act_in + o.act_out) * bpe)
            row.append(j)
        n_ops.append(len(ops))
        mdev.append(d)
    a = np.asarray
    return _Flat(a(dev), a(cls), a(macs, float), a(wbytes, float), a(abytes, float), a(row), a(n_ops, float), a(mdev),
                 a([m.ms for m in meas], float))


def _split(theta: np.ndarray, n_dev: int) -> tuple[np.ndarray, ...]:
    r = np.insert(theta[: K - 1], REF_CLASS, 0.0)  # class shape, conv fixed at 0
    per = theta[K - 1:].reshape(n_dev, NP + K)
    return r, per[:, 0], per[:, 1:3], per[:, 3], per[:, 4], per[:, NP:]  # r, s, (m_w, m_a), launch, fixed, δ


def _predict_ms(theta: np.ndarray, f: _Flat, n_dev: int) -> np.ndarray:
    r, s, m, launch, fixed, delta = _split(theta, n_dev)
    log_rate = s[f.dev] + r[f.cls] + delta[f.dev, f.cls]
    t = np.maximum(f.macs * np.exp(-log_rate),
                   f.wbytes * np.exp(-m[f.dev, 0]) + f.abytes * np.exp(-m[f.dev, 1]))
    per_row = np.bincount(f.row, weights=t, minlength=len(f.ms))
    return 1e3 * (per_row + f.n_ops * np.exp(launch[f.mdev]) + np.exp(fixed[f.mdev]))


def fit_group(meas: Sequence[Measurement], graphs: dict[str, list[Op]], ridge: float = 1.0
              ) -> dict[str, Constants]:
    """Fit one compute unit × precision group; returns constants per device."""
    from scipy.optimize import least_squares

    devices = sorted({m.device for m in meas})
    f = _flatten(meas, graphs, devices)
    n_dev = len(devices)
    x0 = np.zeros(K - 1 + n_dev * (NP + K))
    x0[K - 1:].reshape(n_dev, NP + K)[:, :NP] = [math.log(1e12), math.log(2e10), math.log(1e11),
                                                  math.log(5e-6), math.log(2e-4)]

    def residuals(theta: np.ndarray) -> np.ndarray:
        fit = np.log(_predict_ms(theta, f, n_dev) / f.ms)
        delta = _split(theta, n_dev)[5]
        return np.concatenate([fit, math.sqrt(ridge) * delta.ravel()])

    sol = least_squares(residuals, x0, method="trf", x_scale=1.0, max_nfev=4000)
    r, s, mem, launch, fixed, delta = _split(sol.x, n_dev)
    bpe = BYTES_PER_ELEMENT[meas[0].precision]
    return {d: Constants({c.value: float(math.exp(s[i] + r[k] + delta[i, k])) for k, c in enumerate(OP_CLASSES)},
                         float(math.exp(mem[i, 0])), float(math.exp(mem[i, 1])), float(math.exp(launch[i])), float(math.exp(fixed[i])), bpe)
            for i, d in enumerate(devices)}


def ape(pred: float, measured: float) -> float:
    """Absolute percentage error."""
    return abs(pred - measured) / measured * 100.0


def summarize(errors: Sequence[float]) -> dict[str, float]:
    e = np.asarray(errors, float)
    return {"n": int(e.size), "median_ape": float(np.median(e)), "p90_ape": float(np.percentile(e, 90))}
