"""Will XNNPACK run this model on its sparse (CHW) path? The check of a torch program, and
`check-sparse`'s entry point; the rules and the check of a .tflite live with the TFLite format
(edgeconv.exporters.tflite.sparse_check)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeconv.errors import UserError
from edgeconv.exporters.tflite.sparse_check import (SAME_NOTE, Finding, LayerSparsity, SparseReport, block_size,
                                                    judge)

if TYPE_CHECKING:
    import torch

    from edgeconv.graph import Graph

# --- the torch graph ------------------------------------------------------------------------

_GRAPH_ELEMENTWISE = {"add", "add_", "mul", "mul_", "relu", "relu_", "relu6", "hardtanh", "hardtanh_",
                      "clamp", "sigmoid", "hardswish", "hardswish_", "leaky_relu", "elu", "abs", "neg",
                      "batch_norm", "_native_batch_norm_legit_no_training", "getitem", "dropout",
                      "clone", "alias", "detach", "contiguous", "sym_size"}


def check_module(module: "torch.nn.Module", example_inputs: tuple, subject: str = "") -> SparseReport:
    from edgeconv.graph import capture

    return sparse_path_check(capture(module, example_inputs), subject or type(module).__name__)


def sparse_path_check(graph: "Graph", subject: str = "model") -> SparseReport:
    """Walk the captured program from the stem conv to the global pool."""
    from edgeconv.passes.fx import CONV_OPS, const, op_name

    gm = graph.module()
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    findings: list[Finding] = []
    convs = [n for n in nodes if n.target in CONV_OPS]
    if not convs:
        return judge("graph", subject, [Finding("stem", subject, "the model has no conv")], [], [])
    stem = convs[0]
    why = _graph_stem(stem, const(gm, stem.args[1]), _pad_before(stem))
    if why:
        findings.append(Finding("stem", stem.name, why))
    start = nodes.index(stem)
    end = next((i for i in range(start + 1, len(nodes)) if _is_global_pool(nodes[i])), None)
    if end is None:
        findings.append(Finding("no-global-pool", subject, "no global average pool ends the region"))
        end = len(nodes)
    if graph.quantized or any("quantize" in op_name(n) for n in nodes[start:end]):
        findings.append(Finding("int8", subject, "the graph is int8-quantized; the sparse path is float only"))
    layers, weights = [], []
    for n in nodes[start + 1:end]:
        name = op_name(n).split(".")[0]  # add.Tensor -> add
        if _pad_into_conv(n):
            continue  # folded into the conv's padding, as the converter and XNNPACK do
        if n.target in CONV_OPS:
            w = const(gm, n.args[1])
            why = _graph_conv(n, w, _pad_before(n))
            if why:
                padding = "depthwise with padding" in why  # the converter writes it as TF SAME: a note
                findings.append(Finding("padding" if "padding" in why else "unsupported-op", n.name,
                                        why + ("; " + SAME_NOTE if padding else ""), blocking=not padding))
            elif w is not None and tuple(w.shape[2:]) == (1, 1):
                w2 = w.detach().float().reshape(w.shape[0], -1).numpy()
                weights.append(w2)
                layers.append(LayerSparsity(n.name, tuple(w.shape), float((w2 == 0).mean()), block_size(w2)))
        elif name not in _GRAPH_ELEMENTWISE and "quantize" not in name:
            findings.append(Finding("unsupported-op", n.name, f"{name} cannot run in XNNPACK's CHW layout"))
    return judge("graph", subject, findings, layers, weights)


def _conv_params(node: Any) -> tuple[tuple[int, int], Any, tuple[int, int], int]:
    from edgeconv.passes.fx import aten

    a = list(node.args) + [None] * 9
    if node.target == aten.convolution.default:
        return _pair(a[3] or 1), a[4] if a[4] is not None else 0, _pair(a[5] or 1), int(a[8] or 1)
    return (_pair(a[3] if a[3] is not None else 1), a[4] if a[4] is not None else 0,
            _pair(a[5] if a[5] is not None else 1), int(a[6] if a[6] is not None else 1))


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


_PAD_OPS = ("constant_pad_nd", "pad")


def _pad_before(conv: Any) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of a zero pad whose only user is `conv` (0s when there is none)."""
    from edgeconv.passes.fx import op_name

    src = conv.args[0]
    if getattr(src, "op", None) == "call_function" and op_name(src).split(".")[0] in _PAD_OPS and len(src.users) == 1:
        p = list(src.args[1]) + [0] * 4
        value = src.args[2] if len(src.args) > 2 else src.kwargs.get("value", 0)
        if not value and len(src.args[1]) <= 4:
            return int(p[0]), int(p[1]), int(p[2]), int(p[3])
    return (0, 0, 0, 0)


def _pad_into_conv(node: Any) -> bool:
    from edgeconv.passes.fx import CONV_OPS

    users = list(getattr(node, "users", ()))
    return len(users) == 1 and users[0].target in CONV_OPS and _pad_before(users[0]) != (0, 0, 0, 0)


def _pads(padding: Any, extra: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Effective (top, bottom, left, right) padding of a conv with an explicit pad folded in."""
    ph, pw = _pair(padding)
    left, right, top, bottom = extra
    return ph + top, ph + bottom, pw + left, pw + right


def _graph_stem(node: Any, w: Any, extra: tuple[int, int, int, int]) -> str | None:
    stride, padding, _, groups = _conv_params(node)
    if w is None or w.dim() != 4:
        return "the first conv has no constant 4-D weight"
    k, cin = tuple(w.shape[2:]), int(w.shape[1]) * groups
    pads = None if isinstance(padding, str) else _pads(padding, extra)
    if k != (3, 3) or stride != (2, 2) or cin != 3 or pads != (1, 1, 1, 1):
        return (f"the first conv is {k[0]}x{k[1]} stride {stride[0]} on {cin} channels with padding "
                f"{padding if pads is None else pads} (top, bottom, left, right); XNNPACK's sparse region must "
                "start at a 3x3 stride-2 conv on 3 channels with padding 1 on every side")
    return None


def _graph_conv(node: Any, w: Any, extra: tuple[int, int, int, int] = (0, 0, 0, 0)) -> str | None:
    stride, padding, dilation, groups = _conv_params(node)
    if w is None or w.dim() != 4:
        return "conv without a constant 4-D weight"
    k, cout, cin = tuple(w.shape[2:]), int(w.shape[0]), int(w.shape[1]) * groups
    if isinstance(padding, str):
        return f"padding={padding!r} becomes TF SAME padding, which the sparse region rejects; use padding={k[0] // 2}"
    pads = _pads(padding, extra)
    pad = (pads[0], pads[2]) if pads[0] == pads[1] and pads[2] == pads[3] else pads
    if k == (1, 1) and groups == 1:
        if stride != (1, 1) or pad != (0, 0):
            return f"1x1 conv with stride {stride} and padding {pad}; only stride 1 without padding is sparse"
        return None
    if groups == cin == cout and k in ((3, 3), (5, 5)) and dilation == (1, 1) and stride[0] == stride[1] in (1, 2):
        if pad != (k[0] // 2, k[1] // 2):
            return f"{k[0]}x{k[1]} depthwise with padding {pad}; the sparse region needs {k[0] // 2} on every side"
        return None
    return (f"{k[0]}x{k[1]} conv (groups {groups}, stride {stride}, dilation {dilation}) cannot run in CHW "
            "layout; only 1x1 and 3x3/5x5 depthwise convs can")


def _is_global_pool(node: Any) -> bool:
    from edgeconv.passes.fx import op_name

    name = op_name(node)
    if name == "adaptive_avg_pool2d":
        return tuple(_pair(node.args[1])) == (1, 1)
    if name in ("mean", "mean.dim"):
        dims = node.args[1] if len(node.args) > 1 else None
        return isinstance(dims, (list, tuple)) and sorted(d % 4 for d in dims) == [2, 3]
    return False


# --- either -----------------------------------------------------------------------------------

def check_path(ref: str, sparsity: float | None = None, input_shape: tuple[int, ...] | None = None) -> SparseReport:
    """`edgeconv check-sparse`: a .tflite is read as is; anything else is loaded as a model
    (package.module:factory or .pt2), optionally pruned first with the sparsify pass."""
    from edgeconv.exporters.formats import find_format

    p = Path(ref)
    fmt = find_format(p)
    if fmt is not None:
        if not p.exists():
            raise UserError(f"{ref} does not exist")
        if sparsity is not None:
            raise UserError(f"--sparsity prunes a model before checking it; a {fmt.name} artifact is checked as it is")
        return fmt.sparse_report(p)
    if p.exists() and p.suffix != ".pt2":
        raise UserError(f"{ref} is not a model: give a .tflite file, a .pt2 file or package.module:factory")
    from edgeconv.graph import capture
    from edgeconv.models import load_model

    opts = None
    if sparsity is not None:
        from edgeconv.passes.sparsify import SparseOptions

        opts = SparseOptions(sparsity)  # validated before the model is loaded
    spec = load_model(ref, input_shape=input_shape)
    graph = capture(spec.module, spec.example_inputs)
    if opts is not None:
        from edgeconv.passes.sparsify import prune

        graph = prune(graph, opts).graph
    return sparse_path_check(graph, spec.name)

