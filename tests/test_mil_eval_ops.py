"""Every op of the MIL evaluator against torch.

Each case builds a one-op MIL program with coremltools' own builder, saves it as a real .mlpackage
(empty pass pipeline, so the op reaches the file as written), reads it back through the same loader
the CoreML runner uses, evaluates it with numpy and compares with the torch function that defines
the op, within 1e-4 of the output's range (quantize: exact). The last test fails if the evaluator
knows an op that no case here covers.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("coremltools", reason="needs coremltools (pip install 'edgeconv[coreml]')")

from edgeconv.exporters.coreml.mil import kernels as mil_kernels  # noqa: E402

from edgeconv.exporters.coreml.mil import program as mil_program  # noqa: E402
from edgeconv.exporters.coreml.coremltools_import import import_coremltools  # noqa: E402

ct = import_coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402

RNG = np.random.default_rng(0)
T = torch.from_numpy
f32 = np.float32


def _k(x, k: float):
    return mb.mul(x=x, y=f32(k))


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(f32)


def case(op: str, shapes, build, ref, opset="iOS17", exact=False, low=None, high=None, ident=None):
    return pytest.param(op, shapes, build, ref, opset, exact, low, high, id=ident or op)


W_CONV = _w(6, 4, 3, 3)
W_DW = _w(4, 1, 3, 3)
W_1D = _w(5, 4, 3)
W_3D = _w(3, 2, 2, 2, 2)
W_CT = _w(4, 3, 3, 3)  # conv_transpose: (C_in, C_out/groups, kH, kW)
W_CT_G = _w(4, 3, 3, 2)
B6 = _w(6)
W_LIN = _w(7, 5)
B7 = _w(7)
GAMMA, BETA, MEAN, VAR = _w(4), _w(4), _w(4), np.abs(_w(4)) + 0.5
ALPHA4 = np.abs(_w(4)) * 0.3
QW = RNG.integers(-127, 128, size=(6, 4, 3, 3)).astype(np.int8)
QS = (np.abs(_w(6)) * 0.01 + 1e-3).astype(f32)

X4 = (1, 4, 9, 9)
GND = np.array([[[0, 3], [0, 1]], [[0, 0], [0, 2]]], np.int32)  # gather_nd: (2, 2, K=2) into (1, 4, ...)
GND_B = np.array([[[3, 8], [1, 0], [2, 5]]], np.int32)  # batch_dims=1: (1, 3, K=2) into each (4, 9, 9)
X2 = (3, 5)

CASES = [
    # --- conv ---------------------------------------------------------------------------------
    case("conv", [X4], lambda x: mb.conv(x=x, weight=W_CONV, bias=B6, strides=[2, 1], pad_type="custom",
                                          pad=[1, 2, 0, 1], dilations=[1, 2]),
         lambda x: F.conv2d(F.pad(x, (0, 1, 1, 2)), T(W_CONV).double(), T(B6).double(), stride=(2, 1), dilation=(1, 2)),
         ident="conv-custom-pad-stride-dilation"),
    case("conv", [X4], lambda x: mb.conv(x=x, weight=W_DW, groups=4, pad_type="same"),
         lambda x: F.conv2d(x, T(W_DW).double(), padding="same", groups=4), ident="conv-depthwise-same"),
    case("conv", [X4], lambda x: mb.conv(x=x, weight=W_CONV, strides=[2, 2], pad_type="same_lower"),
         # same_lower on 9 with k3 s2: total pad 2 -> (1, 1); same as torch padding=1
         lambda x: F.conv2d(x, T(W_CONV).double(), stride=2, padding=1), ident="conv-same-lower-stride"),
    case("conv", [(2, 4, 11)], lambda x: mb.conv(x=x, weight=W_1D, pad_type="valid", strides=[2]),
         lambda x: F.conv1d(x, T(W_1D).double(), stride=2), ident="conv-1d"),
    case("conv", [(1, 2, 4, 5, 5)], lambda x: mb.conv(x=x, weight=W_3D, pad_type="valid"),
         lambda x: F.conv3d(x, T(W_3D).double()), ident="conv-3d"),
    case("conv_transpose", [(1, 4, 5, 6)], lambda x: mb.conv_transpose(x=x, weight=W_CT, bias=B6[:3], strides=[2, 2]),
         lambda x: F.conv_transpose2d(x, T(W_CT).double(), T(B6[:3]).double(), stride=2),
         ident="conv-transpose-stride2-valid"),
    case("conv_transpose", [(1, 4, 5, 6)], lambda x: mb.conv_transpose(
        x=x, weight=W_CT_G, strides=[2, 1], pad_type="custom", pad=[1, 1, 0, 0], dilations=[1, 2], groups=2,
        output_shape=[1, 6, 10, 8]),
         lambda x: F.conv_transpose2d(x, T(W_CT_G).double(), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2,
                                      output_padding=(1, 0)),
         ident="conv-transpose-groups-pad-dilation-output-padding"),
    # --- linear algebra -----------------------------------------------------------------------
    case("linear", [X2], lambda x: mb.linear(x=x, weight=W_LIN, bias=B7),
         lambda x: F.linear(x, T(W_LIN).double(), T(B7).double())),
    case("matmul", [(2, 3, 4), (2, 5, 4)], lambda x, y: mb.matmul(x=x, y=y, transpose_y=True),
         lambda x, y: x @ y.transpose(-1, -2)),
    # --- activations --------------------------------------------------------------------------
    case("relu", [X4], lambda x: mb.relu(x=x), F.relu),
    case("relu6", [X4], lambda x: mb.relu6(x=_k(x, 4)), lambda x: F.relu6(x * 4)),
    case("clip", [X4], lambda x: mb.clip(x=x, alpha=-0.5, beta=0.7), lambda x: x.clamp(-0.5, 0.7)),
    case("sigmoid", [X4], lambda x: mb.sigmoid(x=x), torch.sigmoid),
    case("tanh", [X4], lambda x: mb.tanh(x=x), torch.tanh),
    case("silu", [X4], lambda x: mb.silu(x=x), F.silu),
    case("softplus", [X4], lambda x: mb.softplus(x=x), F.softplus),
    case("sigmoid_hard", [X4], lambda x: mb.sigmoid_hard(x=_k(x, 4), alpha=1 / 6, beta=0.5),
         lambda x: F.hardsigmoid(x * 4)),
    case("leaky_relu", [X4], lambda x: mb.leaky_relu(x=x, alpha=0.1), lambda x: F.leaky_relu(x, 0.1)),
    case("thresholded_relu", [X4], lambda x: mb.thresholded_relu(x=x, alpha=0.3), lambda x: F.threshold(x, 0.3, 0.0)),
    case("elu", [X4], lambda x: mb.elu(x=x, alpha=0.7), lambda x: F.elu(x, 0.7)),
    case("prelu", [X4], lambda x: mb.prelu(x=x, alpha=ALPHA4), lambda x: F.prelu(x, T(ALPHA4).double())),
    case("gelu", [X4], lambda x: mb.gelu(x=x, mode="EXACT"), F.gelu, ident="gelu-exact"),
    case("gelu", [X4], lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
         lambda x: F.gelu(x, approximate="tanh"), ident="gelu-tanh"),
    case("softmax", [X4], lambda x: mb.softmax(x=x, axis=1), lambda x: F.softmax(x, 1)),
    case("identity", [X4], lambda x: mb.identity(x=x), lambda x: x),
    # --- elementwise --------------------------------------------------------------------------
    case("add", [X4, (1, 4, 1, 1)], lambda x, y: mb.add(x=x, y=y), torch.add),
    case("sub", [X4, X4], lambda x, y: mb.sub(x=x, y=y), torch.sub),
    case("mul", [X4, (9,)], lambda x, y: mb.mul(x=x, y=y), torch.mul),
    case("real_div", [X4, X4], lambda x, y: mb.real_div(x=x, y=y), torch.div, low=0.5, high=2.0),
    case("maximum", [X4, X4], lambda x, y: mb.maximum(x=x, y=y), torch.maximum),
    case("minimum", [X4, X4], lambda x, y: mb.minimum(x=x, y=y), torch.minimum),
    case("pow", [X4], lambda x: mb.pow(x=x, y=f32(1.7)), lambda x: x ** 1.7, low=0.1, high=2.0),
    case("floor_div", [X4, X4], lambda x, y: mb.floor_div(x=x, y=y), lambda x, y: torch.div(x, y, rounding_mode="floor"),
         low=0.5, high=3.0),
    case("equal", [X4], lambda x: mb.cast(x=mb.equal(x=mb.round(x=x), y=f32(1.0)), dtype="fp32"),
         lambda x: (torch.round(x) == 1).double(), low=-2, high=2),
    case("greater", [X4, X4], lambda x, y: mb.cast(x=mb.greater(x=x, y=y), dtype="fp32"), lambda x, y: (x > y).double()),
    case("less", [X4, X4], lambda x, y: mb.cast(x=mb.less(x=x, y=y), dtype="fp32"), lambda x, y: (x < y).double()),
    case("select", [X4, X4], lambda x, y: mb.select(cond=mb.greater(x=x, y=y), a=x, b=y), torch.maximum),
    case("exp", [X4], lambda x: mb.exp(x=x), torch.exp),
    case("abs", [X4], lambda x: mb.abs(x=x), torch.abs),
    case("sqrt", [X4], lambda x: mb.sqrt(x=x), torch.sqrt, low=0.01, high=4.0),
    case("rsqrt", [X4], lambda x: mb.rsqrt(x=x, epsilon=1e-6), lambda x: torch.rsqrt(x + 1e-6), low=0.01, high=4.0),
    case("inverse", [X4], lambda x: mb.inverse(x=x, epsilon=1e-6), lambda x: 1 / (x + 1e-6), low=0.1, high=4.0),
    case("log", [X4], lambda x: mb.log(x=x, epsilon=1e-6), lambda x: torch.log(x + 1e-6), low=0.01, high=4.0),
    case("square", [X4], lambda x: mb.square(x=x), torch.square),
    case("floor", [X4], lambda x: mb.floor(x=_k(x, 3)), lambda x: torch.floor(x * 3)),
    case("ceil", [X4], lambda x: mb.ceil(x=_k(x, 3)), lambda x: torch.ceil(x * 3)),
    case("round", [X4], lambda x: mb.round(x=_k(x, 3)), lambda x: torch.round(x * 3)),
    case("sign", [X4], lambda x: mb.sign(x=x), torch.sign),
    case("sin", [X4], lambda x: mb.sin(x=x), torch.sin),
    case("cos", [X4], lambda x: mb.cos(x=x), torch.cos),
    case("erf", [X4], lambda x: mb.erf(x=x), torch.erf),
    case("cast", [X4], lambda x: mb.cast(x=mb.cast(x=_k(x, 3), dtype="int32"), dtype="fp32"),
         lambda x: (x * 3).to(torch.int32).double(), ident="cast-fp32-int32-fp32"),
    case("cast", [X4], lambda x: mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"),
         lambda x: x.float().half().double(), ident="cast-fp16"),
    # --- pooling ------------------------------------------------------------------------------
    case("max_pool", [X4], lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                  pad=[1, 1, 1, 1], ceil_mode=True),
         lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), ident="max_pool-ceil"),
    case("max_pool", [X4], lambda x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
         lambda x: F.max_pool2d(x, 2, 2), ident="max_pool-valid"),
    case("avg_pool", [X4], lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                  pad=[1, 1, 1, 1], exclude_padding_from_average=True),
         lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), ident="avg_pool-exclude-pad"),
    case("avg_pool", [X4], lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                  pad=[1, 1, 1, 1], exclude_padding_from_average=False),
         lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=True), ident="avg_pool-include-pad"),
    case("avg_pool", [(1, 3, 16)], lambda x: mb.avg_pool(x=x, kernel_sizes=[4], strides=[4], pad_type="valid"),
         lambda x: F.avg_pool1d(x, 4, 4), ident="avg_pool-1d"),
    # --- reductions ---------------------------------------------------------------------------
    case("reduce_mean", [X4], lambda x: mb.reduce_mean(x=x, axes=[-2, -1], keep_dims=True),
         lambda x: x.mean((-2, -1), keepdim=True)),
    case("reduce_sum", [X4], lambda x: mb.reduce_sum(x=x, axes=[1]), lambda x: x.sum(1)),
    case("reduce_max", [X4], lambda x: mb.reduce_max(x=x, axes=[2, 3], keep_dims=False), lambda x: x.amax((2, 3))),
    case("reduce_min", [X4], lambda x: mb.reduce_min(x=x, axes=[1], keep_dims=True), lambda x: x.amin(1, keepdim=True)),
    case("reduce_prod", [X4], lambda x: mb.reduce_prod(x=x, axes=[1]), lambda x: x.prod(1), low=0.5, high=1.5),
    case("reduce_l2_norm", [X4], lambda x: mb.reduce_l2_norm(x=x, axes=[1]), lambda x: x.norm(dim=1)),
    case("reduce_l1_norm", [X4], lambda x: mb.reduce_l1_norm(x=x, axes=[1]), lambda x: x.abs().sum(1)),
    case("reduce_sum_square", [X4], lambda x: mb.reduce_sum_square(x=x, axes=[3]), lambda x: (x * x).sum(3)),
    case("reduce_argmax", [X4], lambda x: mb.cast(x=mb.reduce_argmax(x=x, axis=1), dtype="fp32"),
         lambda x: x.argmax(1).double()),
    case("reduce_argmin", [X4], lambda x: mb.cast(x=mb.reduce_argmin(x=x, axis=2, keep_dims=True), dtype="fp32"),
         lambda x: x.argmin(2, keepdim=True).double()),
    # --- normalisation ------------------------------------------------------------------------
    case("batch_norm", [X4], lambda x: mb.batch_norm(x=x, mean=MEAN, variance=VAR, gamma=GAMMA, beta=BETA, epsilon=1e-3),
         lambda x: F.batch_norm(x, T(MEAN).double(), T(VAR).double(), T(GAMMA).double(), T(BETA).double(), eps=1e-3)),
    case("layer_norm", [(2, 5, 6)], lambda x: mb.layer_norm(x=x, axes=[-1], gamma=_w(6) * 0 + 1.5, beta=None, epsilon=1e-5),
         lambda x: F.layer_norm(x, (6,)) * 1.5),
    case("instance_norm", [X4], lambda x: mb.instance_norm(x=x, gamma=GAMMA, beta=BETA, epsilon=1e-5),
         lambda x: F.instance_norm(x, weight=T(GAMMA).double(), bias=T(BETA).double(), eps=1e-5)),
    # --- shape and layout ---------------------------------------------------------------------
    case("reshape", [X4], lambda x: mb.reshape(x=x, shape=[1, 36, 9]), lambda x: x.reshape(1, 36, 9)),
    case("transpose", [X4], lambda x: mb.transpose(x=x, perm=[0, 2, 3, 1]), lambda x: x.permute(0, 2, 3, 1)),
    case("expand_dims", [X2], lambda x: mb.expand_dims(x=x, axes=[0, -1]), lambda x: x[None, ..., None]),
    case("squeeze", [(1, 4, 1, 9)], lambda x: mb.squeeze(x=x, axes=[2]), lambda x: x.squeeze(2)),
    case("tile", [X2], lambda x: mb.tile(x=x, reps=[2, 3]), lambda x: x.repeat(2, 3)),
    case("shape", [X4], lambda x: mb.cast(x=mb.shape(x=x), dtype="fp32"), lambda x: torch.tensor(x.shape).double()),
    case("concat", [X4, (1, 2, 9, 9)], lambda x, y: mb.concat(values=[x, y], axis=1), lambda x, y: torch.cat([x, y], 1)),
    case("concat", [X2, X2], lambda x, y: mb.concat(values=[x, y], axis=1, interleave=True),
         lambda x, y: torch.stack([x, y], 2).reshape(3, 10), ident="concat-interleave"),
    case("stack", [X2, X2], lambda x, y: mb.stack(values=[x, y], axis=1), lambda x, y: torch.stack([x, y], 1)),
    case("stack", [X2, X2], lambda x, y: mb.stack(values=[x, y], axis=-1), lambda x, y: torch.stack([x, y], -1),
         ident="stack-last"),
    case("reverse", [X4], lambda x: mb.reverse(x=x, axes=[1, 3]), lambda x: x.flip(1, 3)),
    case("reverse", [X2], lambda x: mb.reverse(x=x), lambda x: x.flip(0, 1), ident="reverse-every-axis"),
    case("split", [X4], lambda x: mb.split(x=x, split_sizes=[1, 3], axis=1)[1], lambda x: torch.split(x, [1, 3], 1)[1]),
    case("slice_by_index", [X4], lambda x: mb.slice_by_index(x=x, begin=[0, 1, 0, 2], end=[1, 4, 9, 9],
                                                               stride=[1, 2, 3, 1], end_mask=[True, False, True, False]),
         lambda x: x[:, 1:4:2, ::3, 2:9]),
    case("slice_by_size", [X4], lambda x: mb.slice_by_size(x=x, begin=[0, 1, 2, 0], size=[1, 2, -1, 4]),
         lambda x: x[:, 1:3, 2:, 0:4]),
    case("pad", [X4], lambda x: mb.pad(x=x, pad=[1, 2, 0, 3], mode="constant", constant_val=0.5),
         lambda x: F.pad(x, (0, 3, 1, 2), value=0.5), ident="pad-constant"),
    case("pad", [X4], lambda x: mb.pad(x=x, pad=[1, 2, 2, 1], mode="reflect"),
         lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"), ident="pad-reflect"),
    case("pad", [X4], lambda x: mb.pad(x=x, pad=[1, 2, 2, 1], mode="replicate"),
         lambda x: F.pad(x, (2, 1, 1, 2), mode="replicate"), ident="pad-replicate"),
    case("upsample_nearest_neighbor", [X4], lambda x: mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3),
         lambda x: F.interpolate(x, scale_factor=(2, 3), mode="nearest")),
    case("upsample_bilinear", [X4], lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=3.0,
                                                                  align_corners=False, half_pixel_centers=True),
         lambda x: F.interpolate(x, scale_factor=(2, 3), mode="bilinear", align_corners=False),
         ident="upsample_bilinear-half-pixel"),
    case("upsample_bilinear", [X4], lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=2.0,
                                                                  align_corners=True),
         lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
         ident="upsample_bilinear-align-corners"),
    case("pixel_shuffle", [(2, 12, 3, 5)], lambda x: mb.pixel_shuffle(x=x, upscale_factor=2),
         lambda x: F.pixel_shuffle(x, 2), exact=True),
    case("pixel_shuffle", [(1, 9, 4, 2)], lambda x: mb.pixel_shuffle(x=x, upscale_factor=3),
         lambda x: F.pixel_shuffle(x, 3), exact=True, ident="pixel_shuffle-3"),
    case("pixel_unshuffle", [(2, 3, 6, 4)], lambda x: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
         lambda x: F.pixel_unshuffle(x, 2), exact=True, opset="iOS16"),
    case("gather", [X4], lambda x: mb.gather(x=x, indices=np.array([3, 0, 0], np.int32), axis=1),
         lambda x: x[:, [3, 0, 0]]),
    case("gather_nd", [X4], lambda x: mb.gather_nd(x=x, indices=GND), lambda x: x[GND[..., 0], GND[..., 1]]),
    case("gather_nd", [X4], lambda x: mb.gather_nd(x=x, indices=GND_B, batch_dims=1),
         lambda x: x[0][GND_B[0, ..., 0], GND_B[0, ..., 1]][None], ident="gather_nd-batch_dims"),
    # --- quantization -------------------------------------------------------------------------
    case("quantize", [X4], lambda x: mb.cast(x=mb.quantize(input=x, scale=f32(0.013), zero_point=np.int8(-5),
                                                            output_dtype="int8"), dtype="fp32"),
         lambda x: torch.ops.quantized_decomposed.quantize_per_tensor(x.float(), float(f32(0.013)), -5, -128, 127, torch.int8).double(),
         exact=True, ident="quantize-per-tensor"),
    case("quantize", [X4], lambda x: mb.cast(x=mb.quantize(input=x, scale=QS[:4] * 5, zero_point=np.zeros(4, np.int8), axis=1,
                                                            output_dtype="int8"), dtype="fp32"),
         lambda x: torch.ops.quantized_decomposed.quantize_per_channel(
             x.float(), T(QS[:4] * 5), torch.zeros(4, dtype=torch.int64), 1, -128, 127, torch.int8).double(),
         exact=True, ident="quantize-per-channel"),
    case("dequantize", [X4], lambda x: mb.dequantize(
        input=mb.quantize(input=x, scale=f32(0.02), zero_point=np.uint8(128), output_dtype="uint8"),
        scale=f32(0.02), zero_point=np.uint8(128)),
         lambda x: torch.fake_quantize_per_tensor_affine(x.float(), float(f32(0.02)), 128, 0, 255).double(), exact=True,
         ident="quantize-dequantize-uint8"),
    case("constexpr_affine_dequantize", [(1, 4, 7, 7)],
         lambda x: mb.conv(x=x, weight=mb.constexpr_affine_dequantize(quantized_data=QW, zero_point=np.int8(0), scale=QS, axis=0)),
         lambda x: F.conv2d(x, (T(QW).double() * T(QS).double()[:, None, None, None]))),
    case("constexpr_blockwise_shift_scale", [(1, 4, 7, 7)],
         lambda x: mb.conv(x=x, weight=mb.constexpr_blockwise_shift_scale(
             data=QW, scale=QS.reshape(6, 1, 1, 1), offset=np.full((6, 1, 1, 1), 3, np.int8))),
         lambda x: F.conv2d(x, ((T(QW).double() - 3) * T(QS).double()[:, None, None, None])), opset="iOS18"),
]


def _inputs(shapes, low, high):
    if low is not None:
        return [RNG.uniform(low, high, s).astype(f32) for s in shapes]
    return [RNG.standard_normal(s).astype(f32) for s in shapes]


def build_program(shapes, build, opset: str, path=None) -> mil_program.MILProgram:
    """The one-op program; with a path, through a saved .mlpackage and the loader (slower)."""
    specs = [mb.TensorSpec(shape=s) for s in shapes]
    target = getattr(ct.target, opset)

    # the builder reads the number of inputs from the function's signature
    fn = (lambda x: build(x)) if len(shapes) == 1 else (lambda x, y: build(x, y))
    prog = mb.program(input_specs=specs, opset_version=target)(fn)

    if path is None:
        return mil_program.from_pymil(prog.functions["main"])
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       pass_pipeline=ct.PassPipeline.EMPTY, compute_precision=ct.precision.FLOAT32,
                       skip_model_load=True)
    model.save(str(path))
    return mil_program.load_program(path)


@pytest.mark.parametrize("op, shapes, build, ref, opset, exact, low, high", CASES)
def test_op_matches_torch(op, shapes, build, ref, opset, exact, low, high, tmp_path):
    # Quantization and weight ops go through a saved package: their constants' storage matters.
    saved = op.startswith(("quantize", "dequantize", "constexpr")) or op in ("conv", "conv_transpose")
    prog = build_program(shapes, build, opset, tmp_path / "op.mlpackage" if saved else None)
    assert op in prog.op_types, f"{op} not in the saved program: {sorted(prog.op_types)}"
    xs = _inputs(shapes, low, high)
    got = mil_kernels.run(prog, dict(zip(prog.inputs, xs)))[prog.outputs[0]]
    want = ref(*[T(x).double() for x in xs]).numpy()
    assert got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got.astype(np.float64), want)
    else:
        rel = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12)
        assert rel < 1e-4, f"{op}: relative error {rel:.3g}"


def test_every_evaluator_op_has_a_case():
    covered = {p.values[0] for p in CASES} | {"const"}
    # ops reached only inside other cases' programs (the builder emits them as helpers)
    untested = sorted(set(mil_kernels.OPS) - covered)
    assert not untested, f"evaluator ops without a torch comparison: {untested}"


def test_quantize_rounds_half_to_even_like_torch():
    # 0.5 and 1.5 steps: torch (and the evaluator) round half to even -> 0 and 2.
    x = np.array([[0.5, 1.5, 2.5, -0.5]], f32) * f32(0.25)
    step = mil_program.Step("quantize", "q", {}, ("y",), ("int8",), ((1, 4),))
    got = mil_kernels.OPS["quantize"]({"input": x, "scale": f32(0.25), "zero_point": np.int8(0),
                                    "output_dtype": "int8"}, step)
    want = torch.ops.quantized_decomposed.quantize_per_tensor(T(x), 0.25, 0, -128, 127, torch.int8)
    np.testing.assert_array_equal(got, want.numpy())
    assert list(got[0]) == [0, 2, 2, 0]


def test_unknown_op_is_unverified_not_passed(tmp_path):
    prog = build_program([(2, 5)], lambda x: mb.cumsum(x=x, axis=1), "iOS17", tmp_path / "cumsum.mlpackage")
    assert mil_kernels.unknown_ops(prog) == ["cumsum"]
    with pytest.raises(mil_kernels.UnverifiedOp, match="unverified: op cumsum"):
        mil_kernels.run(prog, {prog.inputs[0]: np.zeros((2, 5), f32)})


def test_math_erf_reference():
    # the evaluator's erf is math.erf elementwise; pin one value so a swap to an approximation shows
    assert mil_kernels.OPS["erf"]({"x": np.array([0.5], f32)}, None)[0] == pytest.approx(math.erf(0.5), rel=1e-6)
