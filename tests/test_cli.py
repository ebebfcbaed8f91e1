"""Bad input through the real CLI: one line naming the thing and the fix, exit 2, no traceback,
no half-written file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeconv.cli import main


def run(*args: str):
    res = CliRunner().invoke(main, list(args))
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def assert_user_error(code: int, out: str, *words: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("edgeconv: error:")]
    assert len(lines) == 1, out
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_unknown_target_lists_choices(tmp_path):
    code, out = run("export", "-t", "tflite-int4", "-o", str(tmp_path))
    assert_user_error(code, out, "unknown target 'tflite-int4'", "tflite-int8", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_model_file(tmp_path):
    code, out = run("export", "--model", str(tmp_path / "nope.pt2"), "-o", str(tmp_path / "o"))
    assert_user_error(code, out, "nope.pt2", "does not exist")


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"\x00not a zip" * 100)
    code, out = run("export", "--model", str(bad), "-o", str(tmp_path / "o"))
    assert_user_error(code, out, "bad.pt2", "not a readable", "torch.export.save")


def test_pt2_file_round_trip(tmp_path):
    from zoo import conv_relu_bn

    spec = conv_relu_bn()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(spec.module, spec.example_inputs), str(path))
    code, out = run("export", "--model", str(path), "-t", "onnx", "--calib", "random", "-o", str(tmp_path / "o"))
    assert code == 0, out
    assert (tmp_path / "o" / "m-pt2-onnx.onnx").is_file()


def test_factory_that_raises(tmp_path):
    code, out = run("export", "--model", "zoo:raises", "-o", str(tmp_path))
    assert_user_error(code, out, "zoo:raises", "RuntimeError", "checkpoint server unreachable")


def test_factory_returning_non_module(tmp_path):
    code, out = run("export", "--model", "zoo:not_a_module", "-o", str(tmp_path))
    assert_user_error(code, out, "returned int")


def test_input_shape_the_model_rejects(tmp_path):
    code, out = run("export", "--model", "zoo:needs_32", "--input-shape", "1,3,16,16", "-o", str(tmp_path))
    assert_user_error(code, out, "rejects input shape [1, 3, 16, 16]", "--input-shape")


def test_malformed_input_shape(tmp_path):
    code, out = run("export", "--input-shape", "1,3,abc", "-o", str(tmp_path))
    assert_user_error(code, out, "1,3,abc", "1,3,224,224")


def test_checkpoint_that_does_not_fit(tmp_path):
    ck = tmp_path / "w.pt"
    torch.save({"conv.weight": torch.zeros(1)}, ck)
    code, out = run("export", "--model", "zoo:conv_relu_bn", "--weights", str(ck), "-o", str(tmp_path / "o"))
    assert_user_error(code, out, "w.pt", "do not fit")


def test_checkpoint_pickle_is_refused(tmp_path):
    """weights_only=True: a pickle carrying arbitrary objects is not unpickled."""
    ck = tmp_path / "evil.pt"
    torch.save({"x": Path("/etc/passwd")}, ck)  # a non-tensor object needs full unpickling
    code, out = run("export", "--model", "zoo:conv_relu_bn", "--weights", str(ck), "-o", str(tmp_path / "o"))
    assert_user_error(code, out, "evil.pt", "not a readable state-dict")


def test_bare_checkpoint_without_factory(tmp_path):
    ck = tmp_path / "w.pth"
    torch.save({}, ck)
    code, out = run("export", "--model", str(ck), "-o", str(tmp_path / "o"))
    assert_user_error(code, out, "--weights")


def test_calibration_with_nan(tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 3, 32, 32)).astype(np.float32)
    x[3, 0, 0, 0] = np.nan
    np.save(tmp_path / "c.npy", x)
    code, out = run("export", "--calib", str(tmp_path / "c.npy"), "-o", str(tmp_path / "o"))
    assert_user_error(code, out, "c.npy", "NaN")
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_calibration_of_wrong_shape(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((10, 28, 28), np.float32))
    code, out = run("export", "--calib", str(tmp_path / "c.npy"), "-o", str(tmp_path / "o"))
    assert_user_error(code, out, "c.npy", "(10, 28, 28)")


def test_empty_calibration_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    code, out = run("export", "--calib", str(tmp_path / "imgs"), "-o", str(tmp_path / "o"))
    assert_user_error(code, out, "imgs")


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out = run("export", "-o", str(blocker / "out"))
    assert_user_error(code, out, "cannot write to output folder", "-o")


def test_op_the_converter_cannot_lower_fails_that_target_only(tmp_path):
    """A valid model one converter cannot lower: one line naming the stage, the target and the op,
    exit 1; the target that did export is kept, and the manifest records the failed one."""
    import json

    out_dir = tmp_path / "o"
    code, out = run("export", "--model", "zoo:unlowerable", "-t", "onnx", "-t", "tflite",
                    "--calib", "random", "-o", str(out_dir), "--report")
    assert code == 1 and "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.startswith("edgeconv: error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in ("convert (tflite)", "cannot lower", "fft")), out
    arts = {a["target"]: a for a in json.loads((out_dir / "edgeconv.json").read_text())["artifacts"]}
    assert arts["tflite"]["failure"] == lines[0].removeprefix("edgeconv: error: ") and arts["tflite"]["path"] == ""
    assert arts["tflite"]["parity"]["diffs"][0]["passed"] is False
    assert arts["onnx"]["failure"] == "" and (out_dir / arts["onnx"]["path"]).is_file()
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["edgeconv.json", "report.html", arts["onnx"]["path"]])
    assert "not exported: convert (tflite) failed" in (out_dir / "report.html").read_text()


def test_parity_failure_is_exit_1(tmp_path, onnx_cannot_pass):
    code, out = run("export", "-t", "onnx", "-o", str(tmp_path))
    assert code == 1 and "parity failed for onnx" in out
    assert (tmp_path / "edgeconv.json").is_file()  # the evidence is kept


def test_list_shows_registries():
    code, out = run("list")
    assert code == 0
    for name in ("tflite-int8", "onnx-int8", "fold-conv-bn", "quantize", "cleanup"):
        assert name in out


def test_help_imports_no_heavy_module():
    code = ("import sys, edgeconv.cli\n"
            "heavy = [m for m in ('torch', 'tensorflow', 'litert_torch', 'coremltools', 'onnxruntime', 'onnx') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_real_process_exit_code_and_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "edgeconv", "export", "-t", "nope", "-o", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("edgeconv: error: unknown target 'nope'")


def test_top_level_exporters_calib_devices_are_not_importable(tmp_path):
    """Those names are taken on PyPI: they are installed only as edgeconv.* sub-packages."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name in ("exporters", "calib", "devices"):
        res = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, cwd=tmp_path, env=env)
        assert res.returncode != 0 and b"ModuleNotFoundError" in res.stderr, name
        ok = subprocess.run([sys.executable, "-c", f"import edgeconv.{name}"], cwd=tmp_path, env=env)
        assert ok.returncode == 0, name


def test_readme_targets_table_is_generated_from_the_registry():
    import re

    from edgeconv.cli.export import targets_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = re.search(r"<!-- targets:begin.*?-->\n(.*?)<!-- targets:end -->", readme, re.S).group(1).strip()
    assert table == targets_markdown(), "README targets table is stale: regenerate with `edgeconv list --markdown`"


def test_sparse_target_with_int8_is_refused(tmp_path):
    code, out = run("export", "-t", "tflite-sparse", "-t", "onnx-int8", "-o", str(tmp_path))
    assert_user_error(code, out, "tflite-sparse", "float-only", "separate runs")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2"])
def test_sparsity_outside_open_unit_interval(tmp_path, value):
    code, out = run("export", "-t", "tflite-sparse", "--sparsity", value, "-o", str(tmp_path))
    assert_user_error(code, out, "--sparsity", "outside (0, 1)")
