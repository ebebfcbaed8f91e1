"""The program inside a CoreML `.mlpackage`, read for edgeconv's MIL evaluator (kernels.py).

coremltools' milproto loader does the protobuf and weight-blob decoding, which works on any OS;
this flattens its `main` function into constants and a list of `Step`s in execution order.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

# MIL dtype names (pymil's builtin type names) -> numpy dtypes.
_DTYPES = {
    "fp16": np.float16, "fp32": np.float32, "fp64": np.float64,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "int64": np.int64, "bool": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class Step:
    """One MIL operation: input names per argument (a tuple for variadic ones like concat)."""

    op_type: str
    name: str
    inputs: dict[str, str | tuple[str, ...]]
    outputs: tuple[str, ...]
    out_dtypes: tuple[str, ...]
    out_shapes: tuple[tuple[int, ...] | None, ...]


@dataclasses.dataclass(frozen=True)
class MILProgram:
    """The `main` function of an mlprogram: constants, steps in order, input and output names."""

    inputs: tuple[str, ...]
    input_dtypes: tuple[str, ...]
    outputs: tuple[str, ...]
    consts: dict[str, np.ndarray]
    steps: tuple[Step, ...]

    @property
    def op_types(self) -> set[str]:
        return {s.op_type for s in self.steps}

    def producer(self, var: str) -> Step | None:
        for s in self.steps:
            if var in s.outputs:
                return s
        return None


def load_program(path: Path | str, function: str = "main") -> MILProgram:
    """Read the program of an .mlpackage (or an in-memory ct.models.MLModel) into a MILProgram."""
    from edgeconv.exporters.coreml.coremltools_import import import_coremltools

    ct = import_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    model = path if isinstance(path, ct.models.MLModel) else ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    prog = load_milproto(spec, spec.specificationVersion, model.weights_dir)
    return from_pymil(prog.functions[function])


def from_pymil(func: Any) -> MILProgram:
    """Flatten a pymil Function: const ops become values, every other op a Step."""
    from coremltools.converters.mil.mil import types

    consts: dict[str, np.ndarray] = {}
    steps: list[Step] = []

    def ref(var: Any) -> str:
        # Inputs folded into the op (immediate values) have no producing op in the block.
        if var.op is None and var.name not in func.inputs and var.val is not None:
            consts.setdefault(var.name, _as_array(var.val))
        return var.name

    for op in func.operations:
        if op.op_type == "const":
            out = op.outputs[0]
            consts[out.name] = _as_array(out.val)
            continue
        ins: dict[str, str | tuple[str, ...]] = {}
        for arg, var in op.inputs.items():
            ins[arg] = tuple(ref(v) for v in var) if isinstance(var, (list, tuple)) else ref(var)
        steps.append(Step(
            op_type=op.op_type, name=op.name, inputs=ins,
            outputs=tuple(o.name for o in op.outputs),
            out_dtypes=tuple(types.builtin_to_string(o.dtype) for o in op.outputs),
            out_shapes=tuple(_static_shape(o) for o in op.outputs),
        ))
    in_names = tuple(func.inputs)
    return MILProgram(
        inputs=in_names,
        input_dtypes=tuple(types.builtin_to_string(func.inputs[n].dtype) for n in in_names),
        outputs=tuple(o.name for o in func.outputs),
        consts=consts, steps=tuple(steps),
    )


def _as_array(val: Any) -> np.ndarray | Any:
    if isinstance(val, (str, bytes)):
        return val
    arr = np.asarray(val)
    return arr


def _static_shape(var: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in var.shape)
    except (TypeError, ValueError):
        return None  # symbolic dimension
