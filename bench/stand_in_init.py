"""How much of the catalog's int8 loss is the stand-in's initialisation: timm's training-start values
for layer scales (a constant 1e-5/1e-6: every block ≈ identity) and class tokens (std 1e-6: a row
far below the patch rows) against realistic ones (layer scale U(0.1, 0.5); token N(0, 0.5²)), the
rest of the random-init net unchanged (norms and BatchNorm statistics from real photos,
bench/timm_nets.py). Per net and init: edgeconv's default int8 simulation (min-max, per-channel
weights, 32 real photo crops) against fp32 on 16 held-out crops — rel-L2, cosine, top-1 agreement —
and how many parameters the realistic init changed.

    python bench/stand_in_init.py [--nets deit_tiny_patch16_224,...]  → bench/results/stand_in_init.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NETS = ("deit_tiny_patch16_224", "vit_tiny_patch16_224", "cait_xxs24_224", "xcit_nano_12_p8_224",
        "convnext_zepto_rms", "poolformerv2_s12")
SIZE, CALIB, EVAL = 64, 32, 16


def realistic(module, seed: int = 5) -> int:
    """Layer scales at a constant training-start value (nonzero, |v| < 1e-3) → U(0.1, 0.5); tokens
    (parameters named *token*) with std < 0.05 → N(0, 0.5²). Returns how many parameters changed."""
    import torch

    g, changed = torch.Generator().manual_seed(seed), 0
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "token" in name and p.numel() > 1 and float(p.std()) < 0.05:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif p.numel() > 1 and float(p.abs().min()) > 0 and float(p.abs().max()) < 1e-3 and float(p.std()) < 1e-9:
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 + 0.1)
            else:
                continue
            changed += 1
    return changed


def measure(name: str, init: str) -> dict:
    from bench.timm_nets import timm_spec
    from bench.vit_readout import sim_and_fp32
    from examples.zoo.images import batch

    spec = timm_spec(name, SIZE)
    changed = realistic(spec.module) if init == "realistic" else 0
    x = batch(CALIB + EVAL, SIZE, SIZE, spec.mean, spec.std, seed=0).astype(np.float32)
    out, ref = sim_and_fp32(spec, x, CALIB)
    cos = float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref)))
    return {"init": init, "params_changed": changed,
            "sim_rel_l2_vs_fp32": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)), "sim_cosine_vs_fp32": cos,
            "sim_top1_vs_fp32": float((out.argmax(1) == ref.argmax(1)).mean()),
            "fp32_output_spread": float(ref.std(0).mean() / (np.abs(ref).mean() + 1e-12))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/stand_in_init.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    res = {"command": "python bench/stand_in_init.py " + " ".join(sys.argv[1:]), "input": SIZE,
           "calibration": f"{CALIB} real photo crops (examples/zoo/images.py), min-max", "held_out": EVAL, "nets": {}}
    for n in args.nets.split(","):
        res["nets"][n] = [measure(n, "timm"), measure(n, "realistic")]
        print(n, json.dumps(res["nets"][n]), flush=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
