"""Parity: an artifact in its real runtime against torch fp32 and the torch quantized simulation,
on held-out inputs that calibration never saw. Tolerances come from the target.

Every limit scales with the net (fractions of the output's range, output quantization steps), so a
regression head in pixel units and a classifier's logits are judged alike; every comparison states
the criteria it applied, and one with nothing to compare fails instead of passing.
"""
from __future__ import annotations

import dataclasses
import math
import numpy as np

from edgeconv.results import (HostKernelCheck, LayerIsolation, OutputCheck, OutputDiff, ParityReport, QuantParams,
                              TensorDrift)

SIM = "torch-quant-sim"
GRID_LEVELS = 255  # a float output is judged in steps of an 8-bit grid over its range
# Steps are integer multiples of the scale up to float32 rounding of the dequantized values:
# round them so that 3 steps compared with a limit of 3 never reads "3.0 > 3.0".
STEP_DECIMALS = 3


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Parity limits, each relative to something that scales with the net, so one limit fits a
    classifier's logits and a super-resolution net's pixels alike.

    - Against torch fp32: max |Δ| as a fraction of the reference output's range (max − min over
      the held-out samples), cosine, and top-1 agreement counted on *decisive* samples only — those
      whose fp32 top-1/top-2 margin exceeds `decisive_margin` × range, so a flip between near-tied
      classes is not a failure (the raw agreement is still reported).
    - Against the torch quantized simulation (same scales): max |Δ| in output quantization steps;
      when the output is float (the net ends in a float op, or --max-drop kept it float) in steps of
      an 8-bit grid over the simulation's output range, plus a cosine floor — never no check.
    """

    vs_fp32_max_rel: float | None = None  # max |Δ| / output range vs torch fp32 (float targets)
    vs_fp32_min_cosine: float = 0.99
    vs_sim_max_steps: float | None = None  # int8 targets: error vs torch quant sim, in output steps
    vs_sim_min_cosine: float = 0.99  # vs the simulation when its output is float (no step count)
    min_top1_agreement: float = 0.95  # on decisive samples
    decisive_margin: float = 0.02  # fraction of the output range: smaller fp32 margins are near-ties
    # int8, end to end: past vs_sim_max_steps the artifact still passes when its L2 error against the
    # simulation is at most this fraction of the simulation's own L2 error against fp32 — rounding
    # flips cascade through deep nets, but the lowering must add less error than quantization did.
    vs_sim_max_rel_quant_error: float | None = None
    # ... and never above this relative L2 error, whatever the simulation's own error: a weak
    # calibration makes the simulation worse, it must not make the lowering's allowance larger.
    vs_sim_max_rel_l2: float | None = None
    # int8, layer by layer: each layer fed the artifact's own inputs, within this many steps.
    layer_max_steps: float | None = None
    # int8, set only once every layer passed alone: end to end, the artifact also passes against the
    # simulation when it is as good an int8 model — its L2 error vs fp32 at most this multiple of the
    # simulation's own. Two programs whose every op agrees within a step, at the same distance from
    # fp32: a deep net cascades their rounding flips apart as far as quantization itself moved it.
    vs_sim_same_quality: float | None = None




# Float artifacts reproduce torch fp32 to float rounding: 1e-4 of the output range is ~1/40 of an
# int8 step, far above reassociation noise (FMA, blocked accumulation on any ISA), far below a bug.
FLOAT_TOLERANCE = Tolerance(vs_fp32_max_rel=1e-4, vs_fp32_min_cosine=0.99999, min_top1_agreement=0.99,
                            decisive_margin=0.0)
# fp16 compute keeps ~3 significant digits per op: judged by cosine and decisive top-1 (margins above
# 1 % of the range cannot flip under fp16 rounding of a conv net's logits).
FP16_TOLERANCE = Tolerance(vs_fp32_min_cosine=0.999, min_top1_agreement=0.98, decisive_margin=0.01)
# An fp16 artifact against the same program run in torch fp16: two fp16 computations of one net
# differ only in accumulation order and where they round, so their distance must stay a small part
# of what fp16 itself moves the net from fp32 (a broken artifact is as far from either), and never
# needs to be below FP16_SELF_TOLERANCE's.
FP16_SELF_TOLERANCE = Tolerance(vs_fp32_min_cosine=0.9995, min_top1_agreement=0.98, decisive_margin=0.01)
FP16_SELF_SHARE = 0.25
# How far below torch fp16's own agreement with fp32 an fp16 artifact's fp32 floors may go.
FP16_FLOOR_SLACK = 0.0005
# The end-to-end ceiling against the simulation, whatever its own error vs fp32 (a weak calibration
# must not widen it): 10 % relative L2. It holds wherever a layer is unverified in isolation; where
# every int8 layer passed alone, the excess is rounding cascading through the net (deep random-init
# nets reach 40 % with each layer within a step) and the allowance follows the simulation's error.
INT8_MAX_REL_L2 = 0.1
# "As good an int8 model as the simulation": its error vs fp32 within 10 % of the simulation's own.
INT8_SAME_QUALITY = 1.1
# Integer kernels requantize at every layer (rounding, fused activations), so an int8 artifact
# may differ from the torch simulation by a few output steps; against fp32 only the task matters.
INT8_TOLERANCE = Tolerance(vs_fp32_min_cosine=0.95, vs_sim_max_steps=3.0, min_top1_agreement=0.9,
                           vs_sim_max_rel_quant_error=1.0, vs_sim_max_rel_l2=INT8_MAX_REL_L2, layer_max_steps=1.0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    per = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(both_zero, 1.0, 0.0))
    return float(per.mean())


def top1(out: np.ndarray) -> np.ndarray | None:
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    return out.argmax(1)


def value_range(ref: np.ndarray) -> float:
    """The reference output's range over the held-out samples: what "relative" is relative to."""
    ref = ref.astype(np.float64)
    return float(ref.max() - ref.min()) if ref.size else 0.0


def decisive(ref: np.ndarray, margin: float) -> np.ndarray | None:
    """Samples whose top-1 leads the runner-up by more than `margin` (absolute): only these can
    fairly be asked to keep their class under an allowed error."""
    if top1(ref) is None:
        return None
    part = np.sort(ref.astype(np.float64), axis=1)
    return (part[:, -1] - part[:, -2]) > margin


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def rel_l2(out: np.ndarray, ref: np.ndarray) -> float:
    """‖out − ref‖ / ‖ref‖ over all samples."""
    a, b = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    den = float(np.linalg.norm(b))
    num = float(np.linalg.norm(a - b))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


@dataclasses.dataclass(frozen=True)
class SimQuality:
    """How far the quantized program itself is from fp32: what an int8 artifact is measured against
    when quantization, not the lowering, has moved the outputs."""

    rel_l2: float
    cosine: float
    top1_agreement_decisive: float | None
    decisive_samples: int = 0
    artifact_rel_l2: float | None = None  # the artifact's own error vs fp32, beside the simulation's


@dataclasses.dataclass
class _Verdict:
    """What one comparison found and applied, filled in by the checks."""

    fails: list[str] = dataclasses.field(default_factory=list)
    checked: list[str] = dataclasses.field(default_factory=list)
    steps: float | None = None
    unit: str = ""
    rel: float | None = None
    n_dec: int | None = None
    agree_dec: float | None = None
    warning: str = ""

    def limit(self, what: str, value: float, limit: float, above: str) -> None:
        """Apply `value <= limit`, stating it; on failure say `above`."""
        self.checked.append(f"{what} <= {limit:g}")
        if value > limit:
            self.fails.append(above)


def diff(out: np.ndarray, ref: np.ndarray, reference: str, tol: Tolerance,
         out_quant: QuantParams | None = None, sim: SimQuality | None = None) -> OutputDiff:
    """One comparison. Against the simulation (`reference == SIM`): output steps, or — past them —
    L2 error relative to the simulation's own error vs fp32 (`sim`); otherwise the fp32 criteria,
    for an int8 artifact (`sim` given) floored at the simulation's own quality. The verdict says
    which limits it checked."""
    if out.size == 0 or out.shape != ref.shape:
        nan = float("nan")
        why = "no output to compare" if out.size == 0 else f"output shape {out.shape} != reference {ref.shape}"
        return OutputDiff(reference, nan, nan, None, nan, None, False, why)
    err = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    max_abs = float(err.max())
    rng = value_range(ref)
    max_rel = max_abs / rng if rng > 0 else (0.0 if max_abs == 0 else float("inf"))
    t_out = top1(out)
    raw_agree = None if t_out is None else float((t_out == top1(ref)).mean())
    cos = cosine(out, ref)
    v = _Verdict()
    if not np.isfinite(out).all():
        v.fails.append("the artifact's output has NaN/inf")
    elif rng == 0:  # every value equal: a file computing anything else that also lands there would pass
        v.fails.append(f"the reference output is one constant ({float(ref.flat[0]):.4g} everywhere) on these "
                       "samples: nothing to compare end to end — give the model weights whose output "
                       "depends on its input (a zero-initialized head, e.g.)")
    elif reference == SIM:
        _vs_sim(v, out, ref, max_abs, cos, tol, out_quant, sim)
    else:
        _vs_fp32(v, out, ref, max_abs, max_rel, rng, cos, tol, sim)
    return OutputDiff(reference, max_abs, float(err.mean()), v.steps, cos, raw_agree,
                      not v.fails, "; ".join(v.fails), max_rel=max_rel, step_unit=v.unit,
                      decisive_samples=v.n_dec, top1_agreement_decisive=v.agree_dec, checked=tuple(v.checked),
                      rel_l2=v.rel, sim_rel_l2_vs_fp32=sim.rel_l2 if sim is not None and reference == SIM else None,
                      warning=v.warning)


def _vs_sim(v: _Verdict, out: np.ndarray, ref: np.ndarray, max_abs: float, cos: float, tol: Tolerance,
            out_quant: QuantParams | None, sim: SimQuality | None) -> None:
    v.steps, v.unit = _steps(max_abs, ref, out_quant)
    v.rel = rel_l2(out, ref)
    steps, unit = v.steps, v.unit
    if tol.vs_sim_max_steps is None:
        v.fails.append("the target states no limit against the simulation")
    elif sim is not None and tol.vs_sim_max_rel_quant_error is not None:
        limit_rel = tol.vs_sim_max_rel_quant_error * sim.rel_l2
        ceiling = f", at most {tol.vs_sim_max_rel_l2:g}" if tol.vs_sim_max_rel_l2 is not None else ""
        if tol.vs_sim_max_rel_l2 is not None:
            limit_rel = min(limit_rel, tol.vs_sim_max_rel_l2)
        v.checked.append(f"max steps ({unit}) <= {tol.vs_sim_max_steps:g}, or L2 error <= "
                         f"{tol.vs_sim_max_rel_quant_error:g}x the simulation's own vs fp32 ({_fmt(sim.rel_l2)}"
                         f"{ceiling})")
        same = tol.vs_sim_same_quality is not None and sim.artifact_rel_l2 is not None \
            and sim.artifact_rel_l2 <= tol.vs_sim_same_quality * sim.rel_l2
        if same:
            v.checked.append(f"or, every layer within a step alone, its own L2 error vs fp32 "
                             f"({_fmt(sim.artifact_rel_l2)}) <= {tol.vs_sim_same_quality:g}x the simulation's")
        if steps > tol.vs_sim_max_steps and v.rel > limit_rel and not same:
            v.fails.append(f"{_fmt(steps)} steps ({unit}) > {tol.vs_sim_max_steps:g} and L2 error {_fmt(v.rel)} > "
                           f"{_fmt(limit_rel)} ({tol.vs_sim_max_rel_quant_error:g}x the simulation's own "
                           f"{_fmt(sim.rel_l2)} vs fp32{ceiling})")
    else:
        v.limit(f"max steps ({unit})", steps, tol.vs_sim_max_steps, f"{_fmt(steps)} steps ({unit}) > {tol.vs_sim_max_steps:g}")
    if out_quant is None:  # a float output: a cosine floor too, so a bent output cannot slip through
        v.checked.append(f"cosine >= {tol.vs_sim_min_cosine:g}")
        if cos < tol.vs_sim_min_cosine:
            v.fails.append(f"cosine {cos:.5f} < {tol.vs_sim_min_cosine:g}")


def _vs_fp32(v: _Verdict, out: np.ndarray, ref: np.ndarray, max_abs: float, max_rel: float, rng: float,
             cos: float, tol: Tolerance, sim: SimQuality | None) -> None:
    if tol.vs_fp32_max_rel is not None:
        v.limit("max |Δ|/range", max_rel, tol.vs_fp32_max_rel, f"max |Δ| {_fmt(max_abs)} is {_fmt(max_rel)} of "
                f"the output range {_fmt(rng)} > {tol.vs_fp32_max_rel:g}")
    min_cos, min_agree = tol.vs_fp32_min_cosine, tol.min_top1_agreement
    if sim is not None:  # int8: the floors hold, and the top-1 floor also follows the simulation's own
        min_cos, min_agree, v.warning = _floors_at_sim(tol, sim)
    if min_cos is None:
        v.checked.append("cosine floor waived: the quantized program itself has none left")
    else:
        v.checked.append(f"cosine >= {min_cos:.5g}")
        if cos < min_cos:
            v.fails.append(f"cosine {cos:.5f} < {min_cos:.5g}")
    # Both sides of a top-1/top-2 pair may move by the allowed error: twice it is a near-tie.
    mask = decisive(ref, max(tol.decisive_margin, 2 * (tol.vs_fp32_max_rel or 0.0)) * rng)
    if mask is None or not mask.any():
        v.n_dec = None if mask is None else 0
        return
    v.n_dec = int(mask.sum())
    v.agree_dec = float((top1(out)[mask] == top1(ref)[mask]).mean())
    if min_agree is None:
        v.checked.append("top-1 floor waived: the quantized program itself has none left")
        return
    # fail only when the agreement measured on n samples is significantly below the floor
    floor = _below_by_chance(min_agree, v.n_dec)
    v.checked.append(f"top-1 agreement on {v.n_dec}/{len(mask)} decisive samples >= {floor:.3g} "
                     f"(the floor {min_agree:.3g} less what chance gives at that count"
                     + (f"; the floor follows the simulation's own agreement less {SIM_AGREEMENT_SLACK:g})"
                        if sim is not None else ")"))
    if v.agree_dec < floor:
        v.fails.append(f"top-1 agreement {v.agree_dec:.3f} on {v.n_dec} decisive samples < {floor:.3g}")


# One-sided tail of two standard errors: an agreement less likely than this under the floor is
# evidence against it.
CHANCE = 0.5 * math.erfc(math.sqrt(2))


def _below_by_chance(floor: float, n: int) -> float:
    """The lowest agreement k/n on n samples that is not significantly below `floor`: k or fewer
    agreeing has probability CHANCE or more when the true agreement is the floor (the binomial
    tail itself; "floor less two standard errors" breaks down near 1, where the error shrinks to
    nothing: one near-tie flipped in 8 failed a 0.98 floor, which a faithful file does one time in
    seven). 6 of 7 is no evidence against a 0.9 floor, 218 of 256 is."""
    if floor >= 1.0 or n <= 0:
        return floor
    if floor <= 0.0:
        return 0.0
    tail = 0.0
    for k in range(n + 1):
        tail += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                         + k * math.log(floor) + (n - k) * math.log1p(-floor))
        if tail >= CHANCE:
            return k / n
    return 1.0


# An int8 artifact may agree with fp32 on fewer decisive samples than the simulation does by this
# much (and what chance gives at the sample count): the lowering's own rounding flips a few
# near-ties, a lowering error flips many.
SIM_AGREEMENT_SLACK = 0.02


def _floors_at_sim(tol: Tolerance, sim: SimQuality) -> tuple[float, float, str]:
    """The fp32 floors for an int8 artifact. The target's floors hold whatever the calibration
    gave (a weak simulation does not lower them; the user may, with --min-cosine / --min-top1).
    On top, the top-1 floor follows the simulation's own agreement: where the int8 program agrees
    with fp32 on 100 % of decisive samples, the artifact may not agree on 86 %."""
    min_agree: float | None = tol.min_top1_agreement
    if sim.top1_agreement_decisive is not None:
        min_agree = max(min_agree, sim.top1_agreement_decisive - SIM_AGREEMENT_SLACK)
    below = []
    if sim.cosine < tol.vs_fp32_min_cosine:
        below.append(f"cosine {sim.cosine:.4f} < {tol.vs_fp32_min_cosine:g}")
    if sim.top1_agreement_decisive is not None and sim.top1_agreement_decisive < tol.min_top1_agreement:
        below.append(f"decisive top-1 agreement {sim.top1_agreement_decisive:.3f} < {tol.min_top1_agreement:g}")
    warning = ("the quantized program itself is below the fp32 floors (" + "; ".join(below) + "): the int8 "
               "model loses that, not only this artifact — try --max-drop, per-channel weights or QAT, or "
               "accept it explicitly with --min-cosine / --min-top1") if below else ""
    return tol.vs_fp32_min_cosine, min_agree, warning


# A float artifact rounds every op in fp32, as torch does, in its own order. Where a net amplifies
# rounding (random-init HaloNet-H1 at 256², EfficientViT-M0), fp32 itself lands far from the exact
# answer: torch fp32 against the same program in fp64 (rounding 2^29 times finer) measures how far,
# and two fp32 computations of it may land up to twice that apart. The fp32 floors then follow that;
# on every other net fp32's own distance is far inside them and nothing changes.
FP32_OWN_FACTOR = 2.0
# ... unless fp32 is so far from exact that its output carries little of the function (floors at
# the whole range, or this cosine): then the output cannot verify a float artifact of the net at
# all, and the verdict stays a failure that says so.
FP32_OWN_MIN_COSINE = 0.9


def fp32_own_floors(tol: Tolerance, ref_fp32: np.ndarray, ref_fp64: np.ndarray, keep_cosine: bool = False,
                    keep_top1: bool = False) -> tuple[Tolerance, str]:
    """`tol`'s fp32 floors lowered to FP32_OWN_FACTOR times what fp32 rounding itself costs this net
    (torch fp32 vs fp64), where that is beyond them; a floor the user set (`keep_*`) stays. Returns
    the tolerance and, when fp32's own rounding matters here, the warning that says how."""
    own = diff(ref_fp32, ref_fp64, "torch-fp64", tol)
    k, changed = FP32_OWN_FACTOR, {}
    if not (own.cosine >= FP32_OWN_MIN_COSINE and k * own.max_rel < 1):
        return tol, (f"this net's output is dominated by fp32 rounding: torch fp32 is {_fmt(own.max_rel)} of the output "
                     f"range from the same program in fp64 (cosine {own.cosine:.4f}); floors that far out would check "
                     "nothing, so no output comparison can verify a float artifact of it")
    if tol.vs_fp32_max_rel is not None and k * own.max_rel > tol.vs_fp32_max_rel:
        changed["vs_fp32_max_rel"] = k * own.max_rel
    # 1 - cosine grows as the square of the error: errors up to k times fp32's own, k² times its distance
    if not keep_cosine and 1 - k * k * (1 - own.cosine) < tol.vs_fp32_min_cosine:
        changed["vs_fp32_min_cosine"] = 1 - k * k * (1 - own.cosine)
    agree = own.top1_agreement_decisive
    if not keep_top1 and agree is not None and 1 - k * (1 - agree) < tol.min_top1_agreement:
        changed["min_top1_agreement"] = 1 - k * (1 - agree)
    if not changed:
        return tol, ""
    why = (f"this net amplifies fp32 rounding: torch fp32 is {_fmt(own.max_rel)} of the output range from the same "
           f"program in fp64 (cosine {own.cosine:.5f}), so the fp32 floors allow {k:g}x fp32's own error "
           "(a defect smaller than fp32's own rounding cannot be told from it at the output)")
    return dataclasses.replace(tol, **changed), why


def sim_quality(ref_sim: np.ndarray, ref_fp32: np.ndarray, tol: Tolerance) -> SimQuality:
    """The torch quantized simulation against torch fp32, with the target's own decisive margin."""
    agree, n = None, 0
    mask = decisive(ref_fp32, tol.decisive_margin * value_range(ref_fp32))
    if mask is not None and mask.any():
        agree, n = float((top1(ref_sim)[mask] == top1(ref_fp32)[mask]).mean()), int(mask.sum())
    return SimQuality(rel_l2(ref_sim, ref_fp32), cosine(ref_sim, ref_fp32), agree, n)


def _beside(quality: SimQuality | None, out: np.ndarray, ref_fp32: np.ndarray) -> SimQuality | None:
    """The simulation's quality with the artifact's own error vs fp32 beside it (vs_sim_same_quality)."""
    return dataclasses.replace(quality, artifact_rel_l2=rel_l2(out, ref_fp32)) if quality is not None else None


def _steps(max_abs: float, ref: np.ndarray, out_quant: QuantParams | None) -> tuple[float, str]:
    if out_quant is not None:
        return round(max_abs / out_quant.scale[0], STEP_DECIMALS), "output scale"
    grid = value_range(ref) / GRID_LEVELS
    if grid <= 0:  # a constant simulation output: any difference is infinitely many steps
        return (0.0 if max_abs == 0 else float("inf")), "range/255"
    return round(max_abs / grid, STEP_DECIMALS), "range/255"


def accuracy(out: np.ndarray, labels: np.ndarray | None) -> float | None:
    t = top1(out)
    if labels is None or t is None:
        return None
    return float((t == labels).mean())


def source_drop(out: np.ndarray, source: np.ndarray, labels: np.ndarray | None, max_drop: float) -> OutputDiff:
    """For targets that change the function on purpose (pruning): the task metric of the artifact
    against the user's unchanged model — accuracy where labels exist, else top-1 agreement with it."""
    acc, ref_acc = accuracy(out, labels), accuracy(source, labels)
    t_out, t_src = top1(out), top1(source)
    err = np.abs(out.astype(np.float64) - source.astype(np.float64))
    base = dict(reference="source-model", max_abs=float(err.max()), mean_abs=float(err.mean()), max_steps=None,
                cosine=cosine(out, source), top1_agreement=None if t_out is None else float((t_out == t_src).mean()),
                max_rel=float(err.max()) / value_range(source) if value_range(source) > 0 else None)
    if acc is not None and ref_acc is not None:
        drop, what = ref_acc - acc, f"accuracy {100 * acc:.2f}% vs the source model's {100 * ref_acc:.2f}%"
    elif t_out is not None:
        drop, what = 1.0 - base["top1_agreement"], f"top-1 agreement with the source model {base['top1_agreement']:.3f}"
    else:  # no classes: the cosine to the source model, as a drop from 1
        drop, what = 1.0 - base["cosine"], f"cosine to the source model {base['cosine']:.4f}"
    ok = drop <= max_drop
    reason = "" if ok else f"{what}: drop {drop:.3f} > --max-drop {max_drop:g}"
    return OutputDiff(**base, passed=ok, reason=reason, checked=(f"drop from the source model <= {max_drop:g}",))


def check(out: np.ndarray, runtime: str, labels: np.ndarray | None, tol: Tolerance,
          ref_fp32: np.ndarray, ref_sim: np.ndarray | None, out_quant: QuantParams | None,
          reference: str = "torch-fp32") -> ParityReport:
    """The verdict on an artifact's outputs (from `runtime`, its reference kernels) on the held-out inputs."""
    quality = sim_quality(ref_sim, ref_fp32, tol) if ref_sim is not None and ref_sim.shape == ref_fp32.shape else None
    diffs = [diff(out, ref_fp32, reference, tol, sim=quality)]
    if ref_sim is not None:
        diffs.append(diff(out, ref_sim, SIM, tol, out_quant, sim=_beside(quality, out, ref_fp32)))
    return ParityReport(runtime, len(out), tuple(diffs), accuracy(out, labels), accuracy(ref_fp32, labels))


def host_kernels(fast_out: np.ndarray, reference_out: np.ndarray, engine: str, tol: Tolerance,
                 out_quant: QuantParams | None, advice: str, where: str = "") -> HostKernelCheck:
    """This host's fast kernels against the reference kernels on the same artifact and inputs, by
    the verdict's own yardstick: output steps for an int8 target, the fp32 criteria for a float one
    (`tol` as the verdict applied it). `where`: where in the file the two part, when known."""
    if tol.vs_sim_max_steps is None and out_quant is None:
        d = diff(fast_out, reference_out, "reference kernels", tol)
        limit = tol.vs_fp32_max_rel if tol.vs_fp32_max_rel is not None else 0.0
        by = f"({d.reason})"
    else:
        d = diff(fast_out, reference_out, SIM, tol, out_quant)
        limit = tol.vs_sim_max_steps if tol.vs_sim_max_steps is not None else 0.0
        # no steps where the fast output cannot be compared at all (NaN/inf, another shape): say why
        by = (f"by {_fmt(d.max_steps)} steps ({d.step_unit}) > {limit:g}" if d.max_steps is not None
              else f"({d.reason})")
    deviates = not d.passed
    msg = (f"{engine} on this CPU differ from the reference kernels {by}{where}: this host's kernels, not the "
           f"artifact; {advice}") if deviates else ""
    return HostKernelCheck(engine, d.max_abs, d.max_steps, limit, deviates, msg)


def unverified(runtime: str, reason: str, reference: str = "torch-fp32") -> ParityReport:
    """A report for an artifact whose runtime cannot run it here: a failure that says why."""
    nan = float("nan")
    return ParityReport(runtime, 0, (OutputDiff(reference, nan, nan, None, nan, None, False, reason),))


def layers_in_isolation(drifts: "tuple[TensorDrift, ...]", excluded: tuple[str, ...], samples: int,
                        tol: Tolerance, covered: int = 0, rescaled: tuple[str, ...] = (),
                        within: tuple[str, ...] = ()) -> LayerIsolation | None:
    """The verdict on each int8 layer alone (from `quant.divergence.isolated_drifts`); None when the
    target states no per-layer limit. Nothing matched is a failure, never a pass; every tensor not
    judged is named with its reason (`excluded`) and counted as unverified; a tensor the file stores
    at other quantization parameters (`rescaled`, "layer: …") fails at its own layer, first."""
    if tol.layer_max_steps is None:
        return None
    covered += len(within)
    if rescaled:
        worst = max(drifts, key=lambda d: d.max_steps) if drifts else None
        over = rescaled + tuple(f"{d.layer or d.tensor}: {d.max_steps:g} steps" for d in drifts
                                if _layer_off(d, tol.layer_max_steps))
        return LayerIsolation(samples, len(drifts), len(excluded), tol.layer_max_steps,
                              (worst.layer or worst.tensor) if worst else "", worst.max_steps if worst else float("nan"),
                              over, False, excluded, covered, within)
    if not drifts:
        return LayerIsolation(samples, 0, len(excluded), tol.layer_max_steps, "", float("nan"),
                              ("no int8 tensor of the artifact matched the simulation",), False, excluded, covered, within)
    worst = max(drifts, key=lambda d: d.max_steps)
    over = tuple(f"{d.layer or d.tensor}: {d.max_steps:g} steps ({100 * d.share_over_one:.2f}% of values "
                 f"off by more than 1)" for d in drifts if _layer_off(d, tol.layer_max_steps))
    return LayerIsolation(samples, len(drifts), len(excluded), tol.layer_max_steps, worst.layer or worst.tensor,
                          worst.max_steps, over, not over, excluded, covered, within)


# A layer computed in float inside an int8 file (LayerNorm, GELU: the file's float ops) rounds its
# float result at the output quantization like the simulation, but its float arithmetic differs in
# the last bits, so a value at a rounding boundary may land one step further: allowed on this share
# of the values, and never beyond twice the limit. A lowering error moves far more, or much further.
RARE_SHARE = 0.001


def _layer_off(d: "TensorDrift", limit: float) -> bool:
    return d.max_steps > 2 * limit or (d.max_steps > limit and d.share_over_one > RARE_SHARE)


def by_kind(outs: list[np.ndarray], refs: list[np.ndarray], sims: list[np.ndarray] | None, names: list[str],
            declared: tuple, precision: str, tol: Tolerance, reference: str = "torch-fp32",
            quants: list[QuantParams | None] | None = None) -> tuple[tuple[OutputDiff, ...], tuple[OutputCheck, ...]]:
    """Each output by what it means (edgeconv.outputs): its task metric against fp32 (held to a floor),
    against the simulation and the simulation's own; and each output after the first by the numeric
    criteria too, under its name (`torch-fp32:boxes`), in its own output steps (`quants`, None where
    it is float). `precision`: float, fp16 or int8."""
    from edgeconv import outputs as kinds_

    diffs: list[OutputDiff] = []
    checks: list[OutputCheck] = []
    for i, ((kind, source), out, ref) in enumerate(zip(kinds_.kinds(declared, refs), outs, refs)):
        sim = sims[i] if sims is not None and i < len(sims) else None
        if i > 0 and reference == "torch-fp32":
            quality = sim_quality(sim, ref, tol) if sim is not None and sim.shape == ref.shape else None
            diffs.append(dataclasses.replace(diff(out, ref, reference, tol, sim=quality), reference=f"{reference}:{names[i]}"))
            if sim is not None:
                q = quants[i] if quants and i < len(quants) else None  # its int8 step, as for the first output
                diffs.append(dataclasses.replace(diff(out, sim, SIM, tol, q, sim=_beside(quality, out, ref)),
                                                 reference=f"{SIM}:{names[i]}"))
        check = _check_kind(i, names[i], kind, source, out, ref, sim, precision)
        if i > 0 and reference != "torch-fp32" and not check.passed and check.vs_fp32:
            # a target that changes the function on purpose (pruning) is judged against its own
            # reference, which exists for the first output only: the others' metrics are reported
            check = dataclasses.replace(check, passed=True, floor=None, reason="",
                                        floor_from=f"no floor: the target's reference is {reference}")
        checks.append(check)
    return tuple(diffs), tuple(checks)


def _check_kind(i: int, name: str, kind, source: str, out: np.ndarray, ref: np.ndarray, sim: np.ndarray | None,
                precision: str) -> OutputCheck:
    from edgeconv import outputs as kinds_

    if out.shape != ref.shape or not np.isfinite(out).all():
        why = f"output shape {out.shape} != reference {ref.shape}" if out.shape != ref.shape else "NaN/inf in the output"
        return OutputCheck(name, i, kind.value, source, {}, passed=False, reason=why)
    vs_fp32 = kinds_.metrics(kind, out, ref)
    sim_ok = sim is not None and sim.shape == ref.shape
    vs_sim = kinds_.metrics(kind, out, sim) if sim_ok else None
    sim_own = kinds_.metrics(kind, sim, ref) if sim_ok else None
    metric, floor, how = kinds_.floor(kind, precision, sim_own)
    if kind is kinds_.OutputKind.LOGITS:  # the numeric verdict's decisive top-1 already holds logits
        floor, how = None, "held by the numeric verdict's decisive top-1 agreement"
    value = vs_fp32[metric]
    passed = floor is None or value >= floor
    reason = "" if passed else f"{name} ({kind.value}): {metric} vs fp32 {value:.4g} < {floor:.4g} ({how})"
    return OutputCheck(name, i, kind.value, source, vs_fp32, vs_sim, sim_own, metric, floor, how, passed, reason)
