"""Parity: an artifact in its real runtime against torch fp32 and the torch quantized simulation,
on held-out inputs that calibration never saw. Tolerances come from the target."""
from __future__ import annotations

import numpy as np

from edgeconv.exporters.base import Runner, Tolerance
from edgeconv.results import OutputDiff, ParityReport, QuantParams


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    per = np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)
    return float(per.mean())


def top1(out: np.ndarray) -> np.ndarray | None:
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    return out.argmax(1)


def diff(out: np.ndarray, ref: np.ndarray, reference: str, tol: Tolerance,
         out_quant: QuantParams | None) -> OutputDiff:
    err = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    t_out, t_ref = top1(out), top1(ref)
    agree = None if t_out is None else float((t_out == t_ref).mean())
    steps = float(err.max() / out_quant.scale[0]) if out_quant is not None else None
    cos = cosine(out, ref)
    fails = []
    if reference == "torch-quant-sim":
        if tol.vs_sim_max_steps is not None and steps is not None and steps > tol.vs_sim_max_steps:
            fails.append(f"{steps:.1f} output steps > {tol.vs_sim_max_steps}")
    else:
        if tol.vs_fp32_max_abs is not None and err.max() > tol.vs_fp32_max_abs:
            fails.append(f"max abs {err.max():.3g} > {tol.vs_fp32_max_abs}")
        if cos < tol.vs_fp32_min_cosine:
            fails.append(f"cosine {cos:.5f} < {tol.vs_fp32_min_cosine}")
        if agree is not None and agree < tol.min_top1_agreement:
            fails.append(f"top-1 agreement {agree:.3f} < {tol.min_top1_agreement}")
    return OutputDiff(reference, float(err.max()), float(err.mean()), steps, cos, agree,
                      not fails, "; ".join(fails))


def accuracy(out: np.ndarray, labels: np.ndarray | None) -> float | None:
    t = top1(out)
    if labels is None or t is None:
        return None
    return float((t == labels).mean())


def check(runner: Runner, runtime: str, x: np.ndarray, labels: np.ndarray | None, tol: Tolerance,
          ref_fp32: np.ndarray, ref_sim: np.ndarray | None, out_quant: QuantParams | None,
          reference: str = "torch-fp32") -> ParityReport:
    out = runner(x)
    diffs = [diff(out, ref_fp32, reference, tol, out_quant)]
    if ref_sim is not None:
        diffs.append(diff(out, ref_sim, "torch-quant-sim", tol, out_quant))
    return ParityReport(runtime, len(x), tuple(diffs), accuracy(out, labels), accuracy(ref_fp32, labels))


def unverified(runtime: str, reason: str, reference: str = "torch-fp32") -> ParityReport:
    """A report for an artifact whose runtime cannot run it here: a failure that says why."""
    nan = float("nan")
    return ParityReport(runtime, 0, (OutputDiff(reference, nan, nan, None, nan, None, False, reason),))
