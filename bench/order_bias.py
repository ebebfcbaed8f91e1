"""Does the order files are timed in bias bench/int8_vs_aiq.py's ratios? EfficientNet-B0 at 224²:
edgeconv's full-integer `tflite-int8` measured 3–5 % slower there than ai-edge-quantizer's static
int8 of the same fp32 file, yet the two files have the same ops, options, shapes, tensor types and
per-channel / per-tensor layout (only scale and zero-point values and weights differ), and XNNPACK
takes every op of both into one delegate node. Its `edgeconv cpu` file was the same bytes as the
`edgeconv npu` one, and measured 3 % faster: it ran one place later, the npu file right after the
fp32 one in every round.

Here four files — fp32 (litert-torch), edgeconv int8, a byte copy of it, aiq int8 — are timed in
ai-edge-litert (default XNNPACK delegate) at 1 and 2 threads, interleaved, under two schedules:
`fixed` (fp32, edgeconv, copy, aiq in every round: the old bench's order) and `balanced`
(`int8_vs_aiq.balanced_orders`: each file right after each other one equally often). Per file:
medians, and medians by the file that ran just before it.

    python bench/order_bias.py [--runs 60] [--workdir DIR]   → bench/results/order_bias.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REF = "bench.timm_nets:efficientnet_b0"


def build(work: Path, x: np.ndarray) -> dict[str, Path]:
    """The four files under `work`, reused when already there."""
    from bench.int8_vs_aiq import CALIB, aiq_int8, export
    from examples.zoo.images import write_folder

    files = {n: work / f"{n}.tflite" for n in ("fp32", "edgeconv", "edgeconv copy", "aiq")}
    if all(p.exists() for p in files.values()):
        return files
    m = export(REF, work / "out", write_folder(work / "calib", 2 * CALIB), "-t", "tflite-int8", "-t", "tflite")
    arts = {a["target"]: work / "out" / a["path"] for a in m["artifacts"]}
    shutil.copy(arts["tflite"], files["fp32"])
    shutil.copy(arts["tflite-int8"], files["edgeconv"])
    shutil.copy(arts["tflite-int8"], files["edgeconv copy"])
    aiq_int8(files["fp32"], x, files["aiq"])
    return files


def by_predecessor(paths: dict[str, Path], x: np.ndarray, runs: int, threads: int, balanced: bool) -> dict:
    """bench.int8_vs_aiq.timed's schedule, each invoke also filed under the file run just before it."""
    from ai_edge_litert.interpreter import Interpreter

    from bench.int8_vs_aiq import rounds

    its = {}
    for name, p in paths.items():
        it = Interpreter(model_path=str(p), num_threads=threads)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        if d["dtype"] == np.float32:
            xin = x[:1]
        else:
            s, z = d["quantization"]
            xin = np.clip(np.round(x[:1] / s + z), -128, 127).astype(d["dtype"])
        its[name] = (it, d["index"], xin if tuple(d["shape"]) == xin.shape else xin.transpose(0, 2, 3, 1))
    names = list(its)
    times: dict[str, list[float]] = {n: [] for n in names}
    after: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    prev = None
    for r, order in enumerate([names] * 3 + rounds(names, runs, balanced), start=-3):  # 3 warm-up rounds
        for n in order:
            it, idx, xin = its[n]
            it.set_tensor(idx, xin)
            t0 = time.perf_counter()
            it.invoke()
            dt = (time.perf_counter() - t0) * 1e3
            if r >= 0:
                times[n].append(dt)
                after[n].setdefault(prev, []).append(dt)
            prev = n
    med = {n: statistics.median(v) for n, v in times.items()}
    return {"median_ms": med, "over_aiq": {n: v / med["aiq"] for n, v in med.items()},
            "median_ms_after": {n: {p: statistics.median(v) for p, v in d.items()} for n, d in after.items()},
            "runs": len(times["aiq"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--workdir", help="build the files here (and reuse them); default a temporary folder")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "order_bias.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.int8_vs_aiq import CALIB, SIZE
    from examples.zoo._common import IMAGENET_MEAN, IMAGENET_STD
    from examples.zoo.images import batch

    x = batch(CALIB, SIZE, SIZE, IMAGENET_MEAN, IMAGENET_STD).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        files = build(work, x)
        same = files["edgeconv"].read_bytes() == files["edgeconv copy"].read_bytes()
        load = [os.getloadavg()[0]]
        res = {}
        for threads in (1, 2):
            for sched in ("fixed", "balanced"):
                res[f"{threads} thread(s), {sched}"] = by_predecessor(files, x, args.runs, threads, sched == "balanced")
                load.append(os.getloadavg()[0])
                print(f"{threads} thread(s), {sched}:", {n: round(v, 3) for n, v in
                                                      res[f"{threads} thread(s), {sched}"]["over_aiq"].items()}, flush=True)
    Path(args.out).write_text(json.dumps({
        "net": REF, "input": [1, 3, SIZE, SIZE], "engine": "ai-edge-litert 2.3.0, default XNNPACK delegate",
        "edgeconv_copy_same_bytes": same, "host_load_1min": load, "schedules": res}, indent=2))


if __name__ == "__main__":
    main()
