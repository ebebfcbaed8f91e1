"""TFLite: what the file means (builtin kernels) against what a host's XNNPACK computes.

TFLite's builtin int8 kernels compute a file's integer arithmetic the same on every CPU; XNNPACK
picks its kernels by the host's ISA. With ai-edge-litert 2.3.0 its x86 int8 MEAN over more than
8192 contiguous values overflows on CPUs without AVX-512 (this AMD EPYC, an emulated Haswell or
Nehalem) and saturates, while the Intel AVX-512 host and an emulated arm64 Neoverse-N1 compute it
right: timm PoolFormerV2's GroupNorm(1) at 64², 215 steps off in XNNPACK here. So the verdict runs
the builtin kernels, and XNNPACK is compared with them as this host's fast kernels (a warning).
The no-AVX-512 case is checked on an emulated Haswell: no assumption about this host's ISA.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.exporters.tflite.runtime import TfliteRunner

QEMU = "/usr/bin/qemu-x86_64-static"
PROBE = Path(__file__).with_name("tflite_host_probe.py")
LIMIT = 3.0  # INT8_TOLERANCE's output steps: what the host check warns past


@pytest.fixture(scope="module")
def whole_map(tmp_path_factory):
    """tests.zoo:whole_map_norm exported to tflite-int8 with the CLI; its manifest entry and inputs."""
    from examples.zoo.images import batch, write_folder

    d = tmp_path_factory.mktemp("tflite-host")
    calib = write_folder(d / "calib", 24, side=32)
    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:whole_map_norm", "-t", "tflite-int8",
                                    "--calib", str(calib), "--calib-samples", "16", "--eval-samples", "8",
                                    "-o", str(d / "out")])
    art = json.loads((d / "out" / "edgeconv.json").read_text())["artifacts"][0]
    x = batch(6, 32, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=3)
    np.save(d / "x.npy", x)
    return {"dir": d, "res": res, "art": art, "path": d / "out" / art["path"], "x": x}


def _steps(a: np.ndarray, b: np.ndarray, step: float) -> float:
    """Largest difference in output steps (whole steps: both sides are dequantized int8)."""
    return round(float(np.abs(a.astype(np.float64) - b).max() / step), 3)


def _probe(cmd: list[str], whole_map) -> dict[str, np.ndarray]:
    out = whole_map["dir"] / f"probe-{len(cmd)}.npz"
    proc = subprocess.run(cmd + [str(PROBE), str(whole_map["dir"] / "x.npy"), str(out), str(whole_map["path"])],
                          capture_output=True, text=True, timeout=300)
    err = "\n".join(line for line in proc.stderr.splitlines() if "TCG doesn't support" not in line)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == TfliteRunner.ENGINES
    with np.load(out) as f:
        return dict(f)


def test_the_verdict_runs_the_builtin_kernels_and_compares_xnnpack_with_them(whole_map):
    """The export passes on any host, judged (end to end and layer by layer) by the builtin kernels;
    XNNPACK's outputs are compared with them and the comparison is reported, named."""
    art, res = whole_map["art"], whole_map["res"]
    parity = art["parity"]
    assert parity["runtime"] == TfliteRunner.ENGINES["reference"], parity["runtime"]
    sim = next(d for d in parity["diffs"] if d["reference"] == "torch-quant-sim")
    assert sim["passed"] and sim["max_steps"] <= 1, sim
    layers = parity["layers"]
    assert layers["passed"] and layers["layers"] >= 8 and layers["worst_steps"] <= 1, layers
    hk = parity["host_kernels"]
    assert hk["engine"] == TfliteRunner.ENGINES["fast"] and hk["limit"] == LIMIT, hk
    # the report says what this host's XNNPACK does, whichever way it goes
    step = art["output"]["quant"]["scale"][0] if art.get("output") else None
    fast = TfliteRunner(whole_map["path"], kernels="fast")(whole_map["x"])
    ref = TfliteRunner(whole_map["path"], kernels="reference")(whole_map["x"])
    if step is not None:
        assert hk["deviates"] == (_steps(fast, ref, step) > LIMIT), (hk, _steps(fast, ref, step))
    assert ("differ from the reference kernels" in res.output) == hk["deviates"], res.output[-1500:]
    assert res.exit_code == 0, res.output[-1500:]


def test_emulated_cpu_without_avx512_xnnpack_mean_overflows_builtin_kernels_do_not(whole_map):
    """On an emulated Haswell (AVX2, no AVX-512) the builtin kernels give the same outputs as natively,
    bit for bit, and XNNPACK's are more than the tolerance off them: the reason the verdict runs
    the builtin kernels."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the emulated Haswell runs this venv's x86-64 interpreter; this host is {platform.machine()}")
    if not Path(QEMU).is_file():
        pytest.skip(f"{QEMU} missing: install the Debian package qemu-user-static (bash .ci/services.sh does)")
    native = _probe([sys.executable], whole_map)
    haswell = _probe([QEMU, "-cpu", "Haswell", sys.executable], whole_map)
    np.testing.assert_array_equal(haswell["reference"], native["reference"])
    step = TfliteRunner(whole_map["path"]).outputs[0].quant.scale[0]
    assert _steps(haswell["fast"], haswell["reference"], step) > LIMIT


def test_emulated_arm64_xnnpack_computes_what_the_builtin_kernels_do(whole_map):
    """A phone's XNNPACK path (emulated Neoverse-N1: its arm64 int8 kernels) computes the file as the
    builtin kernels do here, within one output step: the reference the verdict uses is what the
    phone's default path computes (qemu's "max" CPU, with SME, did not: devices/arm64.QEMU_CPU)."""
    from edgeconv.devices import arm64
    from edgeconv.exporters.tflite.runtime import quantize

    why = arm64.unavailable()
    if why:
        pytest.skip(f"arm64 emulation unavailable: {why}")
    runner = TfliteRunner(whole_map["path"], kernels="reference")
    d_in = runner.interpreter.get_input_details()[0]
    xq = np.concatenate([quantize(s[None], d_in) for s in whole_map["x"]]).astype(np.float32)
    outs, _ = arm64.run({"m": whole_map["path"]}, xq)
    o = runner.outputs[0].quant
    phone = (outs["m"].astype(np.float64) - o.zero_point[0]) * o.scale[0]
    assert _steps(phone, runner(whole_map["x"]), o.scale[0]) <= 1
