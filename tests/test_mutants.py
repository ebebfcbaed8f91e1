"""A fast subset of the mutation suite (bench/mutants.py, issue 19) on real exported files: defects
planted by hand in copies of the demo's int8 artifacts must fail `edgeconv check` at the planted
layer, and a file that only re-encodes the same function must pass."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "mutants.py"


def _mutants():
    spec = importlib.util.spec_from_file_location("edgeconv_bench_mutants", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


M = _mutants()
# defect name -> (planted layer, must the verdict fail?)
SUBSET = {
    "transposed kernel": ("stem.0", True),  # was blamed on blocks.0.depthwise.0: excluded as a "layout copy"
    "activation scale -10%": ("stem.0", True),  # was blamed on its consumer: the tensor went unmatched
    "zeroed output channel": ("blocks.1.pointwise.0", True),
    "logit bias +1": ("fc", True),
    "refitted classifier": ("fc", True),
    "channel permutation": ("", False),
    "re-encoded": ("", False),
}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mutants") / "default"
    M.export(out, ())
    return out


@pytest.fixture(scope="module")
def checked(demo_dir):
    """Each subset defect planted in each format, all checked in one call (one program rebuild)."""
    from edgeconv.check import check, manifest_of, options_of, spec_of
    from edgeconv.demo import heldout

    todo = [d for d in M.defects() if d.name in SUBSET]
    delta, _ = M.refit_delta(M.artifact(demo_dir, "onnx"), heldout().x)
    made = M.plant(demo_dir, todo, M.Context_(fc_delta=delta), M.torch_shapes())
    manifest = manifest_of(demo_dir)
    report = check([(p, t, None) for _, _, p, t in made], spec_of(manifest, None),
                   options_of(manifest, demo_dir), M._quiet_progress())
    return [(d, fmt, path, c) for (d, fmt, path, _), c in zip(made, report.checked)]


def test_every_format_and_defect_was_planted(checked):
    got = {(d.name, fmt) for d, fmt, _, _ in checked}
    assert got >= {(name, fmt) for name in SUBSET for fmt in M.EDITORS}
    assert ("uint8 re-encoding", "onnx") in got


BAD = [n for n, (_, bad) in SUBSET.items() if bad]


@pytest.mark.parametrize("fmt", list(M.EDITORS))
@pytest.mark.parametrize("defect", BAD)
def test_defect_is_caught(checked, fmt, defect):
    d, _, path, c = next(row for row in checked if row[0].name == defect and row[1] == fmt)
    assert not c.passed, f"{fmt} {defect} passed the verdict ({path})"
    lay = c.parity.layers
    assert lay is not None and not lay.passed, f"{fmt} {defect}: the per-layer check did not fire"


@pytest.mark.parametrize("fmt", list(M.EDITORS))
@pytest.mark.parametrize("defect", BAD)
def test_named_layer_is_the_planted_one(checked, fmt, defect):
    d, _, path, c = next(row for row in checked if row[0].name == defect and row[1] == fmt)
    over = c.parity.layers.over
    assert over and M.layer_of(over[0]) == SUBSET[defect][0], (path, over)


@pytest.mark.parametrize("fmt", list(M.EDITORS))
@pytest.mark.parametrize("benign", [n for n, (_, bad) in SUBSET.items() if not bad] + ["uint8 re-encoding"])
def test_same_function_passes(checked, fmt, benign):
    rows = [row for row in checked if row[0].name == benign and row[1] == fmt]
    if not rows:  # the uint8 re-encoding exists for ONNX only
        assert benign == "uint8 re-encoding" and fmt != "onnx"
        return
    d, _, path, c = rows[0]
    reasons = [x.reason for x in c.parity.diffs if not x.passed] + list(c.parity.layers.over if c.parity.layers else ())
    assert c.passed, f"false alarm on {fmt} {benign} ({path}): {reasons}"


def test_mutated_artifact_really_differs(checked, demo_dir):
    """The planted defects change what the runtime computes (the suite is not checking copies)."""
    from edgeconv.demo import heldout

    x = heldout().x[:32]
    for d, fmt, path, _ in checked:
        if d.name != "transposed kernel":
            continue
        base = M.run_outputs(M.artifact(demo_dir, fmt), x)
        assert np.abs(M.run_outputs(path, x) - base).max() > 1.0, fmt
