"""An in-repo zoo of the architecture families users bring to the edge, written from the papers.

Random weights with a fixed seed, normalisation layers made realistic (random-but-sane affine
parameters, BatchNorm statistics measured on real photos: `_common.build`), small enough that a
224² export of one net to one target takes seconds. Every factory takes no argument and returns an
`edgeconv.models.ModelSpec`, so `--model examples.zoo.mobilenet:mobilenet_v2` works from the repo
root; each family has a full-size factory (224² classification, 64² → 192² ×3 super-resolution)
and a `_small` one (64², resp. 32²: fewer blocks and channels, same op kinds) for CI.

`FAMILIES` is the table the coverage bench (`bench/coverage.py`) and the tests iterate. It holds
strings only: importing it imports no model code.
"""
from __future__ import annotations

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    full: str  # factory ref, package.module:function
    small: str
    task: str  # "classify" or "super-resolution"
    paper: str
    watch: str  # what matters for deployment, in a few words

    def ref(self, size: str) -> str:
        if size not in ("full", "small"):
            raise ValueError(f"size {size!r}: choose full or small")
        return self.full if size == "full" else self.small


def _f(name: str, module: str, fn: str, task: str, paper: str, watch: str) -> Family:
    return Family(name, f"examples.zoo.{module}:{fn}", f"examples.zoo.{module}:{fn}_small", task, paper, watch)


C, SR = "classify", "super-resolution"
FAMILIES: dict[str, Family] = {f.name: f for f in (
    _f("mobilenet_v2", "mobilenet", "mobilenet_v2", C, "Sandler et al. 2018, MobileNetV2",
       "ReLU6, depthwise, residual ADDs"),
    _f("mobilenet_v3", "mobilenet", "mobilenet_v3", C, "Howard et al. 2019, Searching for MobileNetV3",
       "SE (hard-sigmoid gate MUL), hard-swish, 5x5 depthwise"),
    _f("repvgg", "repvgg", "repvgg", C, "Ding et al. 2021, RepVGG",
       "train-time 3-branch blocks, switch_to_deploy()"),
    _f("mobileone", "repvgg", "mobileone", C, "Vasu et al. 2023, MobileOne",
       "k over-parameterized branches, reparameterize()"),
    _f("unireplknet", "unireplknet", "unireplknet", C, "Ding et al. 2024, UniRepLKNet",
       "13x13 depthwise + dilated branches (merge_dilated_branches()), SE, GRN, GELU"),
    _f("lsnet", "lsnet", "lsnet", C, "Wang et al. 2025, LSNet: See Large, Focus Small",
       "large-kernel perception, dynamic small-kernel aggregation (activation x activation), attention"),
    _f("inceptionnext", "inceptionnext", "inceptionnext", C, "Yu et al. 2024, InceptionNeXt",
       "identity/square/band depthwise branches CONCAT then BatchNorm"),
    _f("convformer", "metaformer", "convformer", C, "Yu et al. 2023, MetaFormer Baselines for Vision",
       "channels-last LayerNorm w/o bias, StarReLU (squared), separable conv"),
    _f("caformer", "metaformer", "caformer", C, "Yu et al. 2023, MetaFormer Baselines for Vision",
       "ConvFormer stages + self-attention stages (matmul, softmax)"),
    _f("casvit", "casvit", "casvit", C, "Zhang et al. 2024, CAS-ViT",
       "convolutional additive attention: sigmoid gates, (Q'+K') x V products"),
    _f("hornet", "hornet", "hornet", C, "Rao et al. 2022, HorNet",
       "gnConv: recursive products of activations (order 2-5), channels-first LayerNorm"),
    _f("ecanet", "ecanet", "ecanet", C, "Wang et al. 2020, ECA-Net",
       "1-D conv channel attention over transposed pooled features, expand_as MUL"),
    _f("convnext", "convnext", "convnext", C, "Liu et al. 2022, A ConvNet for the 2020s",
       "7x7 depthwise, LayerNorm (both layouts), GELU, layer scale"),
    _f("ghostnet", "ghostnet", "ghostnet", C, "Tang et al. 2022, GhostNetV2 (Han et al. 2020, GhostNet)",
       "cheap-op CONCAT+slice, DFC attention (band depthwise, nearest upsample), hard-sigmoid SE"),
    _f("simplenet", "simplenet", "simplenet", C, "Hasanpour et al. 2016, SimpleNet",
       "plain conv-BN-ReLU + max pool: the baseline"),
    _f("espcn", "sr", "espcn", SR, "Shi et al. 2016, ESPCN", "tanh, pixel shuffle, image output"),
    _f("imdn", "sr", "imdn", SR, "Hui et al. 2019, IMDN",
       "channel split/concat distillation, contrast (std) attention, LeakyReLU, pixel shuffle"),
    _f("cfsr", "sr", "cfsr", SR, "Wu et al. 2024, CFSR",
       "9x9 depthwise token mixer with gating MUL, LayerNorm, edge FFN, pixel shuffle"),
)}


def load(ref: str):
    """Call a factory ref (`examples.zoo.module:function`): the ModelSpec."""
    mod, _, fn = ref.partition(":")
    return getattr(importlib.import_module(mod), fn)()


def select(text: str) -> list[str]:
    """The families a comma-separated `--nets` value names (all when empty); a ValueError naming
    the unknown ones and the choices."""
    nets = [n for n in text.split(",") if n] or list(FAMILIES)
    unknown = [n for n in nets if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown net(s) {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    return nets
