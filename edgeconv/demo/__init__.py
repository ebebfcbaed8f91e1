"""The embedded demo: a small edge-style conv net trained on sklearn's digits, with its held-out split.

`edgeconv.demo:demo` is the default `--model`. The weights (`demo_digits.pt`) and the held-out
split (`digits_heldout.npz`) ship in the package; `python -m edgeconv.demo.train` re-creates both.
torch is imported inside the functions: the CLI imports this module on its fast path.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgeconv.calib.data import DataSet
    from edgeconv.models import ModelSpec

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "demo_digits.pt"
HELDOUT = HERE / "digits_heldout.npz"


def heldout() -> "DataSet":
    """The held-out digits as preprocessed float32 NCHW model inputs with int64 labels."""
    from edgeconv.calib.data import DataSet

    with np.load(HELDOUT) as f:
        x, y = f["x"].astype(np.float32), f["y"].astype(np.int64)
    return DataSet(x, y, source="demo: sklearn digits held-out split", real=True)


def training() -> "DataSet":
    """The demo's training split of sklearn digits (disjoint from the held-out split), for QAT."""
    from edgeconv.calib.data import DataSet
    from edgeconv.demo.train import load_digits, preprocess, split_indices

    images, labels = load_digits()
    train_idx, _ = split_indices(labels)
    return DataSet(preprocess(images[train_idx]), labels[train_idx], source="demo: sklearn digits training split")


def demo() -> "ModelSpec":
    import torch

    from edgeconv.demo.model import INPUT_SHAPE, MEAN, STD, DemoNet
    from edgeconv.models import ModelSpec

    model = DemoNet()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return ModelSpec(module=model.eval(), example_inputs=(torch.zeros(INPUT_SHAPE),),
                     name="edgeconv-demo", mean=MEAN, std=STD, data=heldout,
                     train_data=training)
