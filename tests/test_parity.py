"""The parity verdict itself, on constructed outputs whose right answer is known: tolerances that
scale with the output, comparisons that cannot mis-fire at their own boundary, near-ties that are
not failures, and no comparison that passes with nothing to compare."""
from __future__ import annotations

import numpy as np
import pytest

from edgeconv import parity
from edgeconv.parity import FLOAT_TOLERANCE, FP16_TOLERANCE, INT8_TOLERANCE
from edgeconv.results import QuantParams

RNG = np.random.default_rng(0)


def _logits(n=32, classes=10, scale=5.0):
    return (RNG.standard_normal((n, classes)) * scale).astype(np.float32)


def test_fp32_limit_scales_with_the_output_range():
    # A super-resolution-like output in pixel units (range ~1e4): float rounding of 1e-7 relative
    # is ~1e-3 absolute, which the old absolute 1e-4 limit failed.
    ref = (RNG.random((4, 3, 16, 16)) * 10_000).astype(np.float32)
    out = ref * np.float32(1 + 1e-7) + np.float32(1e-3)
    d = parity.diff(out, ref, "torch-fp32", FLOAT_TOLERANCE)
    assert d.passed, d.reason
    assert d.max_abs > 1e-4 and d.max_rel < 1e-6
    # ... and a real error of 1 % of that range still fails
    bad = ref.copy()
    bad[0, 0, 0, 0] += 100.0
    d = parity.diff(bad, ref, "torch-fp32", FLOAT_TOLERANCE)
    assert not d.passed and "of the output range" in d.reason


def test_small_outputs_are_not_excused_by_a_relative_limit():
    ref = _logits(scale=0.01)  # range ~0.05
    out = ref + np.float32(1e-4)  # 2e-3 of the range: far above float rounding
    d = parity.diff(out, ref, "torch-fp32", FLOAT_TOLERANCE)
    assert not d.passed and d.max_rel > 1e-3


def test_steps_at_the_limit_do_not_fail():
    # int8 outputs dequantized in float32 (as the runtimes return them): exactly 3 steps apart, but
    # float32 rounding makes |Δ|/scale 3.0000001 — the old check printed "3.0 output steps > 3.0".
    scale = 0.0731
    q = RNG.integers(-100, 100, size=(16, 10))
    ref = (q * np.float32(scale)).astype(np.float32)
    out = ((q + 3) * np.float32(scale)).astype(np.float32)
    assert float(np.abs(out.astype(np.float64) - ref).max() / scale) != 3.0  # the float noise is there
    qp = QuantParams("int8", (scale,), (0,))
    d = parity.diff(out, ref, parity.SIM, INT8_TOLERANCE, qp)
    assert d.passed and d.max_steps == 3.0 and d.step_unit == "output scale"
    out4 = ((q + 4) * np.float32(scale)).astype(np.float32)
    d = parity.diff(out4, ref, parity.SIM, INT8_TOLERANCE, qp)
    assert not d.passed and d.max_steps == 4.0 and "4 steps (output scale) > 3" in d.reason


def test_flip_between_near_tied_classes_is_not_a_failure():
    ref = _logits(n=32)
    ref[np.arange(32), ref.argmax(1)] += 5.0  # every sample decisive...
    ref[0, :2] = [30.0, 30.0 - 1e-4]  # ...but sample 0: two classes tied to 1e-4
    out = ref.copy()
    out[0, :2] = [30.0 - 1e-4, 30.0]  # the artifact's fp16 rounding flips it
    d = parity.diff(out, ref, "torch-fp32", FP16_TOLERANCE)
    assert d.top1_agreement == pytest.approx(31 / 32)  # raw agreement 96.9 %, still reported
    assert d.decisive_samples == 31 and d.top1_agreement_decisive == 1.0
    assert d.passed, d.reason
    # a flip on a decisive sample is a failure
    i = int(np.argmax(np.sort(ref, 1)[:, -1] - np.sort(ref, 1)[:, -2]))
    worse = out.copy()
    worse[i] = ref[i][::-1]
    d = parity.diff(worse, ref, "torch-fp32", FP16_TOLERANCE.__class__(min_top1_agreement=1.0, vs_fp32_min_cosine=0.0))
    assert not d.passed and "decisive" in d.reason


def test_float_output_is_checked_against_the_simulation():
    # The program's output is float (a float head after int8 layers, or --max-drop kept it):
    # no output scale, so the old check passed whatever the values (seen at cosine 0.946).
    sim = _logits(n=16)
    bent = sim + RNG.standard_normal(sim.shape).astype(np.float32) * 1.7  # cosine ~0.95
    d = parity.diff(bent, sim, parity.SIM, INT8_TOLERANCE, None)
    assert d.cosine < 0.97
    assert not d.passed and d.step_unit == "range/255" and d.max_steps > 3
    assert any("range/255" in c for c in d.checked) and any("cosine" in c for c in d.checked)
    # kernel rounding of a faithful artifact: well within an 8-bit grid step of the range
    close = sim + np.float32(1e-3)
    assert parity.diff(close, sim, parity.SIM, INT8_TOLERANCE, None).passed


@pytest.mark.parametrize("out", [np.zeros((0, 10), np.float32), np.full((4, 10), np.nan, np.float32)])
def test_nothing_to_compare_fails(out):
    ref = np.zeros((len(out), 10), np.float32)
    for reference, tol in (("torch-fp32", FLOAT_TOLERANCE), (parity.SIM, INT8_TOLERANCE)):
        d = parity.diff(out, ref, reference, tol, None)
        assert not d.passed and d.reason


def test_sim_comparison_without_a_limit_fails():
    sim = _logits()
    d = parity.diff(sim, sim, parity.SIM, FLOAT_TOLERANCE, None)  # a target that states no step limit
    assert not d.passed and "no limit" in d.reason


def test_every_passing_comparison_states_what_it_checked():
    ref = _logits()
    for reference, tol in (("torch-fp32", FLOAT_TOLERANCE), ("torch-fp32", INT8_TOLERANCE), (parity.SIM, INT8_TOLERANCE)):
        d = parity.diff(ref, ref, reference, tol, QuantParams("int8", (0.1,), (0,)))
        assert d.passed and d.checked


def test_source_drop_fails_a_pruned_model_at_chance():
    labels = RNG.integers(0, 10, size=64)
    dense = np.eye(10, dtype=np.float32)[labels] * 5  # the source model: 100 % accurate
    chance = _logits(n=64)  # pruned to noise
    d = parity.source_drop(chance, dense, labels, 0.02)
    assert not d.passed and "drop" in d.reason and d.reference == "source-model"
    assert parity.source_drop(dense, dense, labels, 0.02).passed
    assert parity.source_drop(chance, dense, labels, 1.0).passed  # --max-drop overrides
    # without labels: top-1 agreement with the source model
    d = parity.source_drop(chance, dense, None, 0.02)
    assert not d.passed and "agreement" in d.reason


def test_host_kernel_check_names_the_engine_and_the_deviation():
    scale = 0.05
    ref = (RNG.integers(-100, 100, size=(8, 10)) * scale).astype(np.float32)
    fast = ref.copy()
    fast[3, 4] += 27 * scale
    qp = QuantParams("int8", (scale,), (0,))
    hk = parity.host_kernels(fast, ref, "onnxruntime fast kernels", INT8_TOLERANCE, qp, "use X")
    assert hk.deviates and hk.max_steps == 27.0 and "onnxruntime fast kernels" in hk.message and "use X" in hk.message
    assert not parity.host_kernels(ref, ref, "e", INT8_TOLERANCE, qp, "").deviates
    # fast kernels whose output cannot be compared (NaN here) have no steps: the reason, not a
    # TypeError that failed the whole parity stage (timm HaloNet-H1's onnx-int8)
    fast[0, 0] = np.nan
    hk = parity.host_kernels(fast, ref, "onnxruntime fast kernels", INT8_TOLERANCE, qp, "use X")
    assert hk.deviates and hk.max_steps is None and "NaN/inf" in hk.message and "use X" in hk.message


def test_host_kernel_check_of_a_float_target_uses_the_fp32_criteria():
    """A float artifact's fast kernels (XNNPACK for TFLite fp32) against its reference kernels: fp32
    rounding apart passes, a deviation past the float floor is named — never 'steps > 0'."""
    ref = RNG.standard_normal((8, 10)).astype(np.float32)
    near = ref * np.float32(1 + 1e-7)
    assert not parity.host_kernels(near, ref, "xnnpack", FLOAT_TOLERANCE, None, "").deviates
    far = ref.copy()
    far[2, 3] += 0.05 * float(ref.max() - ref.min())
    hk = parity.host_kernels(far, ref, "xnnpack", FLOAT_TOLERANCE, None, "use Y")
    assert hk.deviates and hk.limit == FLOAT_TOLERANCE.vs_fp32_max_rel and "max |Δ|" in hk.message, hk
    assert "use Y" in hk.message


def test_fp32_own_floors_follow_fp32s_own_error_and_stop_where_nothing_is_left():
    """Floors at 2x fp32's own error vs fp64 (max |Δ|/range: 2x; 1 - cosine: 4x, it grows as the
    error squared), only past the defaults; user floors kept; an output all rounding: unchanged."""
    exact = RNG.standard_normal((32, 10))
    calm = exact + 1e-9 * RNG.standard_normal(exact.shape)
    assert parity.fp32_own_floors(FLOAT_TOLERANCE, calm.astype(np.float32), exact) == (FLOAT_TOLERANCE, "")
    off = exact + 0.01 * RNG.standard_normal(exact.shape)
    tol, why = parity.fp32_own_floors(FLOAT_TOLERANCE, off, exact)
    own_rel = np.abs(off - exact).max() / (exact.max() - exact.min())
    assert tol.vs_fp32_max_rel == pytest.approx(2 * own_rel) and "amplifies fp32 rounding" in why
    assert 1 - tol.vs_fp32_min_cosine == pytest.approx(4 * (1 - parity.cosine(off, exact)))
    kept, _ = parity.fp32_own_floors(FLOAT_TOLERANCE, off, exact, keep_cosine=True)
    assert kept.vs_fp32_min_cosine == FLOAT_TOLERANCE.vs_fp32_min_cosine
    noise = RNG.standard_normal(exact.shape)
    tol, why = parity.fp32_own_floors(FLOAT_TOLERANCE, noise, exact)
    assert tol == FLOAT_TOLERANCE and "dominated by fp32 rounding" in why


def _seeded_logits(n=64, k=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)).astype(np.float32) * 3


def test_deep_net_cascade_passes_within_the_simulations_own_error():
    """Past 3 steps an int8 artifact still passes when it is closer to the simulation than the
    simulation is to fp32; farther than that it fails, whatever the cause."""
    fp32 = _seeded_logits()
    rng = np.random.default_rng(1)
    sim = fp32 + rng.normal(size=fp32.shape).astype(np.float32) * 0.6  # quantization: rel L2 ~0.2
    qp = QuantParams(scale=(0.05,), zero_point=(0,), dtype="int8")
    quality = parity.sim_quality(sim, fp32, INT8_TOLERANCE)
    near = sim + rng.normal(size=sim.shape).astype(np.float32) * 0.2  # > 3 steps, rel L2 ~0.07
    d = parity.diff(near, sim, parity.SIM, INT8_TOLERANCE, qp, sim=quality)
    assert d.max_steps > 3 and d.rel_l2 < quality.rel_l2 and d.passed, d.reason
    assert d.sim_rel_l2_vs_fp32 == quality.rel_l2 and "the simulation's own" in d.checked[0]
    far = sim + rng.normal(size=sim.shape).astype(np.float32) * 1.2
    d = parity.diff(far, sim, parity.SIM, INT8_TOLERANCE, qp, sim=quality)
    assert not d.passed and d.rel_l2 > quality.rel_l2 and "L2 error" in d.reason
    assert not parity.diff(near, sim, parity.SIM, INT8_TOLERANCE, qp).passed  # without it: steps only


def test_an_equally_good_int8_model_passes_once_every_layer_passed_alone():
    """Verified layer by layer (verify.py sets vs_sim_same_quality only then), an artifact whose
    rounding flips cascaded as far from the simulation as quantization moved the net still passes
    when its own error vs fp32 is within 10 % of the simulation's (timm DaViT: 0.114 from the
    simulation, the simulation 0.111 from fp32); a worse model does not, nor does it without the
    per-layer verdict."""
    import dataclasses

    fp32 = _seeded_logits()
    rng = np.random.default_rng(3)
    sim = fp32 + rng.normal(size=fp32.shape).astype(np.float32) * 0.6
    twin = fp32 + rng.normal(size=fp32.shape).astype(np.float32) * 0.6  # same quality, other rounding
    worse = fp32 + rng.normal(size=fp32.shape).astype(np.float32) * 0.9
    qp = QuantParams(scale=(0.05,), zero_point=(0,), dtype="int8")
    verified = dataclasses.replace(INT8_TOLERANCE, vs_sim_max_rel_l2=None, vs_sim_same_quality=parity.INT8_SAME_QUALITY)
    for out, tol, ok in ((twin, verified, True), (worse, verified, False), (twin, INT8_TOLERANCE, False)):
        quality = dataclasses.replace(parity.sim_quality(sim, fp32, tol), artifact_rel_l2=parity.rel_l2(out, fp32))
        d = parity.diff(out, sim, parity.SIM, tol, qp, sim=quality)
        assert d.rel_l2 > quality.rel_l2 and d.passed is ok, (d.reason, quality)
    assert parity.check(twin, "e", None, verified, fp32, sim, qp).diffs[1].passed


def test_fp32_floors_hold_under_a_poor_simulation_unless_lowered_explicitly():
    """A weak calibration does not widen the budget: the int8 model below the fp32 floors fails
    (with a warning saying the int8 model, not only the artifact, loses it), and passes only when
    the user lowers the floors explicitly (--min-cosine / --min-top1)."""
    import dataclasses

    fp32 = _seeded_logits()
    rng = np.random.default_rng(2)
    sim = fp32 + rng.normal(size=fp32.shape).astype(np.float32) * 4.0  # int8 program far from fp32
    quality = parity.sim_quality(sim, fp32, INT8_TOLERANCE)
    assert quality.cosine < INT8_TOLERANCE.vs_fp32_min_cosine
    d = parity.diff(sim, fp32, "torch-fp32", INT8_TOLERANCE, sim=quality)
    assert not d.passed and "cosine" in d.reason and "quantized program itself" in d.warning
    lowered = dataclasses.replace(INT8_TOLERANCE, vs_fp32_min_cosine=-1.0, min_top1_agreement=0.0)
    assert parity.diff(sim, fp32, "torch-fp32", lowered, sim=parity.sim_quality(sim, fp32, lowered)).passed
    good = parity.diff(fp32 + 0.01, fp32, "torch-fp32", INT8_TOLERANCE, sim=parity.sim_quality(fp32, fp32, INT8_TOLERANCE))
    assert good.passed and not good.warning


def test_top1_floor_follows_a_perfect_simulation():
    """Where the int8 program agrees with fp32 on every decisive sample, the artifact may not agree
    on only 86 % (the target's 0.9 less two standard errors): its floor is the simulation's own."""
    import dataclasses

    tol = dataclasses.replace(INT8_TOLERANCE, vs_fp32_min_cosine=0.0)  # judge the top-1 floor alone
    n = 256
    ref = np.zeros((n, 4), np.float32)
    ref[:, 0] = 10.0
    perfect = parity.sim_quality(ref, ref, tol)
    out = ref.copy()
    out[235:, 0], out[235:, 1] = 0.0, 10.0  # 21 of 256 flip: 0.918, above 0.9 - 2 SE
    assert parity.diff(out, ref, "torch-fp32", tol).passed  # no simulation: the target's floor
    d = parity.diff(out, ref, "torch-fp32", tol, sim=perfect)
    assert not d.passed and "top-1 agreement" in d.reason
    out = ref.copy()
    out[252:, 0], out[252:, 1] = 0.0, 10.0  # 4 of 256: the lowering's own rounding flips a few
    assert parity.diff(out, ref, "torch-fp32", tol, sim=perfect).passed
    # 8 decisive samples: one flipped (Swin-T's tflite-int8 on a host without AVX-512) is no
    # evidence against 0.98 (a 15 % chance); two are (1 %). The floor less two standard errors
    # (0.881 at 8) failed the one.
    few = ref[:8]
    for flips, passes in ((1, True), (2, False)):
        out = few.copy()
        out[8 - flips:, 0], out[8 - flips:, 1] = 0.0, 10.0
        d = parity.diff(out, few, "torch-fp32", tol, sim=parity.sim_quality(few, few, tol))
        assert d.passed is passes, d.reason


def test_end_to_end_bound_has_an_absolute_ceiling():
    """The L2 allowance against the simulation follows the simulation's own error vs fp32 only up
    to a ceiling: a worse calibration cannot buy the lowering a larger error."""
    fp32 = _seeded_logits()
    rng = np.random.default_rng(3)
    weak_sim = fp32 + rng.normal(size=fp32.shape).astype(np.float32) * 2.0  # rel L2 far above the ceiling
    quality = parity.sim_quality(weak_sim, fp32, INT8_TOLERANCE)
    assert quality.rel_l2 > 2 * INT8_TOLERANCE.vs_sim_max_rel_l2
    off = weak_sim + rng.normal(size=fp32.shape).astype(np.float32) * 0.8  # the artifact: well off the simulation
    assert parity.rel_l2(off, weak_sim) < quality.rel_l2  # the old bound would have passed it
    d = parity.diff(off, weak_sim, parity.SIM, INT8_TOLERANCE, None, sim=quality)
    assert not d.passed and f"at most {INT8_TOLERANCE.vs_sim_max_rel_l2:g}" in d.reason


def test_layers_in_isolation_verdict():
    from edgeconv.results import TensorDrift

    ok = TensorDrift("a", "stem", "t0", 0.1, 0, 1.0, 0.01, 0.02, 0.0)
    bad = TensorDrift("b", "blocks.3.conv", "t1", 0.1, 0, 7.0, 2.0, 0.6, 0.5)
    rare = TensorDrift("c", "norm", "t2", 0.1, 0, 2.0, 0.001, 0.001, 0.0005)  # a float island's boundary tie
    wide = TensorDrift("d", "norm", "t3", 0.1, 0, 2.0, 0.2, 0.2, 0.05)  # two steps on 5 % of values
    assert parity.layers_in_isolation((ok, rare), (), 8, INT8_TOLERANCE).passed
    assert not parity.layers_in_isolation((ok, wide), (), 8, INT8_TOLERANCE).passed
    v = parity.layers_in_isolation((ok,), (), 8, INT8_TOLERANCE)
    assert v.passed and v.worst_steps == 1.0 and v.layers == 1 and v.unmatched == 0
    left_out = ("e (head): no tensor of the artifact has its scale, zero point and size",)
    v = parity.layers_in_isolation((ok, bad), left_out, 8, INT8_TOLERANCE)
    assert not v.passed and v.worst_layer == "blocks.3.conv" and "blocks.3.conv: 7 steps" in v.over[0]
    assert v.unmatched == 1 and v.excluded == left_out  # every tensor left out is named with its reason
    assert not parity.layers_in_isolation((), left_out * 3, 8, INT8_TOLERANCE).passed  # nothing matched never passes
    assert parity.layers_in_isolation((ok,), (), 8, FLOAT_TOLERANCE) is None


@pytest.mark.parametrize("n, agree, passes", [(7, 6, True), (7, 4, True), (7, 3, False), (256, 218, False),
                                              (256, 240, True)])
def test_top1_floor_accounts_for_the_sample_count(n, agree, passes):
    """One flip in 7 decisive samples is no evidence against a 0.9 floor; 38 in 256 is (a 0.9 %
    chance). 4 of 7 has a 2.6 % chance under a 0.9 floor, inside the two-standard-error tail
    (2.3 %); 3 of 7, 0.3 %."""
    ref = np.zeros((n, 4), np.float32)
    ref[:, 0] = 10.0  # every sample decisive, class 0
    out = ref.copy()
    out[agree:, 0], out[agree:, 1] = 0.0, 10.0  # n - agree samples flip to class 1
    d = parity.diff(out, ref, "torch-fp32", INT8_TOLERANCE)
    assert d.decisive_samples == n and d.top1_agreement_decisive == pytest.approx(agree / n)
    assert ("top-1 agreement" not in d.reason) == passes, d.reason


@pytest.mark.parametrize("tol, reference", [(FLOAT_TOLERANCE, "torch-fp32"), (INT8_TOLERANCE, parity.SIM)])
def test_a_constant_reference_is_no_comparison(tol, reference):
    """A net whose output is one value for every input (timm's zero-initialized heads at random init):
    an artifact equal to it proves nothing end to end, so the check fails and says why."""
    ref = np.zeros((8, 10), np.float32)
    qp = QuantParams("int8", (0.1,), (0,)) if reference == parity.SIM else None
    d = parity.diff(ref.copy(), ref, reference, tol, qp)
    assert not d.passed and "one constant (0 everywhere)" in d.reason
    varied = np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32)
    assert parity.diff(varied.copy(), varied, reference, tol, qp).passed
