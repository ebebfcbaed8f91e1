"""edgeconv's int8 TFLite files against the other int8 routes a user has, same nets, same run.

Per net (default: the timm ConvNeXt-atto, ConvFormer-S18 and EfficientNet-B0 at 224², random init
with norms from real photos — bench/timm_nets.py), five files:

- `fp32`: edgeconv's `tflite` (litert-torch);
- `edgeconv npu`: edgeconv's `tflite-int8` (full-integer, the default, `--int8-for npu`);
- `edgeconv cpu`: edgeconv's `tflite-int8 --int8-for cpu` (float where XNNPACK has no int8 kernel);
- `aiq`: ai-edge-quantizer's static int8 recipe (`static_wi8_ai8`) applied to the fp32 file;
- `litert pt2e`: litert-torch's own PT2E route (its PT2EQuantizer, symmetric per-channel config).

All calibrated on the same crops of real photos. Timed in ai-edge-litert (default XNNPACK delegate)
at 1 and 2 threads, interleaved run by run so a busy host slows every file alike, each round in
another order so every file runs right after every other one equally often (`balanced_orders`);
medians. Each file's op list and float-op count (edgeconv's TFLite reader) are recorded beside its
latency.

    python bench/int8_vs_aiq.py [--nets REF,...] [--runs 30]   → bench/results/int8_vs_aiq.json
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
NETS = ("bench.timm_nets:convnext_atto", "bench.timm_nets:convformer_s18", "bench.timm_nets:efficientnet_b0")
CALIB = 32
SIZE = 224


def export(ref: str, out: Path, calib: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "edgeconv", "export", "--model", ref, "--calib", str(calib), "--calib-samples",
           str(CALIB), "--eval-samples", "16", "-o", str(out), "--json", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
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


def litert_pt2e(ref: str, x: np.ndarray, dst: Path) -> float:
    """litert-torch's documented PT2E route: its own quantizer, calibration, convert_pt2e, convert."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgeconv.models import load_model

    t0 = time.perf_counter()
    spec = load_model(ref)
    args = spec.example_inputs
    q = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(spec.module.eval(), args, strict=False).module(), q)
    with torch.no_grad():
        for i in range(len(x)):
            prepared(torch.from_numpy(x[i:i + 1]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, args, quant_config=QuantConfig(pt2e_quantizer=q)).export(str(dst))
    return time.perf_counter() - t0


def _input_name(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return next(iter(runner.get_input_details()))


def op_counts(path: Path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    as_written = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # ops as written, not one DELEGATE node
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=as_written)
    it.allocate_tensors()
    return dict(sorted(collections.Counter(op["op_name"] for op in it._get_ops_details()).items()))


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of n files in which each file runs right after each other one equally often (a Williams
    design: n orders for an even n, 2n for an odd n). Timed in one fixed order, the file right after
    the fp32 one ran slower for that place alone (presumably the fp32 run's 3x larger weights and activations
    evict the int8 file's): in the 2026-12 run EfficientNet-B0's edgeconv int8 file measured 3 %
    slower than the same bytes timed one place later (bench/order_bias.py)."""
    first = [0] + [(k + 1) // 2 if k % 2 else n - k // 2 for k in range(1, n)]  # 0, 1, n-1, 2, n-2, ...
    rows = [[(v + i) % n for v in first] for i in range(n)]
    return rows if n % 2 == 0 else rows + [r[::-1] for r in rows]


def rounds(names: list[str], runs: int, balanced: bool = True) -> list[list[str]]:
    """The order of each timed round: the `balanced_orders` in turn, `runs` rounded up to whole cycles
    of them; or, not `balanced`, `names`' own order every round."""
    orders = [[names[i] for i in o] for o in balanced_orders(len(names))] if balanced else [names]
    return [orders[r % len(orders)] for r in range(-(-runs // len(orders)) * len(orders))]


def timed(paths: dict[str, Path], x: np.ndarray, runs: int, threads: int, balanced: bool = True) -> dict[str, dict]:
    """Medians of `runs` (rounded up, `rounds`) invokes per file, interleaved round by round."""
    from ai_edge_litert.interpreter import Interpreter

    its = {}
    for name, p in paths.items():
        it = Interpreter(model_path=str(p), num_threads=threads)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        s, z = (d["quantization"] if d["dtype"] != np.float32 else (1.0, 0))
        xin = x[:1] if d["dtype"] == np.float32 else np.clip(np.round(x[:1] / s + z), -128, 127).astype(d["dtype"])
        if tuple(d["shape"]) != xin.shape:
            xin = xin.transpose(0, 2, 3, 1)
        its[name] = (it, d["index"], xin)
    for _ in range(3):  # warm-up
        for it, idx, xin in its.values():
            it.set_tensor(idx, xin)
            it.invoke()
    times: dict[str, list[float]] = {n: [] for n in its}
    for order in rounds(list(its), runs, balanced):  # interleaved: load changes hit every file alike
        for n in order:
            it, idx, xin = its[n]
            it.set_tensor(idx, xin)
            t0 = time.perf_counter()
            it.invoke()
            times[n].append((time.perf_counter() - t0) * 1e3)
    return {n: {"median_ms": statistics.median(v), "p90_ms": float(np.percentile(v, 90)), "runs": runs}
            for n, v in times.items()}


def _parity(a: dict) -> dict:
    diffs = {d["reference"]: d for d in a["parity"]["diffs"]}
    fp32, sim = diffs.get("torch-fp32", {}), diffs.get("torch-quant-sim", {})
    return {"passed": a["parity"]["passed"], "cosine_vs_fp32": fp32.get("cosine"),
            "top1_vs_fp32": fp32.get("top1_agreement"), "sim_rel_l2_vs_fp32": sim.get("sim_rel_l2_vs_fp32"),
            "rel_l2_vs_sim": sim.get("rel_l2"), "layers": {k: v for k, v in (a["parity"].get("layers") or {}).items()
                                                          if k in ("layers", "unmatched", "worst_steps", "passed")}}


def one_net(ref: str, tmp: Path, calib: Path, x: np.ndarray, runs: int) -> dict:
    from edgeconv.exporters.tflite.read import float_ops

    npu = export(ref, tmp / "npu", calib, "-t", "tflite-int8", "-t", "tflite")
    cpu = export(ref, tmp / "cpu", calib, "-t", "tflite-int8", "--int8-for", "cpu")
    arts = {a["target"]: tmp / "npu" / a["path"] for a in npu["artifacts"]}
    files = {"fp32": arts["tflite"], "edgeconv npu": arts["tflite-int8"],
             "edgeconv cpu": tmp / "cpu" / cpu["artifacts"][0]["path"],
             "aiq": tmp / "aiq.tflite", "litert pt2e": tmp / "pt2e.tflite"}
    seconds = {"aiq": aiq_int8(arts["tflite"], x, files["aiq"]),
               "litert pt2e": litert_pt2e(ref, x, files["litert pt2e"])}
    lat = {f"{t} thread(s)": timed(files, x, runs, t) for t in (1, 2)}
    return {
        "latency": lat,
        "ratios": {k: {"npu_over_aiq": v["edgeconv npu"]["median_ms"] / v["aiq"]["median_ms"],
                       "cpu_over_best_of_fp32_and_pt2e": v["edgeconv cpu"]["median_ms"]
                       / min(v["fp32"]["median_ms"], v["litert pt2e"]["median_ms"])} for k, v in lat.items()},
        "float_ops": {n: float_ops(p).count for n, p in files.items()},
        "ops": {n: op_counts(p) for n, p in files.items()},
        "size_bytes": {n: p.stat().st_size for n, p in files.items()},
        "edgeconv_parity": {"npu": _parity(next(a for a in npu["artifacts"] if a["target"] == "tflite-int8")),
                            "cpu": _parity(cpu["artifacts"][0])},
        "quantize_s": seconds, "export_wall_s": {"npu": npu["_wall_s"], "cpu": cpu["_wall_s"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "int8_vs_aiq.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from examples.zoo._common import IMAGENET_MEAN, IMAGENET_STD
    from examples.zoo.images import batch, write_folder

    out = Path(args.out)
    results = json.loads(out.read_text()).get("nets", {}) if out.exists() else {}
    x = batch(CALIB, SIZE, SIZE, IMAGENET_MEAN, IMAGENET_STD).astype(np.float32)
    for ref in args.nets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            calib = write_folder(tmp / "calib", 2 * CALIB)
            results[ref] = one_net(ref, tmp, calib, x, args.runs)
        out.write_text(json.dumps({"engine": "ai-edge-litert 2.3.0, default XNNPACK delegate, interleaved runs in balanced orders",
                                   "input": [1, 3, SIZE, SIZE], "host_load_1min": os.getloadavg()[0],
                                   "nets": results}, indent=2))
        print(ref, json.dumps(results[ref]["ratios"]), json.dumps(results[ref]["float_ops"]), flush=True)


if __name__ == "__main__":
    main()
