"""QAT data and nets for catalog architectures (bench only).

- `--train-data bench.qat_data:<net>`: real photo crops labelled by the fp32 net itself (random-init
  timm nets have no task; the fp32 net's own top-1 is the one it has).

      edgeconv export --model bench.timm_nets:resnet10t@64 -t tflite-int8 --qat-epochs 2 \\
          --train-data bench.qat_data:resnet10t_64 --calib PHOTOS

- `--model bench.qat_data:resnet10t_digits`: timm's ResNet10-T (a residual catalog net, unchanged but for
  its 10-class head) trained here on the demo's digits, with the demo's labelled training and held-out
  splits bundled — a residual net with a real task, so QAT's accuracy is measured, not its agreement
  with a random net.

      edgeconv export --model bench.qat_data:resnet10t_digits -t tflite-int8 --qat-epochs 2 --qat-lr 1e-4
"""
from __future__ import annotations

TRAIN_EPOCHS, LR = 3, 3e-3  # batch: bench/qat_bench.py BATCH


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


def resnet10t_digits(seed: int = 0):
    """timm resnet10t (10 classes) trained on the demo's digits split (AdamW, one-cycle; 1–3 min here)."""
    import torch

    from bench.qat_bench import train_float
    from bench.timm_env import import_timm
    from edgeconv.demo import heldout, training
    from edgeconv.demo.model import INPUT_SHAPE, MEAN, STD
    from edgeconv.models import ModelSpec

    timm = import_timm()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model("resnet10t", pretrained=False, num_classes=10)
        model = train_float(training(), seed, model, epochs=TRAIN_EPOCHS, lr=LR, weight_decay=1e-4)
    return ModelSpec(module=model.eval(), example_inputs=(torch.zeros(INPUT_SHAPE),), name="timm-resnet10t-digits",
                     mean=MEAN, std=STD, data=heldout, train_data=training)
