"""Engaged-path evidence on an emulated arm64 CPU (qemu-user + Debian arm64 + aarch64 ai-edge-litert).

XNNPACK's sparse kernels sum in a different order than its dense ones, so with identical weights
an artifact that runs sparse differs from its dense twin in the low bits, while one that runs
dense is bit-identical to it. (On x86 both are always bit-identical: XNNPACK's sparse path is off
there.) Needs the cached root filesystem: build it once with `bash .ci/arm64-rootfs.sh` (root).
"""
from __future__ import annotations

import numpy as np
import pytest

from edgeconv.devices import arm64
from zoo_sparse import INPUT_SHAPE, dense_tflite

pytestmark = pytest.mark.skipif(arm64.unavailable() is not None,
                                reason=f"arm64 emulation unavailable: {arm64.unavailable()}")

# (model variant, what the checker says) -> sparse artifact and its dense twin (no DENSIFY)
CASES = {
    "eligible": dict(sparsity=0.9),
    "tf_same": dict(sparsity=0.9, tf_same_padding=True),  # stem padded (0, 1): region never starts
    "low": dict(sparsity=0.5),  # 50 % zeros: XNNPACK's > 2/3 rule fails
}


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    from edgeconv.exporters.tflite.sparse import rewrite
    from edgeconv.exporters.tflite.sparse_check import check_tflite

    d = tmp_path_factory.mktemp("arm64")
    models, verdicts = {}, {}
    for case, kw in CASES.items():
        dense = dense_tflite(**kw)
        rewrite(dense, d / f"{case}-sparse.tflite")
        rewrite(dense, d / f"{case}-twin.tflite", encode=False)
        models[f"{case}-sparse"], models[f"{case}-twin"] = d / f"{case}-sparse.tflite", d / f"{case}-twin.tflite"
        verdicts[case] = check_tflite(d / f"{case}-sparse.tflite").eligible
    dense = dense_tflite(0.9)  # tflite-sparse-fp16: float16 weights, DENSIFY then DEQUANTIZE
    for kind, enc in (("sparse", True), ("twin", False)):
        models[f"fp16-{kind}"] = d / f"fp16-{kind}.tflite"
        rewrite(dense, models[f"fp16-{kind}"], fp16=True, encode=enc)
    verdicts["fp16"] = check_tflite(models["fp16-sparse"]).eligible
    x = np.random.default_rng(0).standard_normal((3, *INPUT_SHAPE[1:])).astype(np.float32)
    outs, times = arm64.run(models, x)
    return x, models, outs, times, verdicts


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("case", ["eligible", "fp16"])
def test_eligible_artifact_engages_sparse_path(emulated, case):
    _, _, outs, _, verdicts = emulated
    assert verdicts[case]
    a, b = outs[f"{case}-sparse"], outs[f"{case}-twin"]
    assert not np.array_equal(a, b), "sparse and dense twin bit-identical on arm64: sparse path not engaged"
    assert 0 < _rel(a, b) < 1e-5  # low bits only: same function, other summation order


@pytest.mark.parametrize("case", ["tf_same", "low"])
def test_ineligible_controls_stay_dense(emulated, case):
    _, _, outs, _, verdicts = emulated
    assert not verdicts[case]
    assert np.array_equal(outs[f"{case}-sparse"], outs[f"{case}-twin"])


def test_dense_twin_on_arm64_equals_x86(emulated):
    """The dense twin computes the same function on arm64 as on x86 (to float rounding: XNNPACK's
    NEON and AVX kernels sum in their own orders), and on x86, where XNNPACK's sparse path is off,
    the sparse file is its twin bit for bit: the arm64 difference above is the sparse path."""
    from edgeconv.exporters.tflite.runtime import TfliteRunner

    x, models, outs, _, _ = emulated
    x86 = TfliteRunner(models["eligible-twin"])(x)
    assert _rel(outs["eligible-twin"], x86) < 1e-5
    assert np.array_equal(TfliteRunner(models["eligible-sparse"])(x), x86)


def test_emulated_timings_are_labelled_not_latency(emulated, tmp_path):
    from edgeconv.devices.base import ProfileOptions

    _, models, _, _, _ = emulated
    rep = arm64.EmulatedArm64Backend().measure(models["eligible-sparse"], None, ProfileOptions(runs=2, warmup=1))
    assert rep.method == "emulated" and rep.iterations == 2
    assert "NOT latency" in rep.environment["note"]
