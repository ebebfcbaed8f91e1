"""The single in-memory representation: a captured ExportedProgram plus its history."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from edgeconv.results import QuantParams, StageRecord

if TYPE_CHECKING:
    import torch
    from torch.export import ExportedProgram


@dataclasses.dataclass(frozen=True)
class Graph:
    program: "ExportedProgram"
    example_inputs: tuple["torch.Tensor", ...]
    history: tuple[StageRecord, ...] = ()
    # Set by the quantize pass: the PT2E quantizer that produced the program (exporters need it
    # to select static-QDQ lowering) and the scales it computed, keyed by FX tensor name.
    quantizer: Any = None
    qparams: dict[str, QuantParams] = dataclasses.field(default_factory=dict)
    # Names of nodes that stay in float (set before quantize; exporters honour them).
    float_nodes: tuple[str, ...] = ()
    # Op types (as a quant config names them: layer_norm, gelu, softmax...) that stay float.
    float_op_types: tuple[str, ...] = ()

    @property
    def quantized(self) -> bool:
        return self.quantizer is not None

    def module(self) -> "torch.fx.GraphModule":
        """A fresh unlifted GraphModule (parameters as get_attr) to edit or run.

        The program was captured from an eval-mode model, but unlifted modules report
        `training=True` and refuse `.eval()`; converters read the flag, so set it directly."""
        from edgeconv.models import set_eval

        return set_eval(self.program.module())

    def with_module(self, gm: "torch.nn.Module", **changes: Any) -> "Graph":
        """Re-capture an edited module so the program stays a valid ExportedProgram."""
        import torch

        program = torch.export.export(gm, self.example_inputs, strict=False)
        return dataclasses.replace(self, program=program, **changes)

    def record(self, rec: StageRecord) -> "Graph":
        return dataclasses.replace(self, history=self.history + (rec,))


def capture(model: "torch.nn.Module", example_inputs: tuple["torch.Tensor", ...]) -> Graph:
    import torch

    from edgeconv.models import set_eval

    program = torch.export.export(set_eval(model), example_inputs, strict=False)
    return Graph(program=program, example_inputs=example_inputs)
