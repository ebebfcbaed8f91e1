"""Adding a format touches its own folder and one registration line.

tests/onnx_opset18/ is such a format (ONNX QDQ at opset 18, files named `.onnx18`). Registered by
appending its module name to `edgeconv.registrations.MODULES` — nothing else in edgeconv knows it —
it must get what every format gets from the code that asks `format_for(path)`: the export and
parity flow, per-layer isolation of its int8 layers, float-op counting, timing on this host and a
cost-model prediction. Run in a subprocess so the extra target never leaks into the registries the
other tests enumerate.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
from edgeconv import registrations
registrations.MODULES = registrations.MODULES + ("onnx_opset18",)  # the one registration line
from edgeconv.config import ExportOptions
from edgeconv.devices.base import ProfileOptions
from edgeconv.devices.predict import predict
from edgeconv.devices.profile import profile
from edgeconv.exporters.formats import format_for
from edgeconv.models import load_model
from edgeconv.pipeline import export

out = sys.argv[1]
m = export(load_model(), ExportOptions(targets=("onnx18-int8",), out_dir=out))
a = m.artifacts[0]
path = f"{out}/{a.path}"
timed = profile(path, "host", ProfileOptions(runs=3, warmup=1, per_op=False))
guess = predict(path, "pixel-7")
print(json.dumps({"path": a.path, "format": format_for(path).name, "passed": a.parity.passed,
                  "engine": a.parity.runtime, "layers": a.parity.layers.layers,
                  "worst": a.parity.layers.worst_steps, "float_ops": a.float_ops.count,
                  "export_notes": a.stages[-2].notes, "timed": timed.method, "timed_ms": timed.p50_ms,
                  "predicted": guess.method, "predicted_ms": guess.p50_ms, "predicted_ops": len(guess.per_op)}))
"""


def test_a_new_format_gets_isolation_float_ops_and_profiling(tmp_path):
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["path"].endswith(".onnx18") and r["format"] == "onnx-opset18"
    assert "ONNX opset 18" in r["export_notes"]
    assert r["passed"] and r["engine"].startswith("onnxruntime")
    # per-layer isolation ran on its int8 tensors (the demo has 11 int8 layers), within a step
    assert r["layers"] >= 10 and r["worst"] <= 1.0
    assert r["float_ops"] == 0  # read from the file by the ONNX reader it named
    assert r["timed"] == "measured-host" and r["timed_ms"] > 0
    assert r["predicted"] == "predicted" and r["predicted_ms"] > 0 and r["predicted_ops"] >= 5
