"""TFLite: a file judged in its default engine (XNNPACK), and re-judged in the builtin kernels alone.

XNNPACK picks its kernels by the host's ISA. With ai-edge-litert 2.3.0 its x86 int8 MEAN over more
than 8192 contiguous values overflows on CPUs without AVX-512 (this AMD EPYC, an emulated Haswell)
and saturates, while the Intel AVX-512 host and an emulated arm64 Neoverse-N1 compute it right:
timm PoolFormerV2's GroupNorm(1) at 64², 215 steps off in XNNPACK here. A file the default engine
finds off its simulation is judged again in the builtin kernels; passing there, the verdict is
theirs and XNNPACK's deviation a named warning. The no-AVX-512 case is checked on an emulated
Haswell: no assumption about this host's ISA.
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


def test_a_file_xnnpack_computes_wrong_here_is_judged_in_the_builtin_kernels(whole_map):
    """The export passes on any host. Where this host's XNNPACK is more than the tolerance off the
    builtin kernels (every x86 CPU without AVX-512), the verdict is the builtin kernels' — end to end
    and layer by layer — and XNNPACK's deviation is reported and printed, named; elsewhere the
    verdict is the default engine's, with nothing to report."""
    art, res = whole_map["art"], whole_map["res"]
    parity = art["parity"]
    runner = TfliteRunner(whole_map["path"], kernels="builtin")
    step = runner.outputs[0].quant.scale[0]
    xnnpack_off = _steps(TfliteRunner(whole_map["path"])(whole_map["x"]), runner(whole_map["x"]), step) > LIMIT
    sim = next(d for d in parity["diffs"] if d["reference"] == "torch-quant-sim")
    assert sim["passed"] and sim["max_steps"] <= 1, sim
    layers = parity["layers"]
    assert layers["passed"] and layers["layers"] >= 8 and layers["worst_steps"] <= 1, layers
    hk = parity["host_kernels"]
    if xnnpack_off:
        assert parity["runtime"] == TfliteRunner.ENGINES["builtin"], parity["runtime"]
        assert hk["deviates"] and hk["engine"] == TfliteRunner.ENGINES["default"] and hk["max_steps"] > LIMIT, hk
        assert "differ from the reference kernels" in res.output and "builtin kernels" in res.output
        again = CliRunner().invoke(main, ["check", str(whole_map["path"])])  # re-checked: the same warning, printed
        assert again.exit_code == 0 and "WARNING host kernels: " + hk["engine"] in again.output, again.output
        # named where the engines part: the norm's MEAN over the whole map (145 steps here), every
        # tensor before it within the few steps a one-step rounding difference grows to
        part = hk["message"].split("they part most at ")[1].split(")")[0]
        steps, before = (int(part.split(": ")[1].split()[0]), int(part.split("within ")[1]))
        assert "GroupNorm" in part and steps > 10 * max(before, 1), part
    else:
        assert parity["runtime"] == TfliteRunner.ENGINES["default"] and hk is None, (parity["runtime"], hk)
    assert res.exit_code == 0, res.output[-1500:]


def test_emulated_cpu_without_avx512_xnnpack_mean_overflows_builtin_kernels_do_not(whole_map):
    """On an emulated Haswell (AVX2, no AVX-512) the builtin kernels give the same outputs as natively,
    bit for bit, and XNNPACK's are more than the tolerance off them: the case the second opinion is for."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the emulated Haswell runs this venv's x86-64 interpreter; this host is {platform.machine()}")
    if not Path(QEMU).is_file():
        pytest.skip(f"{QEMU} missing: install the Debian package qemu-user-static (bash .ci/services.sh does)")
    native = _probe([sys.executable], whole_map)
    haswell = _probe([QEMU, "-cpu", "Haswell", sys.executable], whole_map)
    np.testing.assert_array_equal(haswell["builtin"], native["builtin"])
    step = TfliteRunner(whole_map["path"]).outputs[0].quant.scale[0]
    assert _steps(haswell["default"], haswell["builtin"], step) > LIMIT


def test_emulated_arm64_xnnpack_computes_what_the_builtin_kernels_do(whole_map):
    """A phone's XNNPACK path (emulated Neoverse-N1: its arm64 int8 kernels) computes the file as the
    builtin kernels do here, within one output step (qemu's "max" CPU, with SME, did not:
    devices/arm64.QEMU_CPU)."""
    from edgeconv.devices import arm64
    from edgeconv.exporters.tflite.runtime import quantize

    why = arm64.unavailable()
    if why:
        pytest.skip(f"arm64 emulation unavailable: {why}")
    runner = TfliteRunner(whole_map["path"], kernels="builtin")
    d_in = runner.interpreter.get_input_details()[0]
    xq = np.concatenate([quantize(s[None], d_in) for s in whole_map["x"]]).astype(np.float32)
    outs, _ = arm64.run({"m": whole_map["path"]}, xq)
    o = runner.outputs[0].quant
    phone = (outs["m"].astype(np.float64) - o.zero_point[0]) * o.scale[0]
    assert _steps(phone, runner(whole_map["x"]), o.scale[0]) <= 1
