"""RepVGG-A0-shaped net: train form vs merged form latency in ai-edge-litert fp32, side by side.

    python bench/reparam_bench.py [--size 224] [--iters 20]

Three .tflite files from one model (random weights, BN statistics randomized so merging is not
trivially exact): the train form (3×3 + 1×1 + identity branches, eval BN), the protocol-merged
form (`reparameterize_model`), and the graph-pass-merged form (`reparam-merge` on a copy whose
merge methods were removed). Each is converted with `litert_torch.convert(model.eval(), (x,))`,
run in the ai-edge-litert Interpreter on 1 and on 2 threads, interleaved, `--iters` timed invokes after 3
warm-ups; medians. Output parity of each merged .tflite against the train-form .tflite is
recorded. Results: bench/results/reparam.json.
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "reparam.json"


def _randomize_bn(model, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model


def _strip(model):
    from edgeconv.prepare.reparam.protocol import METHODS

    for m in model.modules():
        if any(hasattr(type(m), n) for n in METHODS):
            m.__class__ = type(f"Bare{type(m).__name__}", (type(m),), {n: None for n in METHODS})
    return model


def _tflite(module, x, path: Path) -> Path:
    import litert_torch
    import torch
    from litert_torch import progress

    progress.console.quiet = True  # litert-torch prints a task tree per conversion
    # A GraphModule from ExportedProgram.module() refuses .eval(); it is already an eval capture.
    m = module if isinstance(module, torch.fx.GraphModule) else module.eval()
    litert_torch.convert(m, (x,)).export(str(path))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()

    import numpy as np
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from edgeconv.graph import capture
    from edgeconv.passes.reparam_merge import reparam_merge
    from edgeconv.prepare.reparam.blocks import repvgg_a0
    from edgeconv.prepare.reparam.protocol import reparameterize_model
    from edgeconv.results import atomic_write

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = _randomize_bn(repvgg_a0()).eval()
    x = torch.randn(1, 3, a.size, a.size)
    merged, report = reparameterize_model(model, example_inputs=(x,))
    passed = reparam_merge(capture(_strip(copy.deepcopy(model)), (x,)), None)
    forms = {"train": model, "merged-protocol": merged, "merged-graph-pass": passed.graph.module()}

    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: _tflite(m, x, Path(tmp) / f"{k}.tflite") for k, m in forms.items()}
        sizes = {k: p.stat().st_size for k, p in paths.items()}
        ops = {k: dict(collections.Counter(o["op_name"] for o in Interpreter(model_path=str(p))._get_ops_details()))
               for k, p in paths.items()}  # noqa: SLF001 — the only op-level view the Python API gives
        outs, med, samples = {}, {}, {}
        for threads in a.threads:
            its = {}
            for k, p in paths.items():
                it = Interpreter(model_path=str(p), num_threads=threads)
                it.allocate_tensors()
                it.set_tensor(it.get_input_details()[0]["index"], x.numpy())
                its[k] = it
            for k, it in its.items():
                for _ in range(3):
                    it.invoke()
                outs[k] = it.get_tensor(it.get_output_details()[0]["index"]).copy()
            times: dict[str, list[float]] = {k: [] for k in its}
            for _ in range(a.iters):  # interleaved: load on the shared machine hits every form alike
                for k, it in its.items():
                    t0 = time.perf_counter()
                    it.invoke()
                    times[k].append(time.perf_counter() - t0)
            med[f"{threads}-thread"] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            samples[f"{threads}-thread"] = {k: [t * 1e3 for t in v] for k, v in times.items()}
    ref = outs["train"]
    speedups = {f"{t}-thread": {"protocol": m["train"] / m["merged-protocol"],
                                "graph_pass": m["train"] / m["merged-graph-pass"]} for t, m in
                ((k.split("-")[0], v) for k, v in med.items())}
    result = {
        "command": "python bench/reparam_bench.py " + " ".join(sys.argv[1:]),
        "model": "RepVGG-A0 shape (1-2-4-14-1 blocks, widths 48-48-96-192-1280), 1x3x%dx%d" % (a.size, a.size),
        "runtime": "ai-edge-litert Interpreter (XNNPACK), fp32", "iters": a.iters,
        "machine": platform.machine(), "torch": torch.__version__,
        "protocol_calls": len(report.calls), "graph_pass_merges": len(passed.notes),
        "tflite_ops": ops,
        "median_ms": med, "file_bytes": sizes, "speedup": speedups,
        "target_speedup": 1.5,
        "max_rel_diff_vs_train_tflite": {k: float(np.abs(v - ref).max() / np.abs(ref).max())
                                         for k, v in outs.items() if k != "train"},
        "samples_ms": samples,
    }
    result["meets_target"] = min(min(v.values()) for v in speedups.values()) >= 1.5
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(OUT, json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "samples_ms"}, indent=2))


if __name__ == "__main__":
    main()
