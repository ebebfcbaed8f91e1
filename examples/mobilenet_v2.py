"""An in-repo MobileNetV2 (the architecture of Sandler et al. 2018, no torchvision), random weights
with realistic BatchNorm statistics: for speed benchmarks and graph-shape tests, not accuracy."""
from __future__ import annotations

import torch
from torch import nn

from examples.zoo._common import conv_bn as _conv_bn
from examples.zoo.mobilenet import V2_SETTINGS as SETTINGS  # noqa: F401  (MobileNetV2's table)
from examples.zoo.mobilenet import InvertedResidual, MobileNetV2  # noqa: F401  (one definition: the zoo's)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv → BN (→ ReLU6): MobileNetV2's unit."""
    return _conv_bn(cin, cout, k, stride, groups, act=nn.ReLU6 if act else None)


def realistic_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, but BN statistics measured on random inputs, so activations stay in range
    the way a trained net's do (int8 calibration on pure-init BN stats is meaningless)."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 224, 224))
    return model.eval()


def mobilenet_v2():
    from edgeconv.models import ModelSpec

    model = realistic_bn(MobileNetV2())
    return ModelSpec(module=model, example_inputs=(torch.zeros(1, 3, 224, 224),), name="mobilenet-v2-224",
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
