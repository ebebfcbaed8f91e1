"""Full-integer int8 on hybrid nets: float ops left per int8 format, and what integer norms,
attention and activations cost in accuracy, per net, through the CLI.

For each net three runs of `edgeconv export -t tflite-int8 -t onnx-int8 -t coreml-w8a8`:

- `full`: the default (full-integer);
- `float-ops`: `tflite-int8` with a quant config keeping layer_norm, softmax, gelu, silu and hardswish
  float — the int8 simulation with those op types float, to measure what making them integer costs;
- `before` (with `--before PATH`, a checkout of an earlier edgeconv): that tree's default.

Per run and format: float ops in the artifact, parity (end to end and per layer: layers judged,
unmatched, worst steps), the artifact's cosine and top-1 agreement with torch fp32, and the int8
simulation's own relative L2 error against fp32.

    python bench/fullint.py [--nets REF,...] [--before /path/to/old/checkout]  → bench/results/fullint.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETS = ("convnext_atto", "convformer_s18", "caformer_s18", "mobilevit_xxs", "edgenext_xx_small", "efficientnet_b0")
TARGETS = ("tflite-int8", "onnx-int8", "coreml-w8a8")
FLOAT_TYPES = {"op_type": {t: None for t in ("layer_norm", "softmax", "gelu", "silu", "hardswish")}}


def export(tree: Path, ref: str, out: Path, calib: Path, *extra: str, targets: tuple[str, ...] = TARGETS,
           python: str = sys.executable) -> dict:
    cmd = [python, "-m", "edgeconv", "export", "--model", ref, "--calib", str(calib), "--calib-samples", "24",
           "--eval-samples", "16", "-o", str(out), "--json", *[a for t in targets for a in ("-t", t)], *extra]
    paths = [str(tree), str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(paths)}
    r = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)
    if not (out / "edgeconv.json").exists():
        return {"error": (r.stderr.strip().splitlines() or ["(no output)"])[-1][:300], "exit": r.returncode}
    m = json.loads((out / "edgeconv.json").read_text())
    return {"exit": r.returncode, **{a["target"]: int8_cell(a) for a in m["artifacts"]}}


def int8_cell(a: dict) -> dict:
    diffs = {d["reference"]: d for d in a["parity"]["diffs"]}
    fp32, sim = diffs.get("torch-fp32", {}), diffs.get("torch-quant-sim", {})
    layers = a["parity"].get("layers") or {}
    ops = (a.get("float_ops") or {}).get("ops", [])
    kinds: dict[str, int] = {}
    for op in ops:
        kinds[op.split()[0]] = kinds.get(op.split()[0], 0) + 1
    return {"passed": a["parity"]["passed"], "float_ops": (a.get("float_ops") or {}).get("count"),
            "float_op_kinds": kinds,
            "cosine_vs_fp32": fp32.get("cosine"), "top1_vs_fp32": fp32.get("top1_agreement"),
            "sim_rel_l2_vs_fp32": sim.get("sim_rel_l2_vs_fp32"), "rel_l2_vs_sim": sim.get("rel_l2"),
            "steps_vs_sim": sim.get("max_steps"),
            "layers": {k: layers.get(k) for k in ("layers", "unmatched", "worst_steps", "passed")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help="timm model names (bench.timm_nets) or model refs")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--before", type=Path, default=None, help="an earlier edgeconv checkout to compare with")
    ap.add_argument("--before-python", default=sys.executable,
                    help="a Python whose edgeconv is installed (editable) from --before")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fullint.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from examples.zoo.images import write_folder

    results = json.loads(args.out.read_text()).get("nets", {}) if args.out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = write_folder(tmp / "calib", 48, side=args.size)
        (tmp / "float.json").write_text(json.dumps(FLOAT_TYPES))
        (tmp / "refs.py").write_text("from bench.timm_nets import timm_spec\n" + "".join(
            f"def {n}(): return timm_spec({n!r}, {args.size})\n" for n in args.nets.split(",") if ":" not in n))
        sys_path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp), sys_path) if p)
        for name in args.nets.split(","):
            ref = name if ":" in name else f"refs:{name}"
            runs = {"full": export(ROOT, ref, tmp / name / "full", calib),
                    # the simulation is the formats' shared program: one format tells its accuracy
                    "float-ops": export(ROOT, ref, tmp / name / "float", calib, "--quant-config",
                                        str(tmp / "float.json"), targets=("tflite-int8",))}
            if args.before is not None:
                runs["before"] = export(args.before, ref, tmp / name / "before", calib, python=args.before_python)
            results[name] = runs
            args.out.write_text(json.dumps({"size": args.size, "targets": TARGETS, "float_op_types": FLOAT_TYPES,
                                            "before": str(args.before) if args.before else None, "nets": results},
                                           indent=2))
            counts = {r: {t: (c.get(t) or {}).get("float_ops") for t in TARGETS} for r, c in runs.items()}
            print(name, json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
