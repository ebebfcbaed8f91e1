"""Full-integer hybrid nets: LayerNorm in its three spellings, fused and hand-written attention,
GELU, SiLU, StarReLU and layer-scale multiplies lowered to int8 builtins in every int8 format
(no DEQUANTIZE/QUANTIZE island), each layer matched and judged in isolation; a quant config keeps
an op type float, and `--int8-for cpu` keeps float exactly the op types XNNPACK cannot run in int8.

The net is `tests.zoo:hybrid` (random weights, norms from real photos as the zoo does); calibration
on real photo crops."""
from __future__ import annotations

import json
import tomllib
from importlib import resources

import pytest
from click.testing import CliRunner

from edgeconv.cli import main


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    from examples.zoo.images import write_folder

    return write_folder(tmp_path_factory.mktemp("calib"), 24, side=32)


def _export(out, calib, *args: str) -> dict:
    res = CliRunner().invoke(main, ["export", "--model", "zoo:hybrid", "--calib", str(calib), "--calib-samples",
                                    "16", "--eval-samples", "8", "-o", str(out), *args])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "edgeconv.json").read_text())
    return manifest | {"by_target": {a["target"]: a for a in manifest["artifacts"]}}


@pytest.fixture(scope="module")
def full(tmp_path_factory, calib):
    return _export(tmp_path_factory.mktemp("full"), calib, "-t", "tflite-int8", "-t", "onnx-int8", "-t", "coreml-w8a8")


def test_every_int8_format_is_full_integer(full):
    arts = full["by_target"]
    assert arts["tflite-int8"]["float_ops"]["count"] == 0, arts["tflite-int8"]["float_ops"]
    assert arts["onnx-int8"]["float_ops"]["count"] == 0, arts["onnx-int8"]["float_ops"]
    # CoreML: hard-swish is written as a gate on the dequantized input (exporters/coreml/export.py)
    assert arts["coreml-w8a8"]["float_ops"]["count"] == 0, arts["coreml-w8a8"]["float_ops"]
    # the norms' v + eps on v's own scale is an int8 identity, dropped as the converters drop it
    notes = [note for stage in full["stages"] if stage["stage"] == "quantize" for note in stage["notes"]]
    assert any("ADD(s) of a constant that rounds to zero" in note for note in notes), notes


def test_every_layer_is_matched_and_within_a_step(full):
    for target, a in full["by_target"].items():
        layers = a["parity"]["layers"]
        assert layers["passed"] and layers["unmatched"] == 0 and layers["worst_steps"] <= 1, (target, layers)
        assert layers["layers"] >= 70, (target, layers["layers"])  # norms, both attentions, MLP: all judged


def test_quant_config_keeps_an_op_type_float(tmp_path, calib):
    config = tmp_path / "q.json"
    config.write_text(json.dumps({"op_type": {"layer_norm": None}}))
    m = _export(tmp_path / "o", calib, "-t", "tflite-int8", "--quant-config", str(config))
    ops = m["by_target"]["tflite-int8"]["float_ops"]
    kinds = {op.split()[0] for op in ops["ops"]}
    assert {"MEAN", "RSQRT", "DEQUANTIZE", "QUANTIZE"} <= kinds, kinds  # the three norms, float
    assert "GELU" not in kinds and "BATCH_MATMUL" not in kinds, kinds   # nothing else
    assert m["quant_config"]["op_type"] == {"layer_norm": None}


def _xnnpack_float_only() -> set[str]:
    """TFLite ops XNNPACK's table delegates in float only (rules named *float-only)."""
    table = tomllib.loads(resources.files("edgeconv.devices.delegates").joinpath("xnnpack.toml").read_text())
    return {op for rule in table["rule"] if "float-only" in rule["id"] for op in rule["ops"]}


def test_int8_for_cpu_keeps_float_what_xnnpack_runs_only_in_float(tmp_path, calib, full):
    """The preset's op types are the ones XNNPACK's table takes in float only, and XNNPACK (measured
    on this host) leaves fewer ops to TFLite's builtin kernels than in the full-integer file."""
    from edgeconv.config import INT8_FOR

    preset = dict(INT8_FOR["cpu"].op_type)
    assert set(preset.values()) == {None}
    lowered_as = {"gelu": "GELU", "softmax": "SOFTMAX", "hardswish": "HARD_SWISH"}
    assert {lowered_as[op] for op in preset if op in lowered_as} <= _xnnpack_float_only()

    m = _export(tmp_path / "cpu", calib, "-t", "tflite-int8", "--int8-for", "cpu")
    assert m["quant_config"]["op_type"] == preset
    kinds = {op.split()[0] for op in m["by_target"]["tflite-int8"]["float_ops"]["ops"]}
    assert {"GELU", "SOFTMAX", "HARD_SWISH", "RSQRT"} <= kinds, kinds

    def xnnpack(manifest):
        return next(p for p in manifest["by_target"]["tflite-int8"]["delegates"] if p["delegate"] == "xnnpack")

    npu, cpu = xnnpack(full), xnnpack(m)
    assert npu["how"] == cpu["how"] == "measured"
    assert cpu["cpu_ops"] < npu["cpu_ops"], (cpu, npu)
    fallbacks = " ".join(cpu["fallbacks"])
    assert not any(f"{op} " in fallbacks for op in ("GELU", "SOFTMAX", "HARD_SWISH")), fallbacks


def test_int8_for_cpu_on_a_class_token_readout(tmp_path, calib):
    """`x[:, 0]` after a LayerNorm kept float shares the norm's qparams: the select is float too, and
    so is the head reading it. The quantize pass used to fail (`KeyError: select`) on every
    ViT-style timm net (DeiT-Ti: `--int8-for cpu` could not export)."""
    res = CliRunner().invoke(main, ["export", "--model", "zoo:class_token_head", "--calib", str(calib),
                                    "--calib-samples", "16", "--eval-samples", "8", "-t", "tflite-int8",
                                    "--int8-for", "cpu", "--min-cosine", "0", "--min-top1", "0",
                                    "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (art,) = json.loads((tmp_path / "edgeconv.json").read_text())["artifacts"]
    layers = art["parity"]["layers"]
    assert layers["passed"] and layers["layers"] >= 4 and layers["worst_steps"] <= 1, layers
    assert "head" in " ".join(art["float_layers"]) or any("FULLY_CONNECTED" in op for op in art["float_ops"]["ops"])


def test_a_tensor_changed_in_place_is_not_merged_with_its_twin():
    """timm MViTv2 builds each block's relative-position index the same way, then adds an offset in
    place; merging the twins applied the offset twice (quantize failed: index 27 out of bounds)."""
    import torch
    from torch import nn

    from edgeconv.calib import rewrites

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.randn(7, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for _ in range(2):
                dist = torch.arange(4)[:, None] - torch.arange(4)[None, :]
                dist += 3  # 0..6
                x = x + self.table[dist].sum(-1)
            return x

    x = torch.randn(1, 4, 4)
    gm = torch.export.export(Net().eval(), (x,), strict=False).module()
    before = gm(x)
    merged = rewrites.merge_duplicates(gm)
    gm.recompile()
    assert merged and torch.equal(gm(x), before)


@pytest.mark.parametrize("k,d,p,s", [(3, 1, 1, 1), (3, 2, 2, 1), (2, 1, 0, 2), (3, 1, 0, 1), (3, 1, 1, 2),
                                     (3, 1, 1, 3)])
def test_unfold_and_fold_become_one_hot_depthwise_convs(k, d, p, s):
    """F.unfold / F.fold (VOLO) as depthwise convs with 0/1 weights (a strided fold spread with
    zeros first): the same values to float rounding, and no im2col/col2im left."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from edgeconv.calib import rewrites

    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            u = F.unfold(x, k, dilation=d, padding=p, stride=s)
            return F.fold(u * u.mean(1, keepdim=True), x.shape[-2:], k, dilation=d, padding=p, stride=s)

    x = torch.randn(2, 3, 10, 10)
    gm = torch.export.export(Net().eval(), (x,), strict=False).module()
    before = gm(x)
    assert len(rewrites.unfold_fold_to_convs(gm)) == 2
    gm.recompile()
    left = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"} & {"aten.im2col.default",
                                                                                  "aten.col2im.default"}
    assert left == set()
    assert torch.allclose(gm(x), before, atol=1e-5), float((gm(x) - before).abs().max())


def test_rewrites_keep_the_values_and_leave_no_op_unannotated():
    """calib.rewrites on the hybrid net: the same function (float), and then every activation op has
    an int8 annotation (nothing left for a float island); the arange/sin encoding became a constant."""
    import torch

    import zoo
    from edgeconv.calib import annotate, rewrites
    from edgeconv.calib.observers import quantization_config

    spec = zoo.hybrid()
    gm = torch.export.export(spec.module.eval(), spec.example_inputs, strict=False).module()
    before = gm(*spec.example_inputs)
    done = {r.__name__: r(gm) for r in rewrites.REWRITES}
    gm.recompile()
    assert torch.allclose(gm(*spec.example_inputs), before, atol=1e-5)
    for name in ("fold_constants", "layer_norm_to_primitives", "sdpa_to_primitives", "unbind_to_select",
                 "l2_normalize_to_rsqrt", "algebra_to_int8_ops", "silu_to_sigmoid_mul", "scalars_to_constants",
                 "merge_duplicates"):
        assert done[name], f"{name} found nothing to rewrite in the hybrid net"
    annotate.annotate_graph(gm, quantization_config())
    assert list(annotate.describe(gm)) == []


def test_a_created_encoding_folds_through_its_projection_only_when_frozen():
    """EdgeNeXt's positional encoding: arange/cumsum/sin built in forward, then a 1×1 projection conv
    (parameters), added to the features. Post-training (frozen) the whole encoding is one constant
    operand of the add, the same values; for QAT (not frozen) the projection stays a conv of the
    parameters it trains. Arithmetic on parameters alone that an activation op reads (a softmax of
    mixing weights, timm EfficientViM) is folded when frozen; a layer scale's view is not."""
    import torch
    from torch import nn

    from edgeconv.calib import rewrites

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(8, 4, 1)
            self.gamma = nn.Parameter(torch.rand(4))
            self.mix = nn.Parameter(torch.rand(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, _, h, w = x.shape
            y = torch.ones(b, h, w).cumsum(1)
            t = 100.0 ** (torch.arange(4, dtype=torch.float32) / 4)
            pos = torch.cat([torch.sin(y[..., None] / t), torch.cos(y[..., None] / t)], -1).permute(0, 3, 1, 2)
            return (x + self.proj(pos)) * self.gamma[:, None, None] + x * self.mix.softmax(0)[:, None, None]

    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 6)
    net = Net().eval()

    def convs(gm):
        return sum(n.target is torch.ops.aten.conv2d.default for n in gm.graph.nodes)

    for frozen, left in ((True, 0), (False, 1)):
        gm = torch.export.export(net, (x,), strict=False).module()
        before = gm(x)
        folded = rewrites.fold_constants(gm, frozen)
        gm.recompile()
        assert bool(folded) is frozen and convs(gm) == left
        softmaxes = sum(n.target is torch.ops.aten.softmax.int for n in gm.graph.nodes)
        assert softmaxes == (0 if frozen else 1)
        assert torch.allclose(gm(x), before, atol=1e-6)
        # the layer scale's view still reads the parameter (not folded into a new constant)
        assert any(n.op == "get_attr" and "gamma" in n.target for n in gm.graph.nodes)


def test_variance_norm_becomes_int8_ops():
    """timm SimpleNorm2d (x · rsqrt(var(x) + eps) · γ; ConvNeXt-zepto-rms, 15 float islands in each
    int8 format before): var → MEAN/SUB/MUL, the same values, every activation op annotated, and the
    variance pieces calibrated with the norm spec (least squared error)."""
    import torch
    from torch import nn

    from edgeconv.calib import annotate, rewrites
    from edgeconv.calib.observers import norm_spec, quantization_config

    class SimpleNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.weight = nn.Parameter(torch.rand(8) + 0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv(x)
            v = torch.var(x, dim=1, unbiased=False, keepdim=True)
            return x * torch.rsqrt(v + 1e-6) * self.weight.reshape(1, -1, 1, 1) + torch.var(x, dim=(2, 3)).mean()

    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    gm = torch.export.export(SimpleNorm().eval(), (x,), strict=False).module()
    before = gm(x)
    assert len(rewrites.variance_to_primitives(gm)) == 2
    gm.recompile()
    assert torch.allclose(gm(x), before, rtol=1e-5, atol=1e-6)
    assert not any("var" in str(n.target) for n in gm.graph.nodes if n.op == "call_function")
    config = quantization_config()
    spec = norm_spec(config.input_activation)
    assert spec is not config.input_activation  # min-max activations: the norm's pieces by MSE
    annotate.annotate_graph(gm, config, norm_spec=spec)
    assert list(annotate.describe(gm)) == []
    typed = [n for n in gm.graph.nodes if n.meta.get("edgeconv_op_type") == "var" and n.target is torch.ops.aten.mean.dim]
    assert typed and all(n.meta["quantization_annotation"].output_qspec is spec for n in typed)


def test_class_token_concat_is_int8():
    """ViT's class token (a parameter, expanded) concatenated with the patch tokens: the constant input
    shares the concat's scale, so the CONCATENATION is int8 (it was the one float op left in timm ViT,
    DeiT, CaiT, ConViT and CrossViT ONNX files)."""
    import torch
    from torch import nn

    from edgeconv.calib import annotate, rewrites
    from edgeconv.calib.observers import quantization_config

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls = nn.Parameter(torch.randn(1, 1, 8))
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.fc(x)
            return torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1).mean(1)

    gm = torch.export.export(Tokens().eval(), (torch.randn(1, 5, 8),), strict=False).module()
    rewrites.transform(gm, frozen=True)
    annotate.annotate_graph(gm, quantization_config())
    assert list(annotate.describe(gm)) == []
    cat = next(n for n in gm.graph.nodes if n.target is torch.ops.aten.cat.default)
    ann = cat.meta["quantization_annotation"]
    assert set(ann.input_qspec_map) == set(cat.args[0])  # the class token's edge is quantized too


def test_layer_kinds_name_depthwise_convs_by_kernel_area():
    from edgeconv.graph import capture
    from edgeconv.quant.fallback import compute_layers
    from tests.zoo import depthwise_kernels

    spec = depthwise_kernels()
    kinds = {layer: k for _, k, layer in compute_layers(capture(spec.module, spec.example_inputs))}
    assert kinds == {"stem": ("conv2d",), "dw3": ("depthwise_conv2d", "conv2d"),
                     "dw7": ("depthwise_conv2d_large", "depthwise_conv2d", "conv2d"), "grouped": ("conv2d",),
                     "dw5x7": ("depthwise_conv2d_large", "depthwise_conv2d", "conv2d"), "head": ("linear",)}, kinds


def test_int8_for_cpu_keeps_large_depthwise_convs_float(tmp_path, calib):
    """XNNPACK runs a depthwise conv of more than 25 taps in several passes, far slower in int8
    (bench/results/dwconv_kernels.json): the CPU preset keeps exactly those float, the rest int8."""
    def export(out, *args):
        res = CliRunner().invoke(main, ["export", "--model", "tests.zoo:depthwise_kernels", "--calib", str(calib),
                                        "--calib-samples", "16", "--eval-samples", "8", "-t", "tflite-int8",
                                        "-o", str(out), *args])
        assert res.exit_code == 0, res.output
        (art,) = json.loads((out / "edgeconv.json").read_text())["artifacts"]
        return art

    npu, cpu = export(tmp_path / "npu"), export(tmp_path / "cpu", "--int8-for", "cpu")
    assert npu["float_ops"]["count"] == 0, npu["float_ops"]
    float_convs = sorted((name, op) for op, name in [(o.split()[0], o.split()[1].rsplit("Conv2d_", 1)[-1].split(";")[0])
                                                     for o in cpu["float_ops"]["ops"]
                                                     if o.startswith(("CONV_2D", "DEPTHWISE_CONV_2D"))])
    # the two large ones, and the grouped conv that reads dw7's float output (a float op's readers
    # compute in float: README, "Full-integer int8, and int8 for a CPU"); dw3 and the stem stay int8
    assert float_convs == [("dw5x7", "DEPTHWISE_CONV_2D"), ("dw7", "DEPTHWISE_CONV_2D"), ("grouped", "CONV_2D")], \
        cpu["float_ops"]["ops"]
    layers = cpu["parity"]["layers"]
    assert cpu["parity"]["passed"] and layers["worst_steps"] <= 1, cpu["parity"]
