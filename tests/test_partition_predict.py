"""Partition-aware prediction (devices/costmodel/partitions.py): a file the accelerator runs whole is
predicted as before; one it splits pays ρ for its CPU ops and τ per hand-off, with the constants
bench/fit_partitions.py fitted on published runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from edgeconv.devices import delegates
from edgeconv.devices.costmodel import partitions as P
from edgeconv.devices.costmodel.parse import load_ops
from edgeconv.devices.predict import predict

from edgeconv.config import CalibSpec, ExportOptions, QuantConfig
from edgeconv.models import load_model
from edgeconv.pipeline import export

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """conv_chain in int8, and with its middle conv left in float (the DSP cannot take it)."""
    files = {}
    for name, qc in (("int8", None), ("c2-float", QuantConfig(layer=(("c2", None),)))):
        out = tmp_path_factory.mktemp(name)
        m = export(load_model("zoo_delegates:conv_chain"),
                   ExportOptions(targets=("tflite-int8",), out_dir=str(out), calib=CalibSpec("random"),
                                 eval_samples=8, quant_config=qc))
        files[name] = out / m.artifacts[0].path
    return files


def test_handoffs_count_each_partition_edge_to_the_cpu(chain):
    ops = delegates.read_ops(chain["c2-float"], "tflite")
    v = delegates.check(chain["c2-float"], "hexagon")
    assert len(v.partitions) == 2
    # the first partition feeds the float island, the second reads it (and writes the graph output)
    assert P.handoffs(ops, v.partitions) == 2
    whole = delegates.check(chain["int8"], "hexagon")
    assert whole.whole and P.handoffs(delegates.read_ops(chain["int8"], "tflite"), whole.partitions) == 0


def test_a_file_run_whole_is_predicted_as_without_partitions(chain):
    r = predict(chain["int8"], "galaxy-s24", delegate="hexagon")
    plain = predict(load_ops(chain["int8"])[0], "galaxy-s24", "int8", delegate="hexagon")
    assert r.p50_ms == pytest.approx(plain.p50_ms, rel=1e-12)
    assert "hexagon.toml predicts 0 of" in r.environment["placement"]
    assert not any(p["class"] == "handoff" for p in r.per_op)


def test_a_split_file_pays_for_its_cpu_ops_and_handoffs(chain):
    c = P.constants()
    assert c is not None and c.rho_for("int8") >= 1.0 and c.handoff_s > 0
    path = chain["c2-float"]
    r = predict(path, "galaxy-s24", "int8", delegate="hexagon")
    plain = predict(load_ops(path)[0], "galaxy-s24", "int8", delegate="hexagon")
    cpu = [p for p in r.per_op if p.get("runs_on") == "cpu"]
    v = delegates.check(path, "hexagon")
    left = {o.index for o in delegates.read_ops(path, "tflite")} - set(v.delegated)
    assert cpu and {int(p["name"].rsplit("_", 1)[1]) for p in cpu} <= left
    assert any(p["name"].startswith("conv_2d_") for p in cpu)  # the float conv
    hand = [p for p in r.per_op if p["class"] == "handoff"]
    assert len(hand) == 1 and hand[0]["ms"] == pytest.approx(2 * c.handoff_s * 1e3)
    plain_cpu = sum(p["ms"] for p in plain.per_op if p["name"] in {q["name"] for q in cpu})
    assert r.p50_ms == pytest.approx(plain.p50_ms + (c.rho_for("int8") - 1) * plain_cpu + 2 * c.handoff_s * 1e3)
    assert sum(p["ms"] for p in r.per_op) == pytest.approx(r.p50_ms, rel=1e-9)
    assert "hexagon.toml predicts" in r.basis and "held-out median APE" in r.basis


def test_qnn_tflite_delegate_has_no_table_and_says_so(chain):
    r = predict(chain["c2-float"], "galaxy-s24", delegate="qnn")
    assert "no support table for qnn on a tflite file" in r.environment["placement"]
    assert not any("runs_on" in p for p in r.per_op)


def test_packaged_constants_are_the_ones_the_bench_scored():
    """partitions.json and bench/results/costmodel_partitions.json come from one run: the stored
    constants reproduce every stored held-out prediction."""
    res = json.loads((ROOT / "bench/results/costmodel_partitions.json").read_text())
    c = P.constants()
    assert res["constants"]["rho"] == c.rho and res["constants"]["handoff_s"] == c.handoff_s
    held = [p for p in res["predictions"] if p["split"] == "held_out" and p["kind"] == "partitioned"]
    assert len({p["model"] for p in held}) == len(res["held_out_models"]) >= 5
    for p in held:
        assert P.published_ms(p["whole_ms"], p["npu"], p["off"], p["precision"], c) == pytest.approx(p["after_ms"], abs=1e-3)
    assert not set(res["held_out_models"]) & set(res["fit"]["models"])
