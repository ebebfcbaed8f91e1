"""Sparse benchmark: what tflite-sparse buys and whether XNNPACK really runs it sparse.

    python bench/sparse_bench.py            → bench/results/sparse_bench.json

1. Structure: MobileNetV2-224 (examples.mobilenet_v2, random weights) and the small zoo model,
   pruned to 90 % in 4x1 blocks: checker verdict, DENSIFY count, artifact sizes (dense twin vs
   sparse fp32 vs sparse fp16).
2. x86 host, side by side in one process: dense twin and sparse artifact outputs and latencies
   (ai-edge-litert + XNNPACK, 1 thread, rounds interleaved, medians). XNNPACK's sparse path is off
   on x86 with AVX, so equal outputs and ~equal latency are EXPECTED here.
3. Emulated arm64 (when the rootfs of .ci/arm64-rootfs.sh exists): max relative output difference
   of each sparse artifact against its dense twin — low-bit and non-zero when the sparse path
   engaged, exactly 0 when it did not. Emulated timings are recorded but are NOT latency.
4. Accuracy on sklearn digits (the demo's held-out split): the zoo MobileNetV2-shaped net trained
   dense, and the embedded demo (shipped weights), each pruned to 80 % one-shot and with gradual
   pruning during fine-tuning (cubic schedule); held-out top-1 in torch and of the tflite-sparse
   artifact in ai-edge-litert, and the artifact's size against the dense fp32 .tflite.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "bench" / "results" / "sparse_bench.json"


def pruned(module, args, sparsity: float):
    from edgeconv.graph import capture
    from edgeconv.passes.fold_bn import fold_conv_bn
    from edgeconv.passes.sparsify import SparseOptions, prune

    graph = fold_conv_bn(capture(module, args), None).graph
    return prune(graph, SparseOptions(sparsity)).graph


def host_latency(paths: dict[str, Path], x: np.ndarray, rounds: int) -> dict[str, dict]:
    """Interleaved rounds so machine noise hits every artifact alike; 1 thread."""
    from edgeconv.exporters.tflite.runtime import TfliteRunner

    runners = {k: TfliteRunner(p, threads=1) for k, p in paths.items()}
    for r in runners.values():
        r(x[:1])  # warm-up (XNNPACK packs weights on the first run)
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            t0 = time.perf_counter()
            r(x[:1])
            samples[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"p50_ms": round(statistics.median(v), 3), "min_ms": round(min(v), 3), "runs": len(v)}
            for k, v in samples.items()}


def structure_and_host(name: str, module, shape: tuple[int, ...], work: Path, rounds: int) -> dict:
    import torch

    from edgeconv.exporters.tflite.runtime import TfliteRunner
    from edgeconv.exporters.tflite.sparse import convert_dense, rewrite
    from edgeconv.exporters.tflite.sparse_check import check_tflite

    g = pruned(module, (torch.zeros(shape),), 0.9)
    dense = convert_dense(g.module(), g.example_inputs)
    p = {k: work / f"{name}-{k}.tflite" for k in ("twin", "sparse", "sparse-fp16")}
    rewrite(dense, p["twin"], encode=False)
    info = rewrite(dense, p["sparse"])
    rewrite(dense, p["sparse-fp16"], fp16=True)
    rep = check_tflite(p["sparse"])
    x = np.random.default_rng(0).standard_normal((4, *shape[1:])).astype(np.float32)
    outs = {k: TfliteRunner(v)(x) for k, v in p.items()}
    lat = host_latency({k: p[k] for k in ("twin", "sparse")}, x, rounds)
    return {
        "model": name, "input": list(shape), "sparsity": 0.9, "block": "4x1",
        "eligible": rep.eligible, "findings": [f.to_dict() for f in rep.findings],
        "densify_ops": rep.densify_ops, "pruned_layers": len(info.encoded), "zeros_1x1": round(rep.zeros_1x1, 4),
        "block_sizes": sorted({layer.block for layer in rep.layers}),
        "size_bytes": {k: v.stat().st_size for k, v in p.items()},
        "x86_host": {
            "note": "XNNPACK's sparse path is disabled on x86 with AVX: equal outputs and equal latency expected",
            "sparse_vs_twin_max_abs": float(np.abs(outs["sparse"] - outs["twin"]).max()),
            "fp16_vs_twin_max_abs": float(np.abs(outs["sparse-fp16"] - outs["twin"]).max()),
            "latency": lat, "sparse_over_twin_p50": round(lat["sparse"]["p50_ms"] / lat["twin"]["p50_ms"], 3),
        },
        "_paths": {k: str(v) for k, v in p.items()},
    }


def arm64_evidence(work: Path) -> dict:
    import torch

    from edgeconv.devices import arm64
    from edgeconv.exporters.tflite.sparse import convert_dense, rewrite
    from edgeconv.exporters.tflite.sparse_check import check_tflite
    from zoo_sparse import INPUT_SHAPE, mobilenet_v2ish

    why = arm64.unavailable()
    if why:
        return {"skipped": why}
    cases = {"eligible": ({}, 0.9), "tf_same_padding": ({"tf_same_padding": True}, 0.9),
             "unsupported_op_3x3_conv": ({"with_unsupported_op": True}, 0.9), "low_sparsity_50": ({}, 0.5)}
    models, verdict = {}, {}
    for case, (kw, s) in cases.items():
        g = pruned(mobilenet_v2ish(**kw), (torch.zeros(INPUT_SHAPE),), s)
        dense = convert_dense(g.module(), g.example_inputs)
        for kind, enc in (("sparse", True), ("twin", False)):
            models[f"{case}:{kind}"] = work / f"arm-{case}-{kind}.tflite"
            rewrite(dense, models[f"{case}:{kind}"], encode=enc)
        verdict[case] = check_tflite(models[f"{case}:sparse"]).eligible
    x = np.random.default_rng(0).standard_normal((4, *INPUT_SHAPE[1:])).astype(np.float32)
    outs, times = arm64.run(models, x)
    res = {}
    for case in cases:
        a, b = outs[f"{case}:sparse"], outs[f"{case}:twin"]
        res[case] = {"checker_eligible": verdict[case],
                     "max_rel_diff_vs_dense_twin": float(np.abs(a - b).max() / np.abs(b).max()),
                     "bit_identical": bool(np.array_equal(a, b)),
                     "emulated_ms_p50_NOT_latency": {k: round(statistics.median(times[f"{case}:{k}"]), 1)
                                                     for k in ("sparse", "twin")}}
    return {"model": "zoo MobileNetV2-shaped 64x64", "runtime": "ai-edge-litert 2.3.0 aarch64 under qemu-user",
            "cases": res}


def arm64_mnv2(paths: dict[str, str]) -> dict:
    from edgeconv.devices import arm64

    if arm64.unavailable():
        return {"skipped": arm64.unavailable()}
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    outs, times = arm64.run({"sparse": Path(paths["sparse"]), "twin": Path(paths["twin"])}, x)
    a, b = outs["sparse"], outs["twin"]
    return {"max_rel_diff_vs_dense_twin": float(np.abs(a - b).max() / np.abs(b).max()),
            "bit_identical": bool(np.array_equal(a, b)),
            "emulated_ms_NOT_latency": {k: [round(t, 1) for t in v] for k, v in times.items()}}


def _digits():
    import torch

    from edgeconv.demo.train import load_digits, preprocess, split_indices

    images, labels = load_digits()
    tr, held = split_indices(labels)
    return (torch.from_numpy(preprocess(images[tr])), torch.from_numpy(labels[tr]),
            preprocess(images[held]), labels[held])


def _top1(model, xh: np.ndarray, yh: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((model.eval()(torch.from_numpy(xh)).argmax(1).numpy() == yh).mean())


def _train(model, xt, yt, epochs: int, lr: float, pruner=None, seed: int = 0):
    """Seeded AdamW + one-cycle on the digits training split (random shifts); with a pruner, its
    masks are updated before and re-applied after every step."""
    import torch

    from edgeconv.demo.train import BATCH, _shift

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(xt) + BATCH - 1) // BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    step = 0
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(xt), generator=gen).split(BATCH):
            if pruner is not None:
                pruner.step(step)
            loss = torch.nn.functional.cross_entropy(model(_shift(xt[batch], gen)), yt[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if pruner is not None:
                pruner.apply()
            step += 1
    return model.eval()


def accuracy(work: Path, name: str, make, dense_epochs: int, prune_epochs: int, lr: float) -> dict:
    """Dense model → 80 % one-shot vs 80 % gradual (cubic schedule over the first 60 % of the
    fine-tuning steps), held-out top-1 in torch and of the tflite-sparse artifact."""
    import copy

    import torch

    from edgeconv.demo.train import BATCH
    from edgeconv.exporters.tflite.runtime import TfliteRunner
    from edgeconv.exporters.tflite.export import convert
    from edgeconv.exporters.tflite.sparse import lower
    from edgeconv.passes.sparsify import GradualPruner, PolynomialSchedule, zero_fraction
    from edgeconv.exporters.tflite.sparse_check import check_tflite

    xt, yt, xh, yh = _digits()
    dense = make()
    if dense_epochs:
        dense = _train(dense, xt, yt, dense_epochs, lr)
    dense_acc = _top1(dense, xh, yh)
    oneshot = copy.deepcopy(dense)
    GradualPruner(oneshot, PolynomialSchedule(final=0.8, end_step=1, frequency=1)).step(1)
    steps = prune_epochs * ((len(xt) + BATCH - 1) // BATCH)
    sched = PolynomialSchedule(final=0.8, end_step=int(steps * 0.6), frequency=max(1, steps // 40))
    model = copy.deepcopy(dense)
    pruner = GradualPruner(model, sched)
    model = _train(model, xt, yt, prune_epochs, lr / 5, pruner, seed=1)
    gradual_acc = _top1(model, xh, yh)

    args = (torch.zeros(1, *xh.shape[1:]),)
    dense_path, sparse_path = work / f"{name}-dense.tflite", work / f"{name}-sparse.tflite"
    convert(dense, args, dense_path)
    g = pruned(model, args, 0.8)  # already pruned: prune() keeps the same blocks; BN folded
    info = lower(g.module(), g.example_inputs, sparse_path)
    rep = check_tflite(sparse_path)
    tfl_acc = float((TfliteRunner(sparse_path)(xh).argmax(1) == yh).mean())
    return {
        "model": name, "data": "sklearn digits, edgeconv demo split (held-out never trained on)",
        "heldout_samples": int(len(yh)), "sparsity": 0.8, "block": "4x1",
        "zeros_in_pruned_layers": round(zero_fraction([m.weight.detach() for _, m in pruner.targets]), 4),
        "dense_train_epochs": dense_epochs, "prune_finetune_epochs": prune_epochs, "schedule": sched.to_dict(),
        "top1": {"dense_torch": dense_acc, "oneshot_80_torch": _top1(oneshot, xh, yh),
                 "gradual_80_torch": gradual_acc, "gradual_80_tflite_sparse": tfl_acc},
        "tflite_sparse_minus_dense_points": round(100 * (tfl_acc - dense_acc), 2),
        "artifact": {"eligible": rep.eligible, "densify_ops": rep.densify_ops,
                     "dense_fp32_tflite_bytes": dense_path.stat().st_size, "sparse_tflite_bytes": sparse_path.stat().st_size,
                     "size_reduction": round(1 - sparse_path.stat().st_size / dense_path.stat().st_size, 4),
                     "notes": list(info.notes())},
    }


def main() -> None:
    import torch

    from edgeconv.demo import demo
    from examples.mobilenet_v2 import mobilenet_v2
    from edgeconv.results import atomic_write
    from zoo_sparse import INPUT_SHAPE, mobilenet_v2ish

    torch.set_num_threads(1)
    quick = "--quick" in sys.argv
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = mobilenet_v2()
        mnv2 = structure_and_host("mobilenet-v2-224", spec.module, tuple(spec.input_shape), work, 20 if quick else 60)
        small = structure_and_host("zoo-mobilenet-v2ish-64", mobilenet_v2ish(), INPUT_SHAPE, work, 50 if quick else 200)
        mnv2["arm64_emulated"] = arm64_mnv2(mnv2.pop("_paths"))
        small.pop("_paths")
        result = {
            "structure_and_x86_host": [mnv2, small],
            "arm64_emulated_engaged_path": arm64_evidence(work),
            "accuracy": [
                accuracy(work, "zoo MobileNetV2-shaped (32x32 digits)", lambda: mobilenet_v2ish(num_classes=10),
                         4 if quick else 12, 3 if quick else 10, 1e-2),
                accuracy(work, "edgeconv demo (DemoNet, shipped weights)", lambda: demo().module,
                         0, 5 if quick else 25, 2.5e-2),
            ],
            "host": {"threads": 1, "note": "x86 host numbers, not phone numbers"},
            "wall_s": None,
        }
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(OUT, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
