"""`edgeconv gate` with a `check` budget on an artifact built elsewhere: the real `edgeconv check`
(demo export, real runtime) fails the build when the file fails check, passes it when it passes,
and a saved `edgeconv check --json` verdict is honoured only for the very bytes it judged."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from edgeconv.cli import main


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from test_check import _flip_fc_weights

    d = tmp_path_factory.mktemp("gatecheck")
    r = run("export", "-t", "tflite-int8", "--calib-samples", "32", "--eval-samples", "64", "-o", d / "out")
    assert r.exit_code == 0, r.output
    good = next((d / "out").glob("*-tflite-int8.tflite"))
    dist = d / "dist"
    dist.mkdir()
    shutil.copy(good, dist / "good.tflite")  # a lone copy: no manifest beside it
    _flip_fc_weights(good, dist / "bad.tflite")
    return d


def budgets(d, name: str, check: str = "true") -> str:
    p = d / f"{name}-{check.strip(chr(34)).replace('/', '_')}.toml"
    p.write_text(f"""
[gate]
calib_samples = 32
eval_samples = 64
out_dir = "{d / 'gate'}"

[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "host"
artifact = "{d / 'dist' / name}"
check = {check}
size_kb = 500
""")
    return p


def test_gate_fails_a_build_whose_artifact_fails_check_and_passes_a_good_one(files):
    r = run("gate", budgets(files, "bad.tflite"), "--json")
    assert r.exit_code == 1, r.output
    assert '"metric": "check"' in r.output and "int8 layers in isolation: fc:" in r.output
    r = run("gate", budgets(files, "good.tflite"), "--json")
    assert r.exit_code == 0, r.output
    assert '"metric": "check"' in r.output and "`edgeconv check` in ai-edge-litert" in r.output
    assert not (files / "gate").exists()  # judged as built: the gate exported nothing


def test_gate_reads_a_saved_verdict_only_for_the_bytes_it_judged(files):
    saved = files / "check.json"
    r = run("check", files / "dist" / "good.tflite", "--model", "edgeconv.demo:demo", "--calib-samples", "32",
            "--eval-samples", "64", "--json")
    assert r.exit_code == 0, r.output
    saved.write_text(r.output)
    assert run("gate", budgets(files, "good.tflite", f'"{saved}"')).exit_code == 0
    r = run("gate", budgets(files, "bad.tflite", f'"{saved}"'), "--json")  # the verdict is on other bytes
    assert r.exit_code == 1 and "holds no verdict on these bytes" in r.output
