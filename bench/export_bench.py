"""Spine benchmark: fp32 vs int8 latency on this host, side by side in one process, and export
wall time per target, for the embedded demo and an in-repo MobileNetV2 (224×224, random weights).

    python bench/export_bench.py            → bench/results/export_bench.json

Latency is measured by edgeconv's own `host` device backend (ai-edge-litert with XNNPACK,
onnxruntime CPU), rounds interleaved across artifacts so machine noise hits all alike; medians of
all samples. These are x86 host numbers, not phone numbers.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ("tflite", "tflite-int8", "onnx", "onnx-int8")
MODELS = {"demo": (None, "demo", 400), "mobilenet-v2-224": ("examples.mobilenet_v2:mobilenet_v2", "random", 30)}


def export_model(ref: str | None, calib: str, out: Path) -> dict:
    from edgeconv.config import CalibSpec, ExportOptions, QuantOptions
    from edgeconv.models import load_model
    from edgeconv.pipeline import export

    spec = load_model(ref)
    opts = ExportOptions(targets=TARGETS, out_dir=str(out), calib=CalibSpec(source=calib),
                         quant=QuantOptions(samples=32 if calib == "random" else 128), eval_samples=32)
    t0 = time.perf_counter()
    m = export(spec, opts)
    total = time.perf_counter() - t0
    shared = {s.stage: s.seconds for s in m.stages if not s.stage.startswith(("export:", "parity:"))}
    return {"manifest": m, "total_s": round(total, 2), "shared_stage_s": shared,
            "export_s": {s.stage.split(":")[1]: s.seconds for s in m.stages if s.stage.startswith("export:")}}


def measure(paths: dict[str, Path], runs: int, rounds: int = 3) -> dict:
    from edgeconv.devices.base import ProfileOptions
    from edgeconv.devices.catalog import backend_for, resolve

    device = resolve("host")
    backend = backend_for(device)
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for target, path in paths.items():
            for threads in (1, 2) if target.startswith("tflite") else (1, 2):
                rep = backend.measure(path, device, ProfileOptions(threads=threads, runs=runs, warmup=3, per_op=False))
                samples.setdefault(f"{target}@{threads}t", []).extend(rep.samples_ms)
    return {k: {"median_ms": round(statistics.median(v), 4), "n": len(v)} for k, v in samples.items()}


def main() -> None:
    results = {"host": __import__("platform").processor() or __import__("platform").machine(), "models": {}}
    for name, (ref, calib, runs) in MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            ex = export_model(ref, calib, Path(tmp))
            m = ex.pop("manifest")
            paths = {a.target: Path(tmp) / a.path for a in m.artifacts}
            lat = measure(paths, runs)
            ratios = {f"{fmt}-int8/{fmt} @{t}t": round(lat[f"{fmt}-int8@{t}t"]["median_ms"] / lat[f"{fmt}@{t}t"]["median_ms"], 3)
                      for fmt in ("tflite", "onnx") for t in (1, 2)}
            results["models"][name] = {
                **ex, "latency": lat, "int8_over_fp32": ratios,
                "size_kb": {a.target: round(a.size_bytes / 1024, 1) for a in m.artifacts},
                "accuracy": {a.target: a.parity.accuracy for a in m.artifacts},
                "parity_passed": {a.target: a.parity.passed for a in m.artifacts},
            }
        print(name, json.dumps(results["models"][name]["int8_over_fp32"]), flush=True)
    out = ROOT / "bench" / "results" / "export_bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
