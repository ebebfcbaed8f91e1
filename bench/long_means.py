"""What writing a long int8 mean in two costs in accuracy (`calib.rewrites.long_means_in_two`).

XNNPACK's x86 int8 MEAN (ai-edge-litert 2.3.0) saturates over more than 8192 contiguous values on
CPUs without AVX-512; edgeconv writes such a mean (a GroupNorm(1)'s, over C·H·W) as a spatial mean,
then a mean over C, which adds one int8 rounding of the partial means. Per net and input size, with
the split and without (CONTIGUOUS_MEAN_LIMIT = None): edgeconv's int8 simulation (per-channel
weights, min-max, 32 real photo crops) against fp32 on 16 held-out crops — rel-L2, cosine, top-1
agreement — and how many means were split.

    python bench/long_means.py [--nets poolformerv2_s12@64,poolformerv2_s12@224]  → bench/results/long_means.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NETS = ("poolformerv2_s12@64", "poolformer_s12@64", "poolformerv2_s12@224")
CALIB, EVAL = 32, 16


def measure(name: str, size: int, limit: int | None) -> dict:
    from bench.timm_nets import timm_spec
    from bench.vit_readout import sim_and_fp32
    from edgeconv.calib import rewrites
    from examples.zoo.images import batch

    spec = timm_spec(name, size)
    before, rewrites.CONTIGUOUS_MEAN_LIMIT = rewrites.CONTIGUOUS_MEAN_LIMIT, limit
    split = []
    original = rewrites.long_means_in_two

    def counting(gm):  # the rewrite as REWRITES runs it, counted
        done = original(gm)
        split.extend(done)
        return done

    rewrites.REWRITES = tuple(counting if r is original else r for r in rewrites.REWRITES)
    try:
        x = batch(CALIB + EVAL, size, size, spec.mean, spec.std, seed=0).astype(np.float32)
        out, ref = sim_and_fp32(spec, x, CALIB)
    finally:
        rewrites.CONTIGUOUS_MEAN_LIMIT = before
        rewrites.REWRITES = tuple(original if r is counting else r for r in rewrites.REWRITES)
    cos = float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref)))
    return {"means_split": len(split), "sim_rel_l2_vs_fp32": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
            "sim_cosine_vs_fp32": cos, "sim_top1_vs_fp32": float((out.argmax(1) == ref.argmax(1)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help="timm names, each @input size")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "long_means.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from edgeconv.calib import rewrites

    torch.set_num_threads(1)
    res = {"command": "python bench/long_means.py " + " ".join(sys.argv[1:]),
           "host": platform.processor() or platform.machine(),
           "calibration": f"{CALIB} real photo crops, min-max", "held_out": EVAL,
           "limit": rewrites.CONTIGUOUS_MEAN_LIMIT, "nets": {}}
    for item in args.nets.split(","):
        name, size = item.split("@")
        res["nets"][item] = {"split": measure(name, int(size), rewrites.CONTIGUOUS_MEAN_LIMIT),
                             "whole": measure(name, int(size), None)}
        print(item, json.dumps(res["nets"][item]), flush=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
