"""The quantized program, read and switched: its layers (a conv/linear with its weight and output
quantization), the node helpers that see through quantize/dequantize pairs, and a simulation in
which any set of dequantize nodes is bypassed (that tensor back in float).

Works on the PT2E-converted program (`fold_quantize=False`: every quantized tensor is an explicit
quantize -> dequantize pair). Sensitivity analysis, float fallback, cross-format divergence and
parity all read the program through this module.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

if TYPE_CHECKING:
    import torch

    from edgeconv.graph import Graph

COMPUTE = ("conv1d", "conv2d", "conv3d", "convolution", "linear", "addmm", "matmul", "mm")
MULTI_INPUT = ("add", "mul", "cat", "sub", "div", "stack")


def _is(node: Any, *names: str) -> bool:
    return getattr(node, "op", None) == "call_function" and any(n in str(node.target) for n in names)


def compute_name(node: Any) -> str | None:
    if getattr(node, "op", None) != "call_function":
        return None
    name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    return name if name in COMPUTE else None


# A quant config may name a kind of conv narrower than its op: a depthwise conv, and one whose kernel
# has more taps than the 25 (5x5) of XNNPACK's largest single-pass depthwise kernels (larger ones it
# runs in several passes; bench/results/dwconv_kernels.json measures what that costs).
DEPTHWISE, LARGE_DEPTHWISE = "depthwise_conv2d", "depthwise_conv2d_large"
SINGLE_PASS_TAPS = 25


def layer_kinds(node: Any) -> tuple[str, ...]:
    """The op types a quant config may name a conv/linear node by, the most specific first:
    ("depthwise_conv2d_large", "depthwise_conv2d", "conv2d") for a 7x7 depthwise conv, ("linear",)
    for a linear; () for any other node."""
    name = compute_name(node)
    if name not in ("conv2d", "convolution"):
        return (name,) if name else ()
    args = list(node.args) + [None] * 9
    groups = args[8] if name == "convolution" else args[6]
    weight = _tensor(args[1])
    if (name == "convolution" and args[6]) or weight is None or weight.dim() != 4 or not groups or groups == 1 \
            or weight.shape[1] != 1:  # transposed, or not one input channel per group
        return (name,)
    taps = int(weight.shape[2] * weight.shape[3])
    return ((LARGE_DEPTHWISE,) if taps > SINGLE_PASS_TAPS else ()) + (DEPTHWISE, name)


def _tensor(node: Any) -> Any:
    """A node's tensor value: its traced `val`, else (a get_attr of an unlifted program) the attribute."""
    from edgeconv.calib.rewrites import constant_of

    val = getattr(node, "meta", {}).get("val")
    return constant_of(node.graph.owning_module, node) if val is None and hasattr(node, "graph") else val


def is_q(node: Any) -> bool:
    return _is(node, "quantized_decomposed.quantize_per")


def is_dq(node: Any) -> bool:
    return _is(node, "quantized_decomposed.dequantize_per")


def through_qdq(node: Any) -> Any:
    """The float tensor behind dq(q(x)) (x itself if not quantized)."""
    while is_dq(node) and is_q(node.args[0]):
        node = node.args[0].args[0]
    return node


def module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L__self___", "")


@dataclasses.dataclass
class Layer:
    node: str
    op: str
    module: str
    dq_nodes: set[str]  # dequantize nodes that make up this layer's quantization
    weight: np.ndarray | None
    act: tuple[float, float, float] | None  # (min, max, scale) of its output activation


def producing_layer(node: Any) -> Any:
    """The conv/linear whose output this tensor is (through single-input ops), or None."""
    seen = 0
    while node is not None and seen < 10_000:
        seen += 1
        node = through_qdq(node)
        if compute_name(node):
            return node
        if getattr(node, "op", None) != "call_function" or any(m in str(node.target) for m in MULTI_INPUT):
            return None
        tensors = [a for a in node.args if hasattr(a, "op")]
        if len(tensors) != 1:
            return None
        node = tensors[0]
    return None


def find_layers(gm: "torch.fx.GraphModule") -> list[Layer]:
    """Every conv/linear of a converted program with the dequantize nodes that belong to it."""
    import torch

    layers: dict[str, Layer] = {}
    for n in gm.graph.nodes:
        name = compute_name(n)
        if name:
            layers[n.name] = Layer(n.name, name, module_path(n), set(), None, None)
    for n in gm.graph.nodes:
        if not is_dq(n) or not is_q(n.args[0]):
            continue
        src = n.args[0].args[0]
        if getattr(src, "op", None) == "get_attr":  # a weight: belongs to the layer that uses it
            for user in n.users:
                if user.name in layers:
                    layers[user.name].dq_nodes.add(n.name)
                    layers[user.name].weight = _get_attr(gm, src.target).detach().float().numpy()
            continue
        owner = producing_layer(src)
        if owner is not None and owner.name in layers:
            lay = layers[owner.name]
            lay.dq_nodes.add(n.name)
            scale, zp, qmin, qmax = (float(n.args[1]), int(n.args[2]), int(n.args[3]), int(n.args[4])) \
                if not isinstance(n.args[1], torch.fx.Node) else (float("nan"), 0, 0, 0)
            if compute_name(through_qdq(src)) or lay.act is None:
                lay.act = ((qmin - zp) * scale, (qmax - zp) * scale, scale)
    for lay in layers.values():
        if lay.weight is None:  # weight-less or not quantized: read the float weight if constant
            node = next(n for n in gm.graph.nodes if n.name == lay.node)
            w = node.args[1] if len(node.args) > 1 else None
            if getattr(w, "op", None) == "get_attr":
                lay.weight = _get_attr(gm, w.target).detach().float().numpy()
    return list(layers.values())


def _get_attr(gm: Any, target: str) -> Any:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def simulate(gm: "torch.fx.GraphModule", bypass: Iterable[str]) -> "torch.fx.GraphModule":
    """A copy of the converted program with the named dequantize nodes replaced by their float input.

    Before: x -> quantize -> dequantize(d) -> conv.   After (d bypassed): x -> conv.
    """
    bypass = set(bypass)
    gm = copy.deepcopy(gm)
    for n in list(gm.graph.nodes):
        if n.name in bypass and is_dq(n) and is_q(n.args[0]):
            n.replace_all_uses_with(n.args[0].args[0])
    _drop_batch_guard(gm)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _drop_batch_guard(gm: Any) -> None:
    """torch.export's unlifted module asserts the example's batch size; the analysis runs batches."""
    for n in list(gm.graph.nodes):
        if n.op == "call_module" and n.target == "_guards_fn" and not n.users:
            gm.graph.erase_node(n)


def all_dq(gm: Any) -> set[str]:
    return {n.name for n in gm.graph.nodes if is_dq(n) and is_q(n.args[0])}


def forward(module: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """Outputs of a (simulated) program on float NCHW samples; falls back to one at a time when the
    program's shapes are tied to its batch-1 example."""
    import torch

    outs = []
    with torch.no_grad():
        try:
            for i in range(0, len(x), batch):
                y = module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])))
                outs.append(_first(y).detach().float().numpy())
                if outs[-1].shape[0] != min(batch, len(x) - i):
                    raise RuntimeError("batch dimension not preserved")
        except Exception:
            outs = [_first(module(torch.from_numpy(x[i:i + 1]))).detach().float().numpy() for i in range(len(x))]
    return np.concatenate(outs)


def _first(y: Any) -> Any:
    return y[0] if isinstance(y, (tuple, list)) else y


def folded_simulation(graph: "Graph") -> Any:
    """The quantized program as a module to run for parity, with its constant subgraphs computed once:
    `convert_pt2e(fold_quantize=False)` leaves every weight as quantize → dequantize of the float
    weight, which the program would otherwise redo on every sample (two thirds of its time on
    MobileNetV2). The same torch ops on the same tensors, so its outputs are bit-identical."""
    import torch
    from torch.fx.node import map_arg

    gm = graph.module()
    const: dict[Any, Any] = {}
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                const[node] = _get_attr(gm, node.target)
            elif (node.op == "call_function" and node.all_input_nodes and not node.is_impure()
                  and all(n in const for n in node.all_input_nodes)):
                const[node] = node.target(*map_arg(node.args, const.__getitem__), **map_arg(node.kwargs, const.__getitem__))
    folded = 0
    for node, value in const.items():
        if node.op == "call_function" and isinstance(value, torch.Tensor) and any(u not in const for u in node.users):
            name = _free_name(gm, "_edgeconv_sim_const")
            folded += 1
            gm.register_buffer(name, value)
            with gm.graph.inserting_before(node):
                node.replace_all_uses_with(gm.graph.get_attr(name))
    if folded:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return gm


def _free_name(gm: Any, prefix: str) -> str:
    """An attribute name the module does not use yet (a QAT program already carries folded constants)."""
    i = 0
    while hasattr(gm, f"{prefix}_{i}"):
        i += 1
    return f"{prefix}_{i}"


# The layers whose weights a weight-only int8 CoreML file stores in int8: coremltools lowers conv1d
# with a computed (expand_dims) weight, not a const, so linear_quantize_weights leaves it float —
# the manifest's `weights` list reads that back from the file (conv1d: float32).
WEIGHT_ONLY_OPS = ("conv2d", "convolution", "linear")


def weight_int8_simulation(graph: "Graph") -> Any:
    """The float program with every conv/linear weight rounded as a weight-only int8 artifact stores
    it — coremltools' linear_symmetric int8 per output channel: s = 2·max|w_c| / 254 in float32,
    q = clip(round_half_even(w / s), -127, 127), w' = q·s (coremltools.optimize._utils
    .quantize_weight_by_dtype). What `coreml-int8` computes; its parity reference."""
    import torch

    gm = graph.module()
    with torch.no_grad():
        for node in list(gm.graph.nodes):
            if compute_name(node) not in WEIGHT_ONLY_OPS or len(node.args) < 2:
                continue
            src = node.args[1]
            if getattr(src, "op", None) != "get_attr":
                continue
            w = _get_attr(gm, src.target).detach().float()
            scale = 2 * w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True) / 254
            q = torch.where(scale > 0, torch.round(w / torch.where(scale > 0, scale, 1)), 0).clamp(-127, 127)
            name = _free_name(gm, "_edgeconv_w8")
            gm.register_buffer(name, q * scale)
            with gm.graph.inserting_before(node):
                node.replace_input_with(src, gm.graph.get_attr(name))
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm
