"""tflite-int8 on real nets from outside the zoo (timm, random-init, BatchNorm statistics from real
photos): every int8 layer judged in isolation is within one step of the simulation.

- squeeze-excite, two real spellings: timm's `SqueezeExcite` (MobileNetV3 / EfficientNet / LCNet:
  mean → conv_reduce → act → conv_expand → hard-sigmoid gate) in PP-LCNet, and
  `timm.layers.SEModule` (mean → fc1 → act → fc2 → sigmoid gate) in RegNetY-200MF, a net not used
  while the cause was found. Deep random-init nets cascade rounding into tens of steps end to end;
  the isolation check must still feed each layer the artifact's own inputs (it used to refuse
  those drifted tensors and charge the SE's 1×1 conv after the MEAN with the cascade: 8-11 steps).
- MobileViT's block (timm's own `MobileVitBlock`) on a 7×7 map: bilinear 7→8 resize before the
  patches' attention and 8→7 after it; TFLite's RESIZE_BILINEAR int8 has one scale for input and
  output, so the annotator shares it (with its own, the conv before it was clipped: 26 steps).
- CoaT's factorized attention (timm's own `SerialBlock`, two of them): the k-softmax is laid out by
  reshape → permute → transpose (copies at its 1/256 grid) that litert-torch folds into the matmul;
  each copy is checked against the softmax the file keeps, so the next block's softmax is paired with
  its own tensor, not taken by the first block's permute and left unverified.
- cross-covariance attention (EdgeNeXt-XXS's XCA): F.normalize is a division of an int8
  activation, which TFLite's int8 DIV kernel gets wrong (−128) for a numerator one step below its
  zero point; edgeconv keeps it out of that kernel.

timm comes from requirements-nodeps.txt and is imported through bench/timm_env.py (its
torchvision import is stubbed): it is a test dependency, not skipped when missing.
"""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from bench.timm_env import import_timm

SE_NETS = ["lcnet_050", "regnety_002"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from examples.zoo.images import write_folder

    return write_folder(tmp_path_factory.mktemp("photos"), 24)


def _export(ref: str, photos, out, *extra: str) -> tuple[dict, object]:
    """tflite-int8 of `ref`. These nets are random-init: their int8 program is far from fp32 on
    its own (cosine ~0.9, few decisive samples), which the fp32 floors rightly fail; the test
    lowers them explicitly, as a user accepting that model would, and judges the lowering — every
    layer in isolation and end to end against the simulation."""
    from edgeconv.cli import main

    res = CliRunner().invoke(main, ["export", "--model", ref, "-t", "tflite-int8", "--calib", str(photos),
                                    "--calib-samples", "16", "--eval-samples", "8", "--min-cosine", "0",
                                    "--min-top1", "0", "-o", str(out), *extra])
    manifest = json.loads((out / "edgeconv.json").read_text())
    (art,) = manifest["artifacts"]
    return art, res


def test_timm_imports_without_torchvision():
    import importlib.util

    timm = import_timm()
    assert timm.create_model("lcnet_050", pretrained=False) is not None
    # torch.onnx's op registry asks find_spec, which raised (logged once per op) on a stand-in without a spec
    assert importlib.util.find_spec("torchvision.ops") is not None


@pytest.mark.parametrize("name", SE_NETS)
def test_squeeze_excite_nets_layer_by_layer(tmp_path, photos, name):
    art, res = _export(f"bench.timm_nets:{name}", photos, tmp_path / "out", "--input-shape", "1,3,160,160")
    layers = art["parity"]["layers"]
    assert layers["layers"] >= 40, layers
    assert layers["worst_steps"] <= 1, (name, layers)
    assert layers["passed"], (name, layers)
    assert res.exit_code == 0, res.output


def test_cross_covariance_attention_layer_by_layer(tmp_path, photos):
    """EdgeNeXt-XXS (timm): its XCA blocks' F.normalize divisions are not int8 DIVs in the file,
    every layer is within a step in isolation (the int8 DIV gave 124-143 steps), and the file is
    full-integer (its positional encoding folded through its projection conv)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    art, res = _export("bench.timm_nets:edgenext_xx_small", photos, tmp_path / "out", "--input-shape", "1,3,128,128")
    layers = art["parity"]["layers"]
    assert layers["layers"] >= 100, layers
    assert layers["worst_steps"] <= 1, layers
    it = Interpreter(model_path=str(next((tmp_path / "out").glob("*.tflite"))))
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    divs = [op for op in it._get_ops_details() if op["op_name"] == "DIV"]  # noqa: SLF001
    assert not any(dtypes[int(op["inputs"][0])] == np.int8 for op in divs)
    # and nothing float left: the Fourier position encoding is one folded constant (no SIN/COS/DIV)
    assert art["float_ops"]["count"] == 0, art["float_ops"]
    assert layers["passed"], layers
    assert res.exit_code == 0, res.output


class MobileVitOn7x7(nn.Module):
    """A stride-8 conv stem to a 7×7 map, then timm's MobileViT block (patch 2: 7 → 8 → 7 bilinear
    around the transformer, as MobileViT-XXS's last stage at 224²)."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        import_timm()
        from timm.models.mobilevit import MobileVitBlock

        self.stem = nn.Sequential(nn.Conv2d(3, c, 8, 8), nn.BatchNorm2d(c), nn.SiLU())
        self.block = MobileVitBlock(c, c, transformer_dim=48, transformer_depth=1, patch_size=2, num_heads=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(x)).mean((2, 3))


def mobilevit_block():
    from examples.zoo._common import build

    return build(MobileVitOn7x7, "timm-mobilevit-block-56", 56)


def test_mobilevit_block_layer_by_layer(tmp_path, photos):
    art, res = _export("test_int8_catalog_blocks:mobilevit_block", photos, tmp_path / "out")
    layers = art["parity"]["layers"]
    assert layers["layers"] >= 15, layers
    assert layers["worst_steps"] <= 1, layers
    assert layers["passed"], layers
    assert res.exit_code == 0, res.output


class CoatSerialBlocks(nn.Module):
    """Patch-4 embedding to 8×8 tokens and a class token, then two of timm CoaT's serial blocks
    (shared conv position and conv relative position encodings: factorized attention, softmax of k
    over the tokens), mean readout."""

    def __init__(self, dim: int = 32, heads: int = 8, side: int = 32) -> None:
        super().__init__()
        import_timm()
        from timm.models.coat import ConvPosEnc, ConvRelPosEnc, SerialBlock

        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.grid = (side // 4, side // 4)
        cpe, crpe = ConvPosEnc(dim, 3), ConvRelPosEnc(dim // heads, heads, {3: 2, 5: 3, 7: 3})
        self.blocks = nn.ModuleList(SerialBlock(dim, heads, shared_cpe=cpe, shared_crpe=crpe) for _ in range(2))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(x).flatten(2).transpose(1, 2))
        x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), 1)
        for block in self.blocks:
            x = block(x, self.grid)
        return self.head(x.mean(1))


def coat_serial_blocks():
    from examples.zoo._common import build

    return build(CoatSerialBlocks, "timm-coat-serial-32", 32)


def test_coat_factorized_attention_layer_by_layer(tmp_path, photos):
    """Every int8 tensor of both blocks is judged: none left unverified (the second block's softmax
    and its three copies were, 52 such in timm CoaT-Ti), every layer within a step."""
    art, res = _export("test_int8_catalog_blocks:coat_serial_blocks", photos, tmp_path / "out")
    layers = art["parity"]["layers"]
    assert layers["excluded"] == [] and layers["unmatched"] == 0, layers
    assert layers["layers"] >= 100 and layers["covered"] >= 8, layers
    assert layers["worst_steps"] <= 1 and layers["passed"], layers
    assert res.exit_code == 0, res.output
