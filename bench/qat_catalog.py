"""QAT on a residual catalog net with a real task: timm ResNet10-T trained here on the demo's digits
(`bench.qat_data:resnet10t_digits`), exported post-training and with QAT through the CLI, int8 in all
three formats: held-out accuracy, parity (end to end and per layer) and float ops per file.

    python bench/qat_catalog.py [--qat-epochs 2] [--qat-lr 1e-4]  → bench/results/qat-catalog.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = "bench.qat_data:resnet10t_digits"
TARGETS = ("tflite-int8", "onnx-int8", "coreml-w8a8")


def export(out: Path, *extra: str) -> dict:
    from bench.fullint import int8_cell

    cmd = [sys.executable, "-m", "edgeconv", "export", "--model", REF, "-o", str(out), "--json",
           *[a for t in TARGETS for a in ("-t", t)], *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if not (out / "edgeconv.json").exists():
        return {"error": (r.stderr.strip().splitlines() or ["(no output)"])[-1][:300], "exit": r.returncode}
    m = json.loads((out / "edgeconv.json").read_text())
    cells = {a["target"]: {**int8_cell(a), "accuracy": a["parity"].get("accuracy")} for a in m["artifacts"]}
    notes = [n for s in m.get("stages", []) if s.get("stage") == "quantize" for n in s.get("notes", [])]
    return {"exit": r.returncode, "wall_s": round(time.perf_counter() - t0, 1), "command": " ".join(cmd[1:]),
            "fp32_accuracy": m.get("reference_accuracy"), "notes": notes, **cells}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--qat-lr", type=float, default=1e-4)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "qat-catalog.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"ptq": export(Path(tmp) / "ptq"),
                "qat": export(Path(tmp) / "qat", "--qat-epochs", str(args.qat_epochs), "--qat-lr", str(args.qat_lr))}
    res = {"command": "python bench/qat_catalog.py " + " ".join(sys.argv[1:]), "model": REF,
           "host": platform.processor() or platform.machine(), "runs": runs}
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    for mode, run in runs.items():
        for t in TARGETS:
            c = run.get(t) or {}
            print(f"{mode:4s} {t:12s} passed={c.get('passed')} acc={c.get('accuracy')} float_ops={c.get('float_ops')} "
                  f"steps={c.get('steps_vs_sim')} layers={c.get('layers')}")


if __name__ == "__main__":
    main()
