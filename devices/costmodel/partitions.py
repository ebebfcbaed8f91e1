"""Partition-aware prediction: an accelerator that leaves ops to the CPU pays for them there, and
for every hand-off between the two.

    t = Σ_{delegated ops} t_npu(op) + ρ[precision] · Σ_{CPU ops} t_npu(op) + τ · K + t_fixed

t_npu is the roofline time of an op on the NPU (roofline.py); ρ says how many times longer an op
takes on the CPU than on the NPU; τ is the cost of one hand-off and K counts them: per delegated
partition, one where it reads a tensor a CPU op wrote and one where a CPU op reads what it wrote
(the graph's own input and output are in t_fixed, as for a file the NPU runs whole). A file the
delegate runs whole gets exactly the partition-unaware prediction.

ρ and τ are fitted (bench/fit_partitions.py, constants in partitions.json beside this module) on
qai-hub-models' published TFLite measurements: a net whose layers the NPU did not all take, against
the same net on the same device through QNN with every layer on the NPU. Published data gives
layer counts, not which layers nor how many hand-offs, so the fit uses each layer's mean share of
the whole-NPU time and a hand-off count rule chosen on the fit set (partitions.json says which).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeconv.opview import OpView

CONSTANTS = Path(__file__).parent / "partitions.json"
# Rules for the hand-offs of a published measurement, where only the count of off-NPU layers c is
# known: every such layer an island of its own (2 hand-offs each) or all of them one segment (2).
K_RULES = {"island-per-layer": lambda c: 2.0 * c, "one-segment": lambda c: 2.0 if c else 0.0}


@dataclasses.dataclass(frozen=True)
class SplitConstants:
    rho: dict[str, float]  # per precision as run on the NPU ("fp16", "int8"): CPU time / NPU time of an op
    handoff_s: float  # seconds per hand-off between the accelerator and the CPU
    k_rule: str  # how the fit counted hand-offs from layer counts (K_RULES)
    basis: str = ""

    def rho_for(self, precision: str) -> float:
        return self.rho["fp16" if precision in ("fp32", "fp16") else "int8"]


@functools.lru_cache(maxsize=1)
def constants() -> SplitConstants | None:
    """The fitted constants, or None before bench/fit_partitions.py has written them."""
    if not CONSTANTS.exists():
        return None
    d = json.loads(CONSTANTS.read_text())
    c = d["constants"]
    ho = d.get("held_out", {}).get("partitioned", {}).get("after", {})
    basis = (f"partitions: rho fp16 {c['rho']['fp16']:.3g}, int8 {c['rho']['int8']:.3g}, {1e3 * c['handoff_s']:.3g} ms "
             f"per hand-off, fitted on {d['fit']['measurements']} published partitioned runs of "
             f"{len(d['fit']['models'])} nets" + (f", held-out median APE {ho['median_ape']:.1f} % over "
                                                  f"{ho['n']} runs of {len(d['held_out_models'])} nets" if ho else ""))
    return SplitConstants(dict(c["rho"]), float(c["handoff_s"]), c["k_rule"], basis)


def handoffs(ops: Sequence[OpView], partitions: Sequence[Sequence[int]]) -> int:
    """Hand-offs between the delegate and the CPU: per delegated partition (as the delegate builds
    them, rules.partition), one if it reads a CPU op's output, one if a CPU op reads its output."""
    delegated = {i for p in partitions for i in p}
    producer = {t.index: op.index for op in ops for t in op.outputs}
    cpu_reads = {t.index for op in ops if op.index not in delegated for t in op.inputs if t is not None}
    by_index = {op.index: op for op in ops}
    k = 0
    for p in partitions:
        members = [by_index[i] for i in p if i in by_index]
        k += any(t is not None and t.index in producer and producer[t.index] not in delegated
                 for op in members for t in op.inputs)
        k += any(t.index in cpu_reads for op in members for t in op.outputs)
    return k


# --- the fit (published layer counts) -----------------------------------------------------------

def published_ms(whole_ms: float, npu_layers: int, off_layers: int, precision: str, c: SplitConstants) -> float:
    """A published run with `off_layers` of its layers off the NPU, from the same net run whole:
    each layer its mean share of the whole-NPU time."""
    total = npu_layers + off_layers
    share = whole_ms / total
    return (npu_layers * share + c.rho_for(precision) * off_layers * share
            + 1e3 * c.handoff_s * K_RULES[c.k_rule](off_layers))


def fit(rows: Sequence[dict[str, Any]], k_rule: str) -> SplitConstants:
    """ρ per precision and τ by least squares on log(predicted / measured); rows carry whole_ms,
    npu, off, precision, ms."""
    import numpy as np
    from scipy.optimize import least_squares

    def unpack(x: np.ndarray) -> SplitConstants:
        return SplitConstants({"fp16": math.exp(x[0]), "int8": math.exp(x[1])}, math.exp(x[2]), k_rule)

    def residuals(x: np.ndarray) -> np.ndarray:
        c = unpack(x)
        return np.array([math.log(published_ms(r["whole_ms"], r["npu"], r["off"], r["precision"], c) / r["ms"])
                         for r in rows])

    # ρ ≥ 1: an op is not taken to run faster on the CPU than on the NPU (without the bound, float
    # nets whose one CPU layer is lost in run-to-run noise drive ρ to 0)
    lower, upper = np.array([0.0, 0.0, math.log(1e-7)]), np.array([math.log(1e4), math.log(1e4), math.log(1.0)])
    sol = least_squares(residuals, np.array([math.log(4.0), math.log(4.0), math.log(1e-4)]), method="trf",
                        bounds=(lower, upper))
    return unpack(sol.x)
