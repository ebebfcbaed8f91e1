"""The dense zoo (examples/zoo/dense.py): every net builds, runs, and declares what each of its
outputs is, in the order forward returns them; the ops it brought in are handled at the root
(the MIL evaluator's conv_transpose: tests/test_mil_eval_ops.py; Core ML's rank limit below)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.outputs import OutputKind

NETS = {"lraspp_small": ["class-map"], "segformer_small": ["class-map"],
        "ssdlite_small": ["boxes", "scores"] * 3, "dbnet_small": ["mask"], "swinir_small": ["image"]}


@pytest.mark.parametrize("net", list(NETS))
def test_dense_net_declares_its_outputs(net):
    from examples.zoo import dense

    spec = getattr(dense, net)()
    with torch.no_grad():
        y = spec.module(*spec.example_inputs)
    ys = y if isinstance(y, tuple) else (y,)
    assert [o.kind.value for o in spec.outputs] == NETS[net]
    assert len({o.name for o in spec.outputs}) == len(ys)  # one distinct name per output
    for o, t in zip(spec.outputs, ys):
        assert t.dim() == 4 and torch.isfinite(t).all()
        if o.kind is OutputKind.BOXES:
            assert t.shape[1] % 4 == 0
        if o.kind is OutputKind.IMAGE:  # x2 super-resolution
            assert t.shape[-1] == 2 * spec.example_inputs[0].shape[-1]
        if o.kind is OutputKind.MASK:
            assert 0 <= float(t.min()) and float(t.max()) <= 1


class Windows(torch.nn.Module):
    """A window partition as SwinIR writes it: a rank-6 view, permute, reshape (Core ML holds rank <= 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.mix = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 8)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        t = y.view(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(-1, 16, c)
        t = self.mix(t)
        return t.view(b, h // 4, w // 4, 4, 4, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def windows():
    from edgeconv.models import ModelSpec

    torch.manual_seed(0)
    return ModelSpec(Windows().eval(), (torch.zeros(1, 3, 8, 8),), name="windows")


def test_rank6_window_partition_converts_to_coreml_w8a8(tmp_path, monkeypatch):
    """The requantize of a rank-6 move at its input's own scale is dropped, so coremltools folds the
    chain (before: 'Core ML only supports tensors with rank <= 5'); the artifact still matches."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["export", "--model", "test_dense_zoo:windows", "-t", "coreml-w8a8", "--calib",
                                    "random", "--calib-samples", "8", "--eval-samples", "4", "-o", str(out)])
    assert res.exit_code == 0, res.output
    art = json.loads((out / "edgeconv.json").read_text())["artifacts"][0]
    assert art["failure"] == "" and art["parity"]["passed"]
    assert art["parity"]["outputs"][0]["kind"] == "class-map"  # 8 channels per pixel, inferred
