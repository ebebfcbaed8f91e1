"""The embedded demo: shipped weights, held-out split, training script."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from edgeconv.demo import WEIGHTS, demo, heldout
from edgeconv.demo import train as demo_train
from edgeconv.demo.model import INPUT_SHAPE, MEAN, STD, DemoNet


def test_weights_load_safely_and_are_small():
    assert WEIGHTS.stat().st_size < 200_000
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert set(state) == set(DemoNet().state_dict())
    DemoNet().load_state_dict(state)  # strict: every tensor fits


def test_shipped_weights_reach_95_percent_on_heldout():
    spec = demo()
    data = spec.data()
    assert data.x.dtype == np.float32 and data.x.shape == (400, *INPUT_SHAPE[1:])
    assert data.y.dtype == np.int64 and data.real
    acc = demo_train.accuracy(spec.module, data.x, data.y)
    assert acc >= 0.95, acc


def test_spec_declares_input_and_preprocessing():
    spec = demo()
    assert spec.name == "edgeconv-demo"
    assert [tuple(t.shape) for t in spec.example_inputs] == [INPUT_SHAPE]
    assert spec.mean == MEAN and spec.std == STD
    assert not spec.module.training


def test_heldout_split_is_disjoint_stratified_and_matches_bundle():
    images, labels = demo_train.load_digits()
    train_idx, held_idx = demo_train.split_indices(labels)
    assert len(np.intersect1d(train_idx, held_idx)) == 0
    assert len(train_idx) + len(held_idx) == len(labels) == 1797
    assert len(held_idx) == 400
    assert np.bincount(labels[held_idx]).min() >= 38  # ~40 per class: stratified
    data = heldout()
    np.testing.assert_array_equal(data.y, labels[held_idx])
    # The bundle stores float16; it must be the same preprocessing of the same images.
    np.testing.assert_allclose(data.x, demo_train.preprocess(images[held_idx]), atol=4e-3)


def test_preprocess_resize_matches_torch_bilinear():
    images, _ = demo_train.load_digits()
    img = torch.from_numpy(images[:8] / 16.0)[:, None]
    ref = torch.nn.functional.interpolate(img, size=INPUT_SHAPE[-2:], mode="bilinear", align_corners=False)
    ref = ((ref.repeat(1, 3, 1, 1) - MEAN[0]) / STD[0]).float().numpy()
    np.testing.assert_allclose(demo_train.preprocess(images[:8]), ref, atol=1e-6)


def test_training_is_deterministic():
    a, _, _ = demo_train.train(epochs=1)
    b, _, _ = demo_train.train(epochs=1)
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's settings come back
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # ...and training moved the weights away from the seeded initialisation.
    torch.manual_seed(demo_train.SEED)
    init = DemoNet().state_dict()
    assert not torch.equal(init["fc.weight"], sa["fc.weight"])


def test_architecture_has_edge_net_parts():
    model = DemoNet().eval()
    stem = model.stem[0]
    assert (stem.in_channels, stem.kernel_size, stem.stride, stem.padding, stem.bias) == (3, (3, 3), (2, 2), (1, 1), None)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(c.groups == c.in_channels > 1 for c in convs)  # depthwise
    program = torch.export.export(model, (torch.zeros(INPUT_SHAPE),))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "aten.add.Tensor" in ops  # the residual
    assert ops <= {"aten.conv2d.default", "aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default",
                   "aten.hardtanh.default", "aten.add.Tensor", "aten.adaptive_avg_pool2d.default",
                   "aten.flatten.using_ints", "aten.linear.default"}, ops


def test_importing_demo_does_not_import_torch():
    code = "import sys, edgeconv.demo; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

