"""timm nets as edgeconv model references (bench and tests only; timm via bench/timm_env.py).

    edgeconv export --model bench.timm_nets:mobilenetv3_small_050 -t tflite-int8 --calib PHOTOS

Any timm model name is a factory here (`bench.timm_nets:<name>`, 224²; `<name>@<side>` builds and
captures it at side², e.g. `bench.timm_nets:resnet18@64` for the catalog bench; a net that does not take
side² as built by default — ViT-style, position embeddings sized for 224² — is built with `img_size=side`).
Pretrained weights are not reachable offline: the net is random-init (seeded), and like the zoo (examples/zoo/_common.py
`build`) its norms get realistic affine parameters and its BatchNorm running statistics are set
from real photos — without them a deep random net's activations explode or vanish. A linear or
conv layer timm initialises to all zeros (the classifier head of Hiera, gMLP, Sequencer: a
training-start choice) gets PyTorch's default init instead: at zero the net's output is one constant
for every input, and no end-to-end comparison can tell a right file from a wrong one.
"""
from __future__ import annotations

from typing import Any

SIZE = 224


def timm_spec(name: str, size: int = SIZE, **kwargs: Any):
    from bench.timm_env import import_timm
    from examples.zoo._common import build

    timm = import_timm()
    if "img_size" not in kwargs and not _runs_at(timm, name, size):
        kwargs["img_size"] = size  # ViT-style: position embeddings / windows sized for `size` (as the catalog checked)
    return build(lambda: _no_zero_layers(timm.create_model(name, pretrained=False, **kwargs)), f"timm-{name}-{size}", size)


def _no_zero_layers(model: Any) -> Any:
    """Every Linear / Conv whose weight is all zeros re-initialised by its own reset_parameters()."""
    import torch

    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) and w is not None \
                and not bool(w.detach().any()):
            m.reset_parameters()
    return model


def _runs_at(timm, name: str, size: int) -> bool:
    """Whether the net as timm builds it by default takes a size² input (a meta-device forward)."""
    import warnings

    import torch

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = timm.create_model(name, pretrained=False).eval()
        try:
            with torch.no_grad():
                net(torch.empty(1, 3, size, size, device="meta"))
        except Exception:  # noqa: BLE001 — any failure: built for the size instead
            return False
    return True


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
