"""Why a ViT's int8 program is far from fp32 here: the class-token readout.

The same random-init timm ViT (norms from real photos, bench/timm_nets.py), quantized by edgeconv's
default PTQ (min-max, per-channel weights, calibrated on real photo crops), read out two ways: by
its class token (timm's default) and by average pooling over the tokens (`global_pool='avg'`, the
same weights). Per readout: the int8 simulation's relative L2 error and top-1 agreement against
fp32 on held-out crops. A random-init class token is a small row beside the patch rows, so one
per-tensor int8 scale leaves it few levels, and the head reads only that row.

    python bench/vit_readout.py [--nets deit_tiny_patch16_224,...]   → bench/results/vit_readout.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE, CALIB, EVAL = 64, 32, 16


def sim_and_fp32(spec, x: np.ndarray, calib: int, method: str = "min-max") -> tuple[np.ndarray, np.ndarray]:
    """edgeconv's int8 simulation of `spec` (per-channel weights, activations calibrated by `method`,
    the default min-max) on x[:calib], and the fp32 net, each on the held-out x[calib:]: (int8
    outputs, fp32 outputs)."""
    import torch

    from edgeconv import registrations
    from edgeconv.calib.data import DataSet
    from edgeconv.config import CalibMethod, ExportOptions, QuantOptions
    from edgeconv.context import Context
    from edgeconv.graph import capture
    from edgeconv.passes.manager import run_passes
    from edgeconv.pipeline import quantize_steps
    from edgeconv.quant.program import folded_simulation

    registrations.load()
    options = ExportOptions(quant=QuantOptions(samples=calib, method=CalibMethod(method)), eval_samples=len(x) - calib)
    ctx = Context(options=options, model=spec, calib=DataSet(x[:calib], None, "photos"))
    graph = run_passes(capture(spec.module, spec.example_inputs), ctx, ("fold-conv-bn", "quantize", "cleanup"),
                       quantize_steps(None))
    sim = folded_simulation(graph)
    with torch.no_grad():
        held = torch.from_numpy(x[calib:])
        return np.concatenate([sim(held[i:i + 1]).numpy() for i in range(len(held))]), spec.module(held).numpy()


def measure(name: str, pool: str | None) -> dict:
    from bench.timm_nets import timm_spec
    from examples.zoo.images import batch

    spec = timm_spec(name, SIZE, **({"global_pool": pool} if pool else {}))
    x = batch(CALIB + EVAL, SIZE, SIZE, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=0).astype(np.float32)
    out, ref = sim_and_fp32(spec, x, CALIB)
    return {"readout": pool or "class token", "sim_rel_l2_vs_fp32": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
            "sim_top1_vs_fp32": float((out.argmax(1) == ref.argmax(1)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="deit_tiny_patch16_224")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/vit_readout.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    res = {"input": SIZE, "calibration": f"{CALIB} real photo crops (examples/zoo/images.py)", "held_out": EVAL,
           "nets": {n: [measure(n, None), measure(n, "avg")] for n in args.nets.split(",")}}
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["nets"], indent=1))


if __name__ == "__main__":
    main()
