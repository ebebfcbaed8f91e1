"""`edgeconv profile` repeatability on this host: the p50 of three separate `profile` runs of the demo.

    python bench/profile_host_cv.py            → bench/results/profile_host_cv.json

The demo is exported once (tflite-int8, and an in-repo MobileNetV2-style model at 224×224 when
examples/mobilenet_v2.py exists, as a less tiny case); then `edgeconv profile ARTIFACT --json` is run
three times as separate processes, exactly as a user or CI would, and the coefficient of variation
(std/mean, population std) of the three p50s is reported. Target: ≤ 5 %. These are this host's
numbers (x86, shared machine), not a phone's.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REPEATS = 3


def export(ref: str | None, calib: str, out: Path) -> Path:
    from edgeconv.config import CalibSpec, ExportOptions
    from edgeconv.models import load_model
    from edgeconv.pipeline import export as run_export

    manifest = run_export(load_model(ref), ExportOptions(targets=("tflite-int8",), out_dir=str(out),
                                                         calib=CalibSpec(source=calib), eval_samples=64))
    return out / manifest.artifacts[0].path


def profile_once(artifact: Path, runs: int) -> dict:
    cmd = [str(Path(sys.executable).parent / "edgeconv"), "profile", str(artifact), "--json", "--runs", str(runs),
           "--warmup", "20", "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    models = {"demo": (None, "demo", 2000)}
    if (ROOT / "examples" / "mobilenet_v2.py").exists():
        models["mobilenet-v2-224"] = ("examples.mobilenet_v2:mobilenet_v2", "random", 100)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ref, calib, runs) in models.items():
            art = export(ref, calib, Path(tmp) / name)
            reports = []
            for _ in range(REPEATS):
                reports.append(profile_once(art, runs))
                time.sleep(1)
            p50 = [r["p50_ms"] for r in reports]
            cv = statistics.pstdev(p50) / statistics.mean(p50)
            results[name] = {"artifact_sha256": reports[0]["artifact_sha256"], "runtime": reports[0]["runtime"],
                             "runs_per_profile": runs, "p50_ms": p50, "p90_ms": [r["p90_ms"] for r in reports],
                             "cv_p50": cv, "target_cv": 0.05, "passed": cv <= 0.05,
                             "method": reports[0]["method"]}
            print(f"{name}: p50 {['%.4f' % x for x in p50]} ms, CV {cv:.2%}", flush=True)
    out = ROOT / "bench" / "results" / "profile_host_cv.json"
    from edgeconv.results import atomic_write

    atomic_write(out, json.dumps({"command": "python bench/profile_host_cv.py", "repeats": REPEATS,
                                  "host": __import__("platform").processor() or __import__("platform").machine(),
                                  "models": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
