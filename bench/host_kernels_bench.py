"""Host-kernel deviation of ONNX int8: the demo's onnx-int8 and onnx-int8-u8 artifacts, judged on
onnxruntime's reference kernels, and this host's fast kernels measured against them — on this CPU
and on an emulated AVX2-only x86 CPU (`qemu-x86_64-static -cpu Haswell`, Debian qemu-user-static),
in one run.

    python bench/host_kernels_bench.py      → bench/results/host_kernels.json

Emulation changes what cpuid reports, so onnxruntime dispatches the kernels it would on a real
AVX2-only host (its u8s8 path saturates int16 pair sums there); timings under emulation are
meaningless and are not recorded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("onnx-int8", "onnx-int8-u8", "tflite-int8")
QEMU = "/usr/bin/qemu-x86_64-static"


def run(prefix: list[str], out: Path) -> dict:
    cmd = [*prefix, sys.executable, "-m", "edgeconv", "export", "--json", "-o", str(out),
           "--calib-samples", "64", "--eval-samples", "64", *(a for t in TARGETS for a in ("-t", t))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    m = json.loads(r.stdout)
    rows = {}
    for a in m["artifacts"]:
        p = a["parity"]
        sim = next(d for d in p["diffs"] if d["reference"] == "torch-quant-sim")
        hk = p.get("host_kernels")
        rows[a["target"]] = {"verdict": "pass" if p["passed"] else "FAIL", "engine": p["runtime"],
                             "reference_vs_sim_steps": sim["max_steps"],
                             "fast_vs_reference_steps": hk["max_steps"] if hk else None,
                             "host_kernel_warning": bool(hk and hk["deviates"])}
    return {"exit_code": r.returncode, "host": m["host"], "artifacts": rows}


def main() -> None:
    results = {"command": "edgeconv export -t " + " -t ".join(TARGETS) + " --calib-samples 64 --eval-samples 64"}
    with tempfile.TemporaryDirectory() as tmp:
        results["this_host"] = run([], Path(tmp) / "native")
        if shutil.which(QEMU):
            results["emulated_avx2_haswell"] = run([QEMU, "-cpu", "Haswell"], Path(tmp) / "haswell")
        else:
            results["emulated_avx2_haswell"] = "qemu-user-static not installed"
    out = ROOT / "bench" / "results" / "host_kernels.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
