"""edgeconv's tflite-int8 against ai-edge-quantizer's static int8 of the same net, same run.

The net is the zoo's MobileNetV2 (224², BatchNorm statistics from real photos). edgeconv exports
`tflite-int8` and `tflite` (fp32) through its CLI with calibration on crops of real photos;
ai-edge-quantizer (`static_wi8_ai8`) quantizes that fp32 file, calibrated on the same crops. Both
int8 files are then timed in ai-edge-litert (XNNPACK, 1 thread), interleaved run by run so a busy
host slows both alike, and their ops are counted (a float island shows as QUANTIZE/DEQUANTIZE).

    python bench/int8_vs_aiq.py [--runs 50]      → bench/results/int8_vs_aiq.json
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = "examples.zoo.mobilenet:mobilenet_v2"
CALIB = 64


def export(out: Path, calib: Path) -> dict:
    cmd = [sys.executable, "-m", "edgeconv", "export", "--model", MODEL, "-t", "tflite-int8", "-t", "tflite",
           "--calib", str(calib), "--calib-samples", str(CALIB), "--eval-samples", "16", "-o", str(out), "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if r.returncode not in (0, 1):
        raise SystemExit(f"export failed: {r.stderr.strip().splitlines()[-1:]}")
    m = json.loads((out / "edgeconv.json").read_text())
    m["_wall_s"] = time.perf_counter() - t0
    return m


def aiq_int8(fp32: Path, x: np.ndarray, dst: Path) -> float:
    from ai_edge_quantizer import quantizer, recipe

    t0 = time.perf_counter()
    q = quantizer.Quantizer(str(fp32))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    sig = _input_name(fp32)
    calib = q.calibrate({"serving_default": [{sig: x[i:i + 1]} for i in range(len(x))]}, num_threads=1)
    q.quantize(calib, enable_progress_report=False).export_model(str(dst), overwrite=True)
    return time.perf_counter() - t0


def _input_name(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return next(iter(runner.get_input_details()))


def op_counts(path: Path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=_builtin())
    it.allocate_tensors()
    return dict(sorted(collections.Counter(op["op_name"] for op in it._get_ops_details()).items()))  # noqa: SLF001


def _builtin():
    from ai_edge_litert.interpreter import OpResolverType

    return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # ops as written, not one DELEGATE node


def timed(paths: dict[str, Path], x: np.ndarray, runs: int) -> dict[str, dict]:
    from ai_edge_litert.interpreter import Interpreter

    its = {}
    for name, p in paths.items():
        it = Interpreter(model_path=str(p), num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        s, z = (d["quantization"] if d["dtype"] != np.float32 else (1.0, 0))
        xin = x[:1] if d["dtype"] == np.float32 else np.clip(np.round(x[:1] / s + z), -128, 127).astype(d["dtype"])
        if tuple(d["shape"]) != xin.shape:
            xin = xin.transpose(0, 2, 3, 1)
        its[name] = (it, d["index"], xin)
    times: dict[str, list[float]] = {n: [] for n in its}
    for _ in range(5):  # warm-up
        for it, idx, xin in its.values():
            it.set_tensor(idx, xin)
            it.invoke()
    for _ in range(runs):  # interleaved: load changes hit both files alike
        for n, (it, idx, xin) in its.items():
            it.set_tensor(idx, xin)
            t0 = time.perf_counter()
            it.invoke()
            times[n].append((time.perf_counter() - t0) * 1e3)
    return {n: {"median_ms": statistics.median(v), "p90_ms": float(np.percentile(v, 90)), "runs": runs}
            for n, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "int8_vs_aiq.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from examples.zoo.images import batch, write_folder

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = write_folder(tmp / "calib", 2 * CALIB)
        manifest = export(tmp / "out", calib)
        arts = {a["target"]: tmp / "out" / a["path"] for a in manifest["artifacts"]}
        x = batch(CALIB, 224, 224).astype(np.float32)
        aiq_path = tmp / "aiq-int8.tflite"
        aiq_s = aiq_int8(arts["tflite"], x, aiq_path)
        files = {"edgeconv tflite-int8": arts["tflite-int8"], "ai-edge-quantizer static_wi8_ai8": aiq_path}
        lat = timed(files, x, args.runs)
        ops = {n: op_counts(p) for n, p in files.items()}
        sizes = {n: p.stat().st_size for n, p in files.items()}
    ratio = lat["edgeconv tflite-int8"]["median_ms"] / lat["ai-edge-quantizer static_wi8_ai8"]["median_ms"]
    int8 = next(a for a in manifest["artifacts"] if a["target"] == "tflite-int8")
    result = {
        "net": MODEL, "input": [1, 3, 224, 224], "engine": "ai-edge-litert, XNNPACK, 1 thread",
        "host_load_1min": os.getloadavg()[0], "latency": lat, "latency_ratio_edgeconv_over_aiq": ratio,
        "ops": ops, "size_bytes": sizes, "edgeconv_parity_passed": int8["parity"]["passed"],
        "edgeconv_parity": {"diffs": [{k: d.get(k) for k in ("reference", "max_steps", "rel_l2", "sim_rel_l2_vs_fp32",
                                                            "cosine", "passed", "reason", "warning")}
                                      for d in int8["parity"]["diffs"]], "layers": int8["parity"].get("layers")},
        "edgeconv_float_ops": int8.get("float_ops"), "aiq_quantize_s": aiq_s, "edgeconv_export_wall_s": manifest["_wall_s"],
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("latency", "latency_ratio_edgeconv_over_aiq", "ops")}, indent=2))


if __name__ == "__main__":
    main()
