"""The in-repo zoo (examples/zoo): every family's small net builds deterministically, runs, and has
BatchNorm statistics measured on real photos; a few representative small nets pass fp32 ONNX
parity through the CLI. The full matrix of nets × targets is bench/coverage.py (docs/coverage.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeconv.models import ModelSpec, module_sha256
from examples.zoo import FAMILIES, load

ROOT = Path(__file__).resolve().parents[1]
SMALL = sorted(FAMILIES)


def test_table_names_every_family_with_both_sizes():
    assert len(FAMILIES) >= 15
    for name, fam in FAMILIES.items():
        assert fam.task in ("classify", "super-resolution"), name
        assert fam.paper and fam.watch, name
        assert fam.ref("small") == fam.full + "_small", name
        mod, fn = fam.full.split(":")
        module = __import__(mod, fromlist=[fn])
        assert callable(getattr(module, fn)) and callable(getattr(module, fn + "_small")), name
        assert module.__doc__ and len(module.__doc__) > 200, f"{mod} must name its paper and what matters to deploy"


@pytest.mark.parametrize("name", SMALL)
def test_small_net_is_deterministic_runs_and_has_real_bn_stats(name):
    fam = FAMILIES[name]
    a, b = load(fam.small), load(fam.small)
    assert isinstance(a, ModelSpec)
    assert module_sha256(a.module) == module_sha256(b.module)
    assert torch.equal(a.example_inputs[0], b.example_inputs[0])
    assert not a.module.training
    with torch.no_grad():
        ya, yb = a.module(*a.example_inputs), b.module(*a.example_inputs)
    assert torch.equal(ya, yb)
    assert torch.isfinite(ya).all()
    n, c, h, w = a.input_shape
    assert (n, c) == (1, 3) and h <= 64 and w <= 64
    if fam.task == "classify":
        assert ya.shape == (1, 10)
        assert a.mean and a.std
    else:
        assert ya.shape == (1, 3, 3 * h, 3 * w)  # ×3 upscaling through a pixel shuffle
    bns = [m for m in a.module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:  # measured (train mode, cumulative average), not the init mean 0 / var 1
        assert int(bn.num_batches_tracked) > 0
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))  # random-but-sane affine


def test_bn_statistics_come_from_the_photos():
    """Same net, statistics from other inputs: other running stats. The photos set them."""
    from examples.zoo import _common

    spec = load("examples.zoo.simplenet:simplenet_small")
    bn = next(m for m in spec.module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    first = bn.running_var.clone()
    _common.bn_stats_from_images(spec.module, 64, 64, spec.mean, spec.std, seed=1)
    assert not torch.allclose(first, bn.running_var)  # other crops, other statistics
    _common.bn_stats_from_images(spec.module, 64, 64, spec.mean, spec.std, seed=0)
    assert torch.allclose(first, bn.running_var)  # the same crops, the same statistics


def test_reparam_blocks_merge_exactly():
    """The zoo's own RepVGG / MobileOne / UniRepLKNet blocks collapse to one conv with the same output."""
    for ref in ("examples.zoo.repvgg:repvgg_small", "examples.zoo.repvgg:mobileone_small",
                "examples.zoo.unireplknet:unireplknet_small"):
        m = load(ref).module
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            before = m(x)
            calls = 0
            for mod in list(m.modules()):
                for meth in ("switch_to_deploy", "reparameterize", "merge_dilated_branches"):
                    if hasattr(mod, meth):
                        getattr(mod, meth)()
                        calls += 1
            after = m(x)
        assert calls > 0, ref
        assert (after - before).abs().max() <= 1e-4 * before.abs().max(), ref


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    from examples.zoo.images import write_folder

    return write_folder(tmp_path_factory.mktemp("photos"), 12, side=96)


@pytest.mark.parametrize("ref", ["examples.zoo.hornet:hornet_small",  # products of activations, LayerNorm
                                 "examples.zoo.sr:espcn_small"])
def test_cli_fp32_onnx_parity(ref, photo_folder, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    res = subprocess.run([sys.executable, "-m", "edgeconv", "export", "--model", ref, "-t", "onnx",
                          "--calib", str(photo_folder), "--calib-samples", "4", "--eval-samples", "8",
                          "-o", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    manifest = json.loads((tmp_path / "edgeconv.json").read_text())
    (art,) = manifest["artifacts"]
    assert art["target"] == "onnx" and art["parity"]["passed"]
    assert manifest["calibration"]["eval_real"]
