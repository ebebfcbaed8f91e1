"""Shared helpers for the CoreML / MIL-evaluator / fidelity tests: quantized Graphs built with the
real PT2E flow (torchao prepare/convert + litert-torch's PT2E quantizer), as the quantize pass does."""
from __future__ import annotations

import copy

import numpy as np
import torch

from edgeconv.graph import Graph, capture


def pt2e_quantizer(per_channel: bool = True):
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))


def quantize_graph(model: torch.nn.Module, example: torch.Tensor, calib: np.ndarray | torch.Tensor,
                   per_channel: bool = True) -> Graph:
    """Graph of `convert_pt2e(prepared, fold_quantize=False)`, calibrated one sample at a time."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = model.eval()
    program = torch.export.export(model, (example,), strict=False)
    quantizer = pt2e_quantizer(per_channel)
    prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for x in torch.as_tensor(calib):
            prepared(x[None])
    converted = convert_pt2e(copy.deepcopy(prepared), fold_quantize=False)
    qprog = torch.export.export(converted, (example,), strict=False)
    return Graph(program=qprog, example_inputs=(example,), quantizer=quantizer)


def float_graph(model: torch.nn.Module, example: torch.Tensor) -> Graph:
    return capture(model.eval(), (example,))


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| relative to max |want| (1e-4 means 0.01 % of the output's range)."""
    want = np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)) / max(np.max(np.abs(want)), 1e-12))
