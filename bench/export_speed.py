"""Export wall time, stage by stage, beside litert-torch's own routes on the same net in the same run.

    python bench/export_speed.py                       # MobileNetV2 224², 3 repeats → bench/results/export_speed.json
    python bench/export_speed.py --repeats 1 --no-single   # quick: one six-target run and the two litert routes

Per net and repeat, in one process:
- edgeconv, all targets in one run (`--target`, default the six of issue 13), parity included: the
  manifest's per-stage seconds and the run's wall time;
- edgeconv, one run per TFLite target alone (`tflite`, `tflite-int8`): what a user asking for that
  one artifact waits, parity included (skip with --no-single);
- litert-torch fp32: `litert_torch.convert(model.eval(), args)` + export;
- litert-torch int8, its PT2E route: `prepare_pt2e` with litert-torch's `PT2EQuantizer`
  (symmetric per-channel config), the same calibration samples one at a time, `convert_pt2e`,
  `litert_torch.convert(..., quant_config=QuantConfig(pt2e_quantizer=...))` + export.
Medians over the repeats. Ratios: edgeconv single-target run / litert-torch route of the same
precision, and edgeconv's conversion stage alone / litert-torch's conversion. The machine's load
average is recorded at start and end: on a shared 2-core host, timings above a load of ~2.5 are noise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NETS = {"mobilenet-v2-224": "examples.mobilenet_v2:mobilenet_v2"}
SIX = ("onnx", "onnx-int8", "tflite", "tflite-int8", "coreml", "coreml-w8a8")
SINGLE = ("tflite", "tflite-int8")


def edgeconv_run(ref: str, targets: tuple[str, ...], calib: int, evals: int, out: Path) -> dict:
    from edgeconv.config import CalibSpec, ExportOptions, QuantOptions
    from edgeconv.models import load_model
    from edgeconv.pipeline import export

    spec = load_model(ref)
    opts = ExportOptions(targets=targets, out_dir=str(out), calib=CalibSpec(source="random"),
                         quant=QuantOptions(samples=calib), eval_samples=evals)
    t0 = time.perf_counter()
    m = export(spec, opts)
    total = time.perf_counter() - t0
    stages: dict[str, float] = {}
    for s in m.stages:  # a chain's stage may appear twice (cleanup of the float and of the int8 chain)
        key, i = s.stage, 2
        while key in stages:
            key, i = f"{s.stage}#{i}", i + 1
        stages[key] = s.seconds
    return {"total_s": total, "stages": stages, "eval_samples": m.calibration["eval_samples"],
            "calib_samples": m.calibration["samples"],
            "parity_passed": {a.target: a.parity.passed for a in m.artifacts}}


def litert_fp32(ref: str, out: Path) -> dict:
    import litert_torch

    from edgeconv.models import load_model

    spec = load_model(ref)
    t0 = time.perf_counter()
    model = litert_torch.convert(spec.module.eval(), spec.example_inputs)
    model.export(str(out / "litert-fp32.tflite"))
    return {"total_s": time.perf_counter() - t0}


def litert_int8(ref: str, calib: int, out: Path) -> dict:
    import litert_torch
    import numpy as np
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgeconv.calib.sources import load_data
    from edgeconv.config import CalibSpec
    from edgeconv.models import load_model

    spec = load_model(ref)
    data = load_data(CalibSpec(source="random"), spec.input_shape, model_mean=spec.mean, model_std=spec.std, count=calib, seed=0)
    parts = {}
    t0 = time.perf_counter()
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    module = torch.export.export(spec.module.eval(), spec.example_inputs).module()
    module = prepare_pt2e(module, quantizer)
    parts["capture_prepare_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    with torch.no_grad():
        for i in range(len(data)):
            module(torch.from_numpy(np.ascontiguousarray(data.x[i:i + 1])))
    parts["calibrate_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    module = convert_pt2e(module, fold_quantize=False)
    parts["convert_pt2e_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    model = litert_torch.convert(module, spec.example_inputs, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    model.export(str(out / "litert-int8.tflite"))
    parts["litert_convert_s"] = time.perf_counter() - t1
    return {"total_s": time.perf_counter() - t0, "calib_samples": len(data), **parts}


def _median(runs: list[dict]) -> dict:
    """Median of every numeric field over the repeats (nested one level for stage dicts)."""
    out: dict = {}
    for key, first in runs[0].items():
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            out[key] = round(statistics.median(r[key] for r in runs), 3)
        elif isinstance(first, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in first.values()):
            out[key] = {k: round(statistics.median(r[key][k] for r in runs if k in r[key]), 3) for k in first}
        else:
            out[key] = first
    return out


def bench_net(name: str, ref: str, args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {}
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            jobs = [("edgeconv:" + "+".join(args.target), lambda: edgeconv_run(ref, tuple(args.target), args.calib_samples, args.eval_samples, tmp / "all"))]
            if not args.no_single:
                jobs += [(f"edgeconv:{t}", lambda t=t: edgeconv_run(ref, (t,), args.calib_samples, args.eval_samples, tmp / t))
                         for t in SINGLE]
            # edgeconv calibrates on at most half the samples it loads (the rest check parity): the
            # litert-torch route calibrates on exactly as many
            n_cal = min(args.calib_samples, (args.calib_samples + args.eval_samples) // 2)
            jobs += [("litert-torch:fp32", lambda: litert_fp32(ref, tmp)),
                     ("litert-torch:int8-pt2e", lambda: litert_int8(ref, n_cal, tmp))]
            for key, job in jobs:
                res = job()
                res["load_average"] = round(os.getloadavg()[0], 2)
                runs.setdefault(key, []).append(res)
                print(f"{name} repeat {rep + 1}/{args.repeats} {key}: {res['total_s']:.1f} s (load {res['load_average']})", flush=True)
    med = {k: _median(v) for k, v in runs.items()}
    all_key = "edgeconv:" + "+".join(args.target)
    stages = med[all_key]["stages"]
    fp32, int8 = med["litert-torch:fp32"]["total_s"], med["litert-torch:int8-pt2e"]["total_s"]
    ratios = {}
    if "export:tflite" in stages:
        ratios["tflite conversion stage / litert-torch convert (fp32)"] = round(stages["export:tflite"] / fp32, 3)
    if "export:tflite-int8" in stages:
        ratios["tflite-int8 conversion stage / litert-torch convert with quant_config"] = round(
            stages["export:tflite-int8"] / med["litert-torch:int8-pt2e"]["litert_convert_s"], 3)
        if "quantize" in stages:
            ratios["tflite-int8 (quantize stage + conversion stage) / litert-torch PT2E route"] = round(
                (stages["quantize"] + stages["export:tflite-int8"]) / int8, 3)
    for t, ref_s in (("tflite", fp32), ("tflite-int8", int8)):
        if f"edgeconv:{t}" in med:
            ratios[f"edgeconv -t {t} whole run, parity included / litert-torch route"] = round(
                med[f"edgeconv:{t}"]["total_s"] / ref_s, 3)
    return {"runs": med, "ratios": ratios, "repeats": args.repeats}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", action="append", help=f"a name ({', '.join(NETS)}) or package.module:factory; repeatable")
    p.add_argument("--target", action="append", help="edgeconv targets of the all-in-one run (default: the six)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--calib-samples", type=int, default=64)
    p.add_argument("--eval-samples", type=int, default=32)
    p.add_argument("--no-single", action="store_true", help="skip the single-target edgeconv runs")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "export_speed.json"))
    args = p.parse_args(argv)
    args.target = args.target or list(SIX)
    nets = args.net or list(NETS)
    results = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "load_average_start": [round(v, 2) for v in os.getloadavg()],
               "calib_samples": args.calib_samples, "eval_samples": args.eval_samples,
               "targets": args.target, "nets": {}}
    for net in nets:
        ref = NETS.get(net, net)
        results["nets"][net] = bench_net(net, ref, args)
        print(net, json.dumps(results["nets"][net]["ratios"], indent=1), flush=True)
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
