"""The operations of a CoreML ML program (.mlpackage) as a neutral op list (`edgeconv.opview.OpView`).

Read with coremltools' milproto loader (no model compilation, works on Linux); needs the `coreml`
extra. `const` ops become constants; every other MIL op is one OpView whose options are its
immediate (constant) arguments, e.g. `dilations`, `strides`, `pad_type`, `axes`. Output dtypes are
MIL's names (fp16, fp32, int8, ...) mapped to numpy-style names (float16, float32, int8, ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.errors import UserError, missing_extra
from edgeconv.opview import SMALL_CONST, OpView, TensorView

_DTYPES = {"fp16": "float16", "fp32": "float32", "fp64": "float64", "int8": "int8", "uint8": "uint8",
           "int16": "int16", "uint16": "uint16", "int32": "int32", "int64": "int64", "bool": "bool"}


def read_ops(path: Path | str) -> tuple[OpView, ...]:
    try:
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto.load import load as load_milproto
        from coremltools.converters.mil.mil import types
    except ImportError:
        raise missing_extra("coremltools", "coreml") from None
    p = Path(path)
    if p.suffix.lower() != ".mlpackage":
        raise UserError(f"{p.name}: only ML programs (.mlpackage) can be read; convert with convert_to='mlprogram'")
    try:
        model = ct.models.MLModel(str(p), skip_model_load=True)
        spec = model.get_spec()
        prog = load_milproto(spec, spec.specificationVersion, model.weights_dir)
    except Exception as e:  # a damaged package fails anywhere in protobuf / blob reading
        raise UserError(f"{path} is not a readable ML program ({type(e).__name__})") from None
    func = prog.functions["main"]
    ids: dict[str, int] = {}
    producer: dict[str, str] = {}
    consumers: dict[str, list[str]] = {}
    ops = [op for op in func.operations if op.op_type != "const"]
    for op in ops:
        for o in op.outputs:
            producer[o.name] = op.op_type
        for var in op.inputs.values():
            for v in var if isinstance(var, (list, tuple)) else [var]:
                consumers.setdefault(v.name, []).append(op.op_type)

    def tensor(v: Any) -> TensorView:
        dtype = _DTYPES.get(types.builtin_to_string(v.dtype), types.builtin_to_string(v.dtype)) if v.dtype else "?"
        shape = tuple(int(d) if isinstance(d, (int, np.integer)) else -1 for d in (v.shape or ()))
        const = v.val is not None and v.name not in producer
        values = None
        if const and isinstance(v.val, (np.ndarray, np.generic, int, float, bool)):
            arr = np.asarray(v.val)
            if arr.size <= SMALL_CONST and arr.dtype.kind in "biuf":
                values = tuple(float(x) for x in arr.reshape(-1))
        return TensorView(ids.setdefault(v.name, len(ids)), v.name, dtype, shape, const, values=values,
                          producer=producer.get(v.name), consumers=tuple(consumers.get(v.name, ())))

    out = []
    for k, op in enumerate(ops):
        ins: list[TensorView] = []
        opts: dict[str, Any] = {}
        for arg, var in op.inputs.items():
            vs = var if isinstance(var, (list, tuple)) else [var]
            for v in vs:
                t = tensor(v)
                ins.append(t)
                if t.const and t.values is not None and len(vs) == 1:
                    opts[arg] = [int(x) if float(x).is_integer() else x for x in t.values]
                elif t.const and isinstance(v.val, str):
                    opts[arg] = v.val
        out.append(OpView(k, op.op_type, tuple(ins), tuple(tensor(o) for o in op.outputs), opts, 1, op.name[-60:]))
    return tuple(out)
