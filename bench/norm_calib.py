"""What calibrating a LayerNorm's internal tensors by least squared error (`calib.methods.NORM_METHOD`)
buys over min-max, on timm nets with integer norms, measured side by side through the CLI.

Per net: `edgeconv export -t onnx-int8` (full-integer, default options) in this tree and in a
checkout from before the change (`--before PATH`, run with `--before-python`, a venv whose editable
install points at that checkout), the int8 simulation's relative L2 error and cosine against torch
fp32 on the held-out photos, the artifact's verdict, and the quantize stage's seconds.

    python bench/norm_calib.py --before /path/to/checkout --before-python /path/to/venv/bin/python
        → bench/results/norm_calib.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fullint import export  # noqa: E402

NETS = ("convnext_atto@64", "caformer_s18@64", "edgenext_xx_small@64", "vit_tiny_patch16_224@64",
        "convnext_zepto_rms@64")


def _row(run: dict) -> dict:
    cell = run.get("onnx-int8") or {}
    return {"exit": run.get("exit"), "error": run.get("error", ""), "passed": cell.get("passed"),
            "sim_rel_l2_vs_fp32": cell.get("sim_rel_l2_vs_fp32"), "cosine_vs_fp32": cell.get("cosine_vs_fp32"),
            "top1_vs_fp32": cell.get("top1_vs_fp32"), "float_ops": cell.get("float_ops")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--before-python", required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "norm_calib.json")
    args = ap.parse_args()
    from examples.zoo.images import write_folder

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        calib = write_folder(Path(tmp) / "calib", 40)
        for net in args.nets.split(","):
            ref = net if ":" in net else f"bench.timm_nets:{net}"
            now = export(ROOT, ref, Path(tmp) / f"{net}-now", calib, targets=("onnx-int8",))
            before = export(args.before, ref, Path(tmp) / f"{net}-before", calib, targets=("onnx-int8",),
                            python=args.before_python)
            rows[net] = {"norm_mse": _row(now), "min_max": _row(before)}
            print(net, json.dumps(rows[net]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python bench/norm_calib.py " + " ".join(sys.argv[1:]),
                                    "calib": "40 256² crops of 2 real photos (examples/zoo/images.py): 24 calibrate, "
                                             "16 held out", "target": "onnx-int8", "nets": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
