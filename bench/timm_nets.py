"""timm nets as edgeconv model references (bench and tests only; timm via bench/timm_env.py).

    edgeconv export --model bench.timm_nets:mobilenetv3_small_050 -t tflite-int8 --calib PHOTOS

Any timm model name is a factory here (`bench.timm_nets:<name>`, 224²; `<name>@<side>` builds and
captures it at side², e.g. `bench.timm_nets:resnet18@64` for the catalog bench). Pretrained weights are
not reachable offline: the net is random-init (seeded), and like the zoo (examples/zoo/_common.py
`build`) its norms get realistic affine parameters and its BatchNorm running statistics are set
from real photos — without them a deep random net's activations explode or vanish.
"""
from __future__ import annotations

from typing import Any

SIZE = 224


def timm_spec(name: str, size: int = SIZE, **kwargs: Any):
    from bench.timm_env import import_timm
    from examples.zoo._common import build

    timm = import_timm()
    return build(lambda: timm.create_model(name, pretrained=False, **kwargs), f"timm-{name}-{size}", size)


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)

    model, at, side = name.partition("@")
    if at and not side.isdigit():
        raise AttributeError(f"{name}: the input side after @ must be a number of pixels, e.g. {model}@64")

    def factory(size: int = int(side) if at else SIZE):
        return timm_spec(model, size)

    factory.__name__ = name
    return factory
