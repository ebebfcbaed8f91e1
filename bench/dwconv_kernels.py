"""XNNPACK's depthwise-conv kernels on this host, by kernel size: fp32 and int8, XNNPACK vs builtin.

Why: on the ConvNeXt/ConvFormer families every int8 route (edgeconv's, ai-edge-quantizer's, litert-torch's
PT2E) ran several times slower than the fp32 file under XNNPACK on some x86 hosts, and not on others
(bench/results/int8_vs_aiq.json). Those nets' depthwise convs are 7×7: 49 taps, past the 25 of
XNNPACK's largest single-pass depthwise kernels, so XNNPACK runs them in several passes. This bench
isolates that op: one depthwise conv (C channels, S×S input, k×k, stride 1, SAME) per kernel size,
written by edgeconv as `tflite` (fp32) and `tflite-int8` (per-channel weights, calibrated on real
photo crops), each timed in ai-edge-litert with its default XNNPACK delegate and with TFLite's builtin
kernels only (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`), 1 thread, interleaved run by run, medians. The host's
CPU model and ISA flags are recorded beside the numbers: the result is a property of the host.

    python bench/dwconv_kernels.py [--kernels 3,5,7,9] [--channels 64] [--size 64]  → bench/results/dwconv_kernels.json

The factories `bench.dwconv_kernels:dw<k>` build the one-layer nets (so `edgeconv export --model` takes them).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHANNELS, SIZE = 64, 64


def __getattr__(name: str):
    if not (name.startswith("dw") and name[2:].isdigit()):
        raise AttributeError(name)
    return lambda: _net(int(name[2:]))


def _net(k: int):
    from torch import nn

    from examples.zoo._common import build

    class Stem(nn.Module):  # a 3-channel image in, the depthwise conv under test on CHANNELS channels
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, CHANNELS, 1)
            self.dw = nn.Conv2d(CHANNELS, CHANNELS, k, padding=k // 2, groups=CHANNELS)

        def forward(self, x):
            return self.dw(self.stem(x))

    return build(Stem, f"dw{k}", SIZE)


def _interpreters(path: Path, x: np.ndarray) -> dict:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    out = {}
    for engine, kw in (("xnnpack", {}), ("builtin", {
            "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES})):
        it = Interpreter(model_path=str(path), num_threads=1, **kw)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        xin = x.transpose(0, 2, 3, 1) if tuple(d["shape"]) != x.shape else x
        if d["dtype"] != np.float32:
            s, z = d["quantization"]
            xin = np.clip(np.round(xin / s + z), -128, 127).astype(d["dtype"])
        out[engine] = (it, d["index"], xin)
    return out


def timed(files: dict[str, Path], x: np.ndarray, runs: int) -> dict[str, float]:
    its = {f"{name} {engine}": v for name, p in files.items() for engine, v in _interpreters(p, x).items()}
    times: dict[str, list[float]] = {n: [] for n in its}
    for i in range(runs + 3):  # 3 warm-up rounds; interleaved, so a load change hits every file alike
        for n, (it, idx, xin) in its.items():
            it.set_tensor(idx, xin)
            t0 = time.perf_counter()
            it.invoke()
            if i >= 3:
                times[n].append((time.perf_counter() - t0) * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


def host() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = lambda key: next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith(key)), "")  # noqa: E731
    flags = set(line("flags").split())
    return {"cpu": line("model name"), "isa": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                                                           "amx_tile") if f in flags]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="3,5,7,9")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dwconv_kernels.json"))
    args = ap.parse_args()
    from bench.int8_vs_aiq import export
    from examples.zoo.images import batch, write_folder

    x = batch(1, SIZE, SIZE, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=7).astype(np.float32)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        calib = write_folder(Path(tmp) / "calib", 64)  # export() calibrates on 32, checks on 16
        for k in (int(v) for v in args.kernels.split(",")):
            m = export(f"bench.dwconv_kernels:dw{k}", Path(tmp) / f"dw{k}", calib, "-t", "tflite", "-t", "tflite-int8")
            files = {a["target"].replace("tflite-int8", "int8").replace("tflite", "fp32"): Path(tmp) / f"dw{k}" / a["path"]
                     for a in m["artifacts"]}
            ms = timed(files, x, args.runs)
            rows[f"{k}x{k}"] = {"taps": k * k, "median_ms": ms, "parity_passed": {a["target"]: a["parity"]["passed"]
                                                                               for a in m["artifacts"]},
                                "xnnpack_over_builtin": {p: ms[f"{p} xnnpack"] / ms[f"{p} builtin"] for p in files},
                                "int8_over_fp32_xnnpack": ms["int8 xnnpack"] / ms["fp32 xnnpack"]}
            print(k, json.dumps(rows[f"{k}x{k}"]), flush=True)
    Path(args.out).write_text(json.dumps({
        "command": "python bench/dwconv_kernels.py " + " ".join(sys.argv[1:]), "host": host(),
        "engine": "ai-edge-litert (default XNNPACK delegate vs BUILTIN_WITHOUT_DEFAULT_DELEGATES), 1 thread, interleaved",
        "net": f"1x1 stem 3->{CHANNELS}, then depthwise k x k on {CHANNELS} channels, {SIZE}x{SIZE}, stride 1, SAME",
        "runs": args.runs, "host_load_1min": os.getloadavg()[0], "kernels": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
