"""The timm catalog the coverage bench runs (bench/timm_catalog.py, `bench/coverage.py --catalog timm`):
per model module the smallest variant under the parameter cap, modules without one skipped with the
reason, and the bench's resume / shard selection. Nothing is exported here.

timm comes from requirements-nodeps.txt and is imported through bench/timm_env.py: a test
dependency, not skipped when missing.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from bench.coverage import cached, parse_shard, select_catalog
from bench.timm_catalog import CAP, SMALL, Count, Entry, count_all, input_size, pick
from bench.timm_env import import_timm


def test_pick_takes_the_smallest_variant_under_the_cap_and_names_every_skip():
    counts = [Count("net_b", "alpha", 5_000_000), Count("net_a", "alpha", 3_000_000),
              Count("net_c", "alpha", 3_000_000), Count("big_s", "beta", 31_000_000),
              Count("big_l", "beta", 90_000_000), Count("odd", "gamma", None, "RuntimeError: no meta kernel"),
              Count("odd_ok", "delta", None, "TypeError: x"), Count("fine", "delta", 1_000),
              Count("test_alpha", "alpha", 100)]  # timm's unit-test config: never a module's pick
    entries = {e.module: e for e in pick(counts, cap=30_000_000)}
    assert list(entries) == ["alpha", "beta", "delta", "gamma"]
    # fewest parameters, ties broken by name; the variant count is the module's
    assert (entries["alpha"].model, entries["alpha"].params, entries["alpha"].variants) == ("net_a", 3_000_000, 3)
    assert pick([Count("test_x", "only_tests", 5)])[0].skipped == "only timm's unit-test configs (test_*)"
    assert entries["alpha"].skipped == "" and entries["alpha"].ref == f"bench.timm_nets:net_a@{SMALL}"
    assert entries["beta"].model == "" and "big_s has 31.0 M parameters > cap 30 M" in entries["beta"].skipped
    assert entries["gamma"].skipped == "no variant builds: odd: RuntimeError: no meta kernel"
    assert entries["delta"].model == "fine"  # a variant that fails to build does not hide one that builds
    # the cap is inclusive
    assert pick([Count("edge", "m", 30_000_000)], cap=30_000_000)[0].model == "edge"


def test_meta_counts_match_real_models_and_the_module_maps_to_its_smallest():
    """Counted on the meta device, as the catalog does, against the real (CPU) model; the pick for
    timm's ghostnet module is its smallest registered variant."""
    timm = import_timm()
    counts = count_all(timm, modules=["ghostnet"])
    assert len(counts) >= 4 and all(c.module == "ghostnet" and c.params for c in counts)
    (entry,) = pick(counts, CAP)
    assert entry.params == min(c.params for c in counts) and entry.variants == len(counts)
    real = timm.create_model(entry.model, pretrained=False)
    assert entry.params == sum(p.numel() for p in real.parameters())
    assert entry.model == "ghostnet_050"


def test_input_size_small_unless_the_model_fixes_it():
    timm = import_timm()
    conv = input_size(timm, Entry("ghostnet", "ghostnet_050", 1, 1))
    assert (conv.size, conv.size_note) == (SMALL, "")
    # LeViT's attention biases are sized for one resolution (its config fixes 224²): built for 64²
    levit = input_size(timm, Entry("levit", "levit_128s", 1, 1))
    assert levit.size == SMALL and "img_size=64" in levit.size_note and "fixed" in levit.size_note
    # EfficientFormer-L1 cannot be built for 64² (its attention bias stays 7×7): its own 224²
    eff = input_size(timm, Entry("efficientformer", "efficientformer_l1", 1, 1))
    assert eff.size == 224 and "fixed" in eff.size_note
    # and bench/timm_nets builds the net the same way: LeViT at 64² runs
    import torch

    from bench.timm_nets import timm_spec

    spec = timm_spec("levit_128s", SMALL)
    with torch.no_grad():
        assert spec.module(*spec.example_inputs).shape == (1, 1000)


def test_shards_partition_the_catalog_and_the_cache_resumes(tmp_path):
    entries = [Entry(f"m{i}", f"net{i}", i + 1, 1) for i in range(7)] + [Entry("x", "", None, 2, skipped="too big")]
    shards = [select_catalog(entries, "", parse_shard(f"{i}/3")) for i in (1, 2, 3)]
    names = [e.module for s in shards for e in s]
    assert sorted(names) == [f"m{i}" for i in range(7)] and len(set(names)) == 7  # every runnable net once
    assert [e.module for e in shards[1]] == ["m1", "m4"]
    assert [e.module for e in select_catalog(entries, "m3,net5", (1, 1))] == ["m3", "m5"]
    for bad in ("0/2", "3/2", "2", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="x"):
        select_catalog(entries, "x", (1, 1))  # skipped modules cannot be run by name
    (tmp_path / "m1.json").write_text(json.dumps({"targets": {"onnx": {"status": "pass"}}}))
    assert cached(tmp_path, "m1", ["onnx"])["targets"]["onnx"]["status"] == "pass"
    assert cached(tmp_path, "m1", ["onnx", "tflite"]) is None  # a target not yet run: the net runs again
    assert cached(tmp_path, "m2", ["onnx"]) is None
    (tmp_path / "m3.json").write_text(json.dumps({"entry": {"model": "old_pick"}, "targets": {"onnx": {}}}))
    assert cached(tmp_path, "m3", ["onnx"], "old_pick") is not None
    assert cached(tmp_path, "m3", ["onnx"], "net3") is None  # the catalog picks another variant now


def test_summary_counts_pass_and_float_op_free_shares_over_cached_nets(tmp_path):
    from bench.coverage import catalog_summary, write_catalog_markdown

    entries = [Entry("a", "net_a", 1_000_000, 2), Entry("b", "net_b", 2_000_000, 1, size=224),
               Entry("c", "net_c", 3_000_000, 1), Entry("z", "", None, 1, skipped="too big")]

    def net(entry, onnx, int8, fl):
        return {"entry": dataclasses.asdict(entry), "wall_s": 10.0 * entry.size / 64,
                "targets": {"onnx": {"status": onnx}, "tflite-int8": {"status": int8, "reason": "why",
                                                                       "ops": {"float_ops": fl, "requantize": 0}}}}

    (tmp_path / "a.json").write_text(json.dumps(net(entries[0], "pass", "pass", 0)))
    (tmp_path / "b.json").write_text(json.dumps(net(entries[1], "pass", "fail", 3)))  # c: not run yet
    s = catalog_summary(entries, tmp_path, ["onnx", "tflite-int8"])
    assert list(s["nets"]) == ["a", "b"] and s["skipped"] == {"z": "too big"}
    assert s["per_target"]["onnx"] == {"run": 2, "pass": 2, "faithful": 2, "fail_causes": {}}
    assert s["per_target"]["tflite-int8"] == {"run": 2, "pass": 1, "faithful": 1, "artifacts_read": 2,
                                              "float_ops_zero": 1, "fail_causes": {"other": 1}}
    assert s["all_targets_pass"] == ["a"] and s["all_targets_faithful"] == ["a"]
    assert s["wall_s"]["mean_by_input_side"] == {64: 10.0, 224: 35.0}
    data = {"targets": ["onnx", "tflite-int8"], "nets": s.pop("nets"), "summary": s, "generated": "now",
            "command": "cmd", "calib": "photos", "catalog": {"timm": "x", "modules": 4, "runnable": 3, "cap": CAP,
                                                             "small": SMALL}}
    md = tmp_path / "c.md"
    write_catalog_markdown(data, md)
    text = md.read_text()
    assert "| `tflite-int8` | 1/2 (50 %) | 1/2 (50 %) | 1/2 (50 %) | other 1 |" in text
    assert "**b (net_b) × tflite-int8** — fail: why" in text and "- **z**: too big" in text
    # a cell failing only its fp32 floors is the exporter's success: faithful, not passed
    b = json.loads((tmp_path / "b.json").read_text())
    b["targets"]["tflite-int8"]["reason"] = "torch-fp32: cosine 0.85 < 0.95"
    (tmp_path / "b.json").write_text(json.dumps(b))
    s = catalog_summary(entries, tmp_path, ["onnx", "tflite-int8"])
    assert (s["per_target"]["tflite-int8"]["pass"], s["per_target"]["tflite-int8"]["faithful"]) == (1, 2)
    assert s["all_targets_pass"] == ["a"] and s["all_targets_faithful"] == ["a", "b"]


def test_a_run_of_some_targets_replaces_their_cells_and_keeps_the_others():
    from bench.coverage import merged

    old = {"wall_s": 100.0, "runs": ["all"], "rounding": {"rel_l2": 0.1},
           "targets": {"onnx": {"status": "pass"}, "coreml-w8a8": {"status": "fail", "reason": "< 0.98"}}}
    new = {"wall_s": 7.0, "runs": ["w8a8"], "rounding": None, "targets": {"coreml-w8a8": {"status": "pass"}}}
    m = merged(old, new)
    assert m["targets"] == {"onnx": {"status": "pass"}, "coreml-w8a8": {"status": "pass"}}
    assert m["wall_s"] == 100.0 and m["rounding"] == {"rel_l2": 0.1}
    assert [(r["targets"], r["wall_s"]) for r in m["reruns"]] == [(["coreml-w8a8"], 7.0)]
    assert merged(old, {**new, "targets": {**old["targets"], "tflite": {}}})["wall_s"] == 7.0  # a full run replaces
    assert merged(None, new) is new


def test_fail_cause_separates_the_artifact_from_the_int8_programs_own_quality():
    from bench.coverage import fail_cause

    assert fail_cause({"status": "fail", "reason": "torch-fp32: cosine 0.85 < 0.95; top-1 agreement 0.7 < 0.74"}) \
        == "fp32 floors only"
    assert fail_cause({"status": "fail", "reason": "torch-fp32: cosine 0.85 < 0.95; torch-quant-sim: 20 steps > 3"}) \
        == "artifact vs simulation"
    assert fail_cause({"status": "fail", "reason": "per-layer isolation: 2 layer(s) over 1 step: x"}) \
        == "artifact vs simulation"
    assert fail_cause({"status": "fail", "reason": "torch-fp32: cosine 0.9; source-model: drop 0.5"}) == "other"
    assert fail_cause({"status": "crash", "reason": "Segfault"}) == "no artifact"
    # a stage failure reported under the first reference is no artifact, not a floor
    assert fail_cause({"status": "fail", "reason": "torch-fp32: prepare failed: reparameterization changed"}) \
        == "no artifact"
    assert fail_cause({"status": "fail", "reason": "torch-fp32: unverified: op stack"}) == "other"
