"""Every reading of a CoreML .mlpackage: weights and their scales, activation quantization, the ops
that still compute in float, and the int8 activations for per-layer isolation — all from the MIL
program (mil/program.py), which coremltools' loader reads on any OS."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.exporters.coreml.mil.program import MILProgram, load_program
from edgeconv.exporters.formats import QTensor, int_values, join_samples
from edgeconv.inputs import Batch, count, rows as input_rows
from edgeconv.results import FloatOps, QuantParams, WeightQuant

WEIGHT_OPS = ("conv", "conv_transpose", "linear")


def open_model(path: Path) -> None:
    from edgeconv.exporters.coreml.coremltools_import import import_coremltools

    import_coremltools().models.MLModel(str(path), skip_model_load=True)


def _program(path_or_prog: Any) -> MILProgram:
    return path_or_prog if isinstance(path_or_prog, MILProgram) else load_program(path_or_prog)


def read_weights(path: Path | str) -> list[tuple[WeightQuant, np.ndarray | None]]:
    """How each conv/linear weight is stored in the package, with its scales when quantized."""
    prog = load_program(path)
    out = []
    for step in prog.steps:
        if step.op_type not in WEIGHT_OPS:
            continue
        wname = step.inputs["weight"]
        src = prog.producer(wname)
        if src is None:  # plain float const
            w = prog.consts[wname]
            out.append((WeightQuant(op=step.name, tensor=wname, shape=tuple(w.shape), dtype=str(w.dtype),
                                    num_scales=0, axis=None), None))
            continue
        qp = constexpr_quant(prog, src)
        out.append((WeightQuant(op=step.name, tensor=wname, shape=src.out_shapes[0] or (),
                                dtype=qp.dtype if qp else src.out_dtypes[0],
                                num_scales=len(qp.scale) if qp else 0, axis=qp.axis if qp else None),
                    np.asarray(qp.scale, dtype=np.float64) if qp else None))
    return out


def constexpr_quant(prog: Any, step: Any) -> QuantParams | None:
    """The quantization a constexpr weight op applies (dtype of the stored data, scales, axis)."""
    c = prog.consts
    if step.op_type == "constexpr_affine_dequantize":
        data, scale = c[step.inputs["quantized_data"]], np.atleast_1d(c[step.inputs["scale"]])
        zp = np.atleast_1d(c[step.inputs["zero_point"]]) if "zero_point" in step.inputs else np.zeros(1, int)
        axis = int(c[step.inputs["axis"]]) if scale.size > 1 else None
        return QuantParams(dtype=str(data.dtype), scale=tuple(float(s) for s in scale.ravel()),
                           zero_point=tuple(int(z) for z in zp.ravel()), axis=axis)
    if step.op_type == "constexpr_blockwise_shift_scale":
        data, scale = c[step.inputs["data"]], c[step.inputs["scale"]]
        per = [i for i, n in enumerate(scale.shape) if n > 1]
        zp = c.get(step.inputs.get("offset", ""), np.zeros(1))
        return QuantParams(dtype=str(data.dtype), scale=tuple(float(s) for s in scale.ravel()),
                           zero_point=tuple(int(z) for z in np.asarray(zp).ravel()),
                           axis=per[0] if len(per) == 1 else None)
    return None


def float_ops(path_or_prog: Any) -> FloatOps:
    """The ops of a W8A8 mlprogram that compute in float: any op (other than quantize/dequantize
    and constants) with a float input produced by something other than `dequantize` or a
    constexpr weight — a float function input or another op's float output."""
    prog = _program(path_or_prog)
    made = {o: (s, i) for s in prog.steps for i, o in enumerate(s.outputs)}
    feeds = dict(zip(prog.inputs, prog.input_dtypes))
    found = []
    for s in prog.steps:
        if s.op_type in ("quantize", "dequantize", "const") or s.op_type.startswith("constexpr"):
            continue
        names = [n for v in s.inputs.values() for n in (v if isinstance(v, tuple) else (v,))]
        for name in names:
            if name in prog.consts:
                continue
            if name in made:
                src, i = made[name]
                if src.op_type == "dequantize" or src.op_type.startswith("constexpr"):
                    continue
                if s.op_type in ("relu", "relu6", "clip") and src.op_type in ("conv", "linear", "add", "sub", "mul"):
                    continue  # a fused activation of the op before it
                if _hard_swish_gate(s, src, made):
                    continue  # x · sigmoid_hard(x) of a dequantized x: hard-swish, which MIL has no op for
                dtype = src.out_dtypes[i] if i < len(src.out_dtypes) else ""
            else:
                dtype = feeds.get(name, "")
            if str(dtype).startswith(("fp", "float")):
                found.append(f"{s.op_type} {s.name}")
                break
    return FloatOps(len(found), tuple(found), 0, "MIL ops with a float input not from dequantize or a "
                    "constexpr weight (read from the mlprogram)")


def _hard_swish_gate(mul: Any, gate: Any, made: dict[str, tuple[Any, int]]) -> bool:
    """`mul` is x · sigmoid_hard(x) with x from a `dequantize`: hard-swish of one int8 tensor (the
    way the exporter writes it). Not for any other product: a gate of a float x stays float."""
    if mul.op_type != "mul" or gate.op_type != "sigmoid_hard":
        return False
    x = gate.inputs.get("x")
    src = made.get(x, (None, 0))[0]
    return src is not None and src.op_type == "dequantize" and {mul.inputs.get("x"), mul.inputs.get("y")} == {x, gate.outputs[0]}


def activation_quant(path_or_prog: Any) -> list[tuple[str, QuantParams]]:
    """(op name, params) of every activation `quantize` op, in program order."""
    prog = _program(path_or_prog)
    out = []
    for s in prog.steps:
        if s.op_type == "quantize":
            scale = np.atleast_1d(prog.consts[s.inputs["scale"]])
            # coremltools leaves out a zero point of 0 (optional input, default 0)
            zp = np.atleast_1d(prog.consts[s.inputs["zero_point"]]) if "zero_point" in s.inputs else np.zeros(1, int)
            out.append((s.name, QuantParams(dtype=str(prog.consts[s.inputs["output_dtype"]]),
                                            scale=tuple(float(v) for v in scale),
                                            zero_point=tuple(int(v) for v in zp))))
    return out



def read_activation_scales(path_or_prog: Any) -> list[float]:
    """Scales of the per-tensor activation `quantize` ops."""
    return [p.scale[0] for _, p in activation_quant(path_or_prog) if len(p.scale) == 1]


def op_view(path: Path) -> Any:
    from edgeconv.exporters.coreml.ops import read_ops

    return read_ops(path)


# --- int8 activations, for per-layer isolation -------------------------------------------------

def int8_tensors(path: Path, x: "Batch") -> list[QTensor]:
    """Every activation `quantize` op's output, kept by the MIL evaluator (any OS); every input of
    the net fed by its name (edgeconv.inputs)."""

    from edgeconv.exporters.coreml.runtime import MILRunner

    runner = MILRunner(path)
    prog = runner.program
    steps = [s for s in prog.steps if s.op_type == "quantize"]
    readers: dict[str, list[Any]] = {}  # once: per quantize op it made reading a program quadratic
    for s in prog.steps:
        for name in _inputs_of(s):
            readers.setdefault(name, []).append(s)
    fused = {s.name for s in steps if _fused(prog, s, readers)}
    keep = [s for s in steps if s.name not in fused]
    rows: dict[str, list[np.ndarray]] = {s.outputs[0]: [] for s in keep}
    for i in range(count(x)):
        env = runner.intermediates(input_rows(x, i, i + 1), names=rows)  # only the int8 ones kept
        for k in rows:
            rows[k].append(int_values(env[k]))
    out = []
    for s in keep:
        scale = np.asarray(prog.consts[s.inputs["scale"]]).ravel()
        zp = np.asarray(prog.consts[s.inputs["zero_point"]]).ravel() if "zero_point" in s.inputs else np.zeros(1, int)
        if scale.size != 1:
            continue
        out.append(QTensor(s.name, float(scale[0]), int(zp[0]), join_samples(rows[s.outputs[0]])))
    return out


def _fused(prog: Any, q: Any, reading: dict[str, list[Any]]) -> bool:
    """q quantizes a pre-activation that only fused activations read; not when its dequantized
    value is a program output (the output layer is judged like every other). `reading`: each
    value's reading steps."""
    users = reading.get(q.outputs[0], [])
    if not users or any(u.op_type != "dequantize" for u in users):
        return False
    readers = {d.outputs[0]: reading.get(d.outputs[0], []) for d in users}
    if any(out in prog.outputs or not r for out, r in readers.items()):
        return False
    for d in users:
        for u in readers[d.outputs[0]]:
            if u.op_type not in ("relu", "clip", "relu6"):
                return False
            nxt = [s for s in reading.get(u.outputs[0], []) if s.op_type == "quantize"]
            if len(nxt) != 1 or _mil_params(prog, nxt[0]) != _mil_params(prog, q):
                return False
    return True


def _inputs_of(step: Any) -> set[str]:
    out: set[str] = set()
    for v in step.inputs.values():
        out.update(v if isinstance(v, tuple) else (v,))
    return out


def _mil_params(prog: Any, s: Any) -> tuple:
    zp = prog.consts[s.inputs["zero_point"]] if "zero_point" in s.inputs else 0
    return (np.asarray(prog.consts[s.inputs["scale"]]).ravel().tolist(), np.asarray(zp).ravel().tolist())
