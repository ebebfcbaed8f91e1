"""The operators of a .tflite as a neutral op list (`edgeconv.opview.OpView`), read from the flatbuffer.

Self-contained on purpose: it depends only on the core (`edgeconv.opview`, `edgeconv.errors`) and on
ai-edge-litert's generated schema, so it can move into the TFLite exporter's folder unchanged.

Only the main subgraph (0) is read: delegates partition the primary subgraph; control-flow bodies
stay with the interpreter. Options come from the operator's builtin options table with camelCase
turned into snake_case (strideW -> stride_w, fusedActivationFunction -> fused_activation_function)
and enums turned into their schema names (padding "SAME"/"VALID", fused activation "RELU6", ...).
Two options are derived because rules test them and the table does not hold them: `kernel` (H, W)
of a convolution from its filter shape, and `axes` of a reduction from its constant axis input.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.errors import UserError
from edgeconv.opview import SMALL_CONST, OpView, TensorView

_ENUM_FIELDS = {  # option field -> schema enum class name
    "padding": "Padding",
    "fused_activation_function": "ActivationFunctionType",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "mode": "MirrorPadMode",
    "out_type": "TensorType",
    "output_type": "TensorType",
}
_CONV_FILTER = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "TRANSPOSE_CONV": (1, 2)}  # [O|1, H, W, I|C]
_REDUCTIONS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY"}


def read_ops(path: Path | str) -> tuple[OpView, ...]:
    """The main subgraph's operators in execution order; a UserError if `path` is not a .tflite."""
    from ai_edge_litert import schema_py_generated as schema

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such file")
    data = p.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UserError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as e:  # a truncated or corrupt flatbuffer fails anywhere inside the parser
        raise UserError(f"{path} is a damaged TFLite file ({type(e).__name__}); re-export it") from None
    if not model.subgraphs:
        raise UserError(f"{path} holds no subgraph")
    return _Reader(model, schema).ops()


class _Reader:
    def __init__(self, model: Any, schema: Any) -> None:
        self.model, self.schema = model, schema
        self.sg = model.subgraphs[0]
        self.names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        self.types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        self.enums = {f: {v: k for k, v in vars(getattr(schema, e)).items() if not k.startswith("_")}
                      for f, e in _ENUM_FIELDS.items() if hasattr(schema, e)}
        ops = self.sg.operators or []
        self.kinds = [self._kind(op) for op in ops]
        self.producer: dict[int, str] = {}
        self.consumers: dict[int, list[str]] = {}
        for op, kind in zip(ops, self.kinds):
            for t in _ints(op.outputs):
                self.producer[t] = kind
            for t in _ints(op.inputs):
                if t >= 0:
                    self.consumers.setdefault(t, []).append(kind)

    def _kind(self, op: Any) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        name = self.names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        if name == "CUSTOM" and code.customCode:
            custom = code.customCode.decode(errors="replace") if isinstance(code.customCode, bytes) else code.customCode
            return f"CUSTOM:{custom}"
        return name

    def ops(self) -> tuple[OpView, ...]:
        out = []
        for i, (op, kind) in enumerate(zip(self.sg.operators or [], self.kinds)):
            inputs = tuple(None if t < 0 else self.tensor(t) for t in _ints(op.inputs))
            outputs = tuple(self.tensor(t) for t in _ints(op.outputs))
            code = self.model.operatorCodes[op.opcodeIndex]
            options = self.options(op, kind, inputs)
            name = outputs[0].name if outputs else ""
            out.append(OpView(i, kind, inputs, outputs, options, int(code.version or 1), _tail(name)))
        return tuple(out)

    def tensor(self, index: int) -> TensorView:
        t = self.sg.tensors[index]
        buf = self.model.buffers[t.buffer] if t.buffer is not None and t.buffer < len(self.model.buffers) else None
        const = buf is not None and buf.data is not None and len(buf.data) > 0
        shape = tuple(int(s) for s in (t.shape if t.shape is not None else ()))
        q = t.quantization
        scale = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
        zp = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
        dtype = self.types.get(t.type, str(t.type))
        values = None
        if const and int(np.prod(shape or (1,))) <= SMALL_CONST:
            values = _values(bytes(buf.data), dtype)
        name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name or "")
        return TensorView(index, name, dtype, shape, const, scale, zp, int(q.quantizedDimension) if q else 0,
                          values, self.producer.get(index), tuple(self.consumers.get(index, ())))

    def options(self, op: Any, kind: str, inputs: tuple[TensorView | None, ...]) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if op.builtinOptions is not None:
            for key, value in vars(op.builtinOptions).items():
                k = _snake(key)
                if value is None or isinstance(value, (bytes, bytearray)) or not _plain(value):
                    continue
                if isinstance(value, np.ndarray):
                    value = [int(v) if np.issubdtype(value.dtype, np.integer) else float(v) for v in value]
                elif k in self.enums and isinstance(value, int):
                    value = self.enums[k].get(value, value)
                opts[k] = value
        if kind in _CONV_FILTER and len(inputs) > 1 and inputs[1] is not None and inputs[1].rank == 4:
            h, w = _CONV_FILTER[kind]
            opts["kernel"] = [inputs[1].shape[h], inputs[1].shape[w]]
        if kind in _REDUCTIONS and len(inputs) > 1 and inputs[1] is not None and inputs[1].values is not None:
            rank = inputs[0].rank if inputs[0] is not None else 0
            opts["axes"] = sorted(int(a) % rank if rank else int(a) for a in inputs[1].values)
        return opts


def _ints(v: Any) -> list[int]:
    return [] if v is None else [int(x) for x in v]


def _plain(v: Any) -> bool:
    return isinstance(v, (bool, int, float, str, np.ndarray, np.integer, np.floating))


def _snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _values(raw: bytes, dtype: str) -> tuple[float, ...] | None:
    np_type = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64,
               "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "bool": np.bool_}.get(dtype)
    if np_type is None or len(raw) % np.dtype(np_type).itemsize:
        return None
    return tuple(float(v) for v in np.frombuffer(raw, dtype=np_type))


def _tail(name: str) -> str:
    """A readable tail of a tensor name: the converter joins every fused source with ';'."""
    part = max(name.split(";"), key=len) if name else ""
    return "/".join(part.split("/")[-2:])[-60:]
