"""TFLite: a file judged in its default engine (XNNPACK), and re-judged in the builtin kernels alone.

XNNPACK picks its kernels by the host's ISA. With ai-edge-litert 2.3.0 its x86 int8 MEAN over more
than 8192 contiguous values overflows on CPUs without AVX-512 (this AMD EPYC, an emulated Haswell)
and saturates, while the Intel AVX-512 host and an emulated arm64 Neoverse-N1 compute it right:
timm PoolFormerV2's GroupNorm(1) at 64², 215 steps off in XNNPACK here. edgeconv writes such a
mean in two (`calib.rewrites.long_means_in_two`); a file written without the split (as another
converter writes it: the `whole_map` fixture turns the split off) shows the verdict's second
opinion: a file the default engine finds off its simulation is judged again in the builtin
kernels; passing there, the verdict is theirs and XNNPACK's deviation a named warning. The
no-AVX-512 case is checked on an emulated Haswell: no assumption about this host's ISA.
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


def _export(d: Path) -> dict:
    """tests.zoo:whole_map_norm exported to tflite-int8 with the CLI; its manifest entry and inputs."""
    from examples.zoo.images import batch, write_folder

    calib = write_folder(d / "calib", 24, side=32)
    res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:whole_map_norm", "-t", "tflite-int8",
                                    "--calib", str(calib), "--calib-samples", "16", "--eval-samples", "8",
                                    "-o", str(d / "out")])
    art = json.loads((d / "out" / "edgeconv.json").read_text())["artifacts"][0]
    x = batch(6, 32, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=3)
    np.save(d / "x.npy", x)
    return {"dir": d, "res": res, "art": art, "path": d / "out" / art["path"], "x": x}


@pytest.fixture(scope="module")
def whole_map(tmp_path_factory):
    """The toy's file with its GroupNorm's means left whole (one MEAN over 16384 values), as a
    converter without edgeconv's split writes it."""
    from edgeconv.calib import rewrites

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rewrites, "CONTIGUOUS_MEAN_LIMIT", None)
        return _export(tmp_path_factory.mktemp("tflite-host"))


@pytest.fixture(scope="module")
def split_map(tmp_path_factory):
    """The toy's file as edgeconv writes it by default."""
    return _export(tmp_path_factory.mktemp("tflite-split"))


def _steps(a: np.ndarray, b: np.ndarray, step: float) -> float:
    """Largest difference in output steps (whole steps: both sides are dequantized int8)."""
    return round(float(np.abs(a.astype(np.float64) - b).max() / step), 3)


def _need_emulated_haswell() -> None:
    """Skip, naming what is missing, where an emulated Haswell cannot run this venv's interpreter."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the emulated Haswell runs this venv's x86-64 interpreter; this host is {platform.machine()}")
    if not Path(QEMU).is_file():
        pytest.skip(f"{QEMU} missing: install the Debian package qemu-user-static (bash .ci/services.sh does)")


def _probe(cmd: list[str], whole_map) -> dict[str, np.ndarray]:
    out = whole_map["dir"] / f"probe-{len(cmd)}.npz"
    proc = subprocess.run(cmd + [str(PROBE), str(whole_map["dir"] / "x.npy"), str(out), str(whole_map["path"])],
                          capture_output=True, text=True, timeout=300)
    err = "\n".join(line for line in proc.stderr.splitlines() if "TCG doesn't support" not in line)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == TfliteRunner.ENGINES
    with np.load(out) as f:
        return dict(f)


def test_a_file_xnnpack_computes_wrong_here_is_judged_in_the_builtin_kernels(whole_map, monkeypatch):
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
        # re-checked (the check rebuilds the program, so without the split too): the same warning, printed
        monkeypatch.setattr("edgeconv.calib.rewrites.CONTIGUOUS_MEAN_LIMIT", None)
        again = CliRunner().invoke(main, ["check", str(whole_map["path"])])
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
    _need_emulated_haswell()
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


def _mean_runs(path: Path) -> list[int]:
    """Per MEAN in a .tflite file, the values it reduces in one contiguous run: the product of the
    reduced axes from the innermost outwards (1 where the innermost axis is kept: a strided sum)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    shapes = {t["index"]: [int(v) for v in t["shape"]] for t in it.get_tensor_details()}
    runs = []
    for op in it._get_ops_details():
        if op["op_name"] != "MEAN":
            continue
        shape = shapes[op["inputs"][0]]
        axes = {int(a) % len(shape) for a in np.atleast_1d(it.get_tensor(op["inputs"][1]))}
        run, k = 1, len(shape) - 1
        while k >= 0 and (k in axes or shape[k] == 1):
            run, k = run * shape[k], k - 1
        runs.append(run)
    return runs


def test_edgeconv_writes_a_long_mean_in_two_that_xnnpack_computes_without_avx512(whole_map, split_map):
    """By default the toy's GroupNorm means are written as a spatial MEAN, then one over C: no MEAN
    reduces more than 8192 values in one run (the unsplit file: 16384). The default engine judges
    the file on any host, with nothing to warn about, every layer within a step of the simulation;
    on an emulated Haswell XNNPACK is within the output tolerance of the builtin kernels (2 steps:
    their MEANs round ties apart; the unsplit file: 15)."""
    assert max(_mean_runs(whole_map["path"])) == 64 * 16 * 16
    runs = _mean_runs(split_map["path"])
    assert len(runs) == len(_mean_runs(whole_map["path"])) + 2 and max(runs) <= 8192, runs
    res, parity = split_map["res"], split_map["art"]["parity"]
    assert res.exit_code == 0, res.output[-1500:]
    assert parity["runtime"] == TfliteRunner.ENGINES["default"] and parity["host_kernels"] is None
    sim = next(d for d in parity["diffs"] if d["reference"] == "torch-quant-sim")
    assert sim["passed"] and sim["max_steps"] <= 1, sim
    assert parity["layers"]["passed"] and parity["layers"]["worst_steps"] <= 1, parity["layers"]
    _need_emulated_haswell()
    haswell = _probe([QEMU, "-cpu", "Haswell", sys.executable], split_map)
    step = TfliteRunner(split_map["path"]).outputs[0].quant.scale[0]
    assert _steps(haswell["default"], haswell["builtin"], step) <= LIMIT


@pytest.mark.parametrize("op,shape,dims,keep,split", [
    ("mean", (2, 64, 16, 16), [1, 2, 3], True, True),       # GroupNorm(1): C·H·W, C innermost in NHWC
    ("mean", (2, 64, 16, 16), [-3, -2, -1], False, True),  # the same, negative axes, squeezed
    ("mean", (2, 4, 64, 16, 16), [2, 3, 4], True, True),   # GroupNorm(4)'s grouped view: W innermost
    ("mean", (2, 1024, 16), [1, 2], True, True),           # tokens: C innermost
    ("sum", (2, 64, 16, 16), [1, 2, 3], False, True),      # XNNPACK's int8 SUM overflows alike
    ("mean", (2, 8, 128, 128), [2, 3], True, False),       # spatial mean: C kept, a strided sum
    ("mean", (2, 32, 16, 16), [1, 2, 3], True, False),     # 8192 values: within the limit
    ("mean", (2, 16, 16384), [2], True, True),             # one long axis: its [2, 8192] view
    ("mean", (2, 16384), [-1], False, True),               # a hand-written GroupNorm(1): x.flatten(1)
    ("mean", (2, 16384, 1, 2), [1], True, False),          # a 4-D C alone: its view would be 5-D
])
def test_long_means_in_two_keeps_the_values(op, shape, dims, keep, split):
    """The mean of equal groups' means is the mean (a sum of partial sums, the sum): the same values,
    in float, and the same shape."""
    import torch

    from edgeconv.calib import rewrites

    class Reduce(torch.nn.Module):
        def forward(self, x):
            return getattr(torch.relu(x), op)(dims, keepdim=keep)

    x = torch.randn(shape)
    gm = torch.export.export(Reduce(), (x,), strict=False).module()
    before = gm(x)
    assert bool(rewrites.long_means_in_two(gm)) is split
    gm.recompile()
    after = gm(x)
    assert after.shape == before.shape and torch.allclose(after, before, rtol=1e-5, atol=1e-4)
    target = torch.ops.aten.mean.dim if op == "mean" else torch.ops.aten.sum.dim_IntList
    assert sum(n.target is target for n in gm.graph.nodes) == (2 if split else 1)


@pytest.mark.parametrize("form", ["x.flatten(1).mean(1)", "x.sum((1, 2, 3))"])
def test_emulated_cpu_without_avx512_computes_long_reductions_edgeconv_writes(tmp_path, form):
    """A hand-written whole-map mean (one axis of 16384 values) and a whole-map SUM (XNNPACK's int8
    SUM overflows as its MEAN does: 13 steps whole), quantized with edgeconv's quantizer and written
    by its TFLite exporter: on an emulated Haswell XNNPACK computes them as the builtin kernels do."""
    _need_emulated_haswell()
    import torch
    from test_int8_fullint import _quantize, _tflite

    class Reduce(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 64, 1)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return y.flatten(1).mean(1, keepdim=True) if "mean" in form else y.sum((1, 2, 3)).unsqueeze(1)

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)
    path = _tflite(*_quantize(Reduce().eval(), x), tmp_path / "reduce.tflite")
    np.save(tmp_path / "x.npy", x)
    haswell = _probe([QEMU, "-cpu", "Haswell", sys.executable], {"dir": tmp_path, "path": path})
    step = TfliteRunner(path).outputs[0].quant.scale[0]
    assert _steps(haswell["default"], haswell["builtin"], step) <= 1
