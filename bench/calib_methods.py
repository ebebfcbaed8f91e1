"""Does the calibration method lift the catalog's random-init CNNs over the int8 fp32 floors?

Per net (catalog stand-ins that fail only the fp32 floors, bench/timm_nets.py, 64²) and per method
(min-max, the default; MSE; percentile; entropy — edgeconv.calib.methods): edgeconv's int8 simulation
(per-channel weights) calibrated on 32 real photo crops, against the fp32 net on 16 held-out crops —
rel-L2, cosine (the floor is 0.95), top-1 agreement.

    python bench/calib_methods.py [--nets mobilenetv3_small_050,...]  → bench/results/calib_methods.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NETS = ("mobilenetv3_small_050", "hgnetv2_b0", "mobilenetv2_035")
METHODS = ("min-max", "mse", "percentile", "entropy")
SIZE, CALIB, EVAL = 64, 32, 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "calib_methods.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.timm_nets import timm_spec
    from bench.vit_readout import sim_and_fp32
    from examples.zoo.images import batch

    rows: dict[str, dict] = {}
    for name in args.nets.split(","):
        spec = timm_spec(name, SIZE)
        x = batch(CALIB + EVAL, SIZE, SIZE, spec.mean, spec.std, seed=0).astype(np.float32)
        rows[name] = {}
        for method in METHODS:
            out, ref = sim_and_fp32(spec, x, CALIB, method)
            rows[name][method] = {
                "rel_l2": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
                "cosine": float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref))),
                "top1": float((out.argmax(1) == ref.argmax(1)).mean())}
            print(name, method, json.dumps(rows[name][method]), flush=True)
    Path(args.out).write_text(json.dumps({"command": "python bench/calib_methods.py " + " ".join(sys.argv[1:]),
                                          "input": SIZE, "calibration": f"{CALIB} real photo crops", "held_out": EVAL,
                                          "nets": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
