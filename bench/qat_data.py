"""QAT data for catalog nets (`--train-data bench.qat_data:<net>`): real photo crops labelled by the
fp32 net itself (random-init timm nets have no task; the fp32 net's own top-1 is the one it has).

    edgeconv export --model bench.timm_nets:resnet10t@64 -t tflite-int8 --qat-epochs 2 \\
        --train-data bench.qat_data:resnet10t_64 --calib PHOTOS
"""
from __future__ import annotations


def labelled_by_itself(name: str, side: int, n: int = 64, seed: int = 3):
    """(x, y): n photo crops at side² (the net's preprocessing) and the fp32 net's top-1 on each."""
    import torch

    from bench.timm_nets import timm_spec
    from examples.zoo.images import batch

    spec = timm_spec(name, side)
    x = batch(n, side, side, spec.mean, spec.std, seed)
    with torch.no_grad():
        y = spec.module.eval()(torch.from_numpy(x)).argmax(1).numpy()
    return x, y


def resnet10t_64():
    return labelled_by_itself("resnet10t", 64)
