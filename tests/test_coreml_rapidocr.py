"""A real pretrained model through the CoreML path: rapidocr's text-orientation classifier
(MobileNetV3-style: depthwise, hard-swish, squeeze-excite), converted ONNX -> torch by
examples/rapidocr_cls.py, then quantized and lowered to coreml-w8a8 with every scale kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("rapidocr", reason="needs rapidocr's model file: pip install --no-deps rapidocr==3.10.0 "
                                       "(listed in requirements-nodeps.txt)")
pytest.importorskip("onnxruntime")

from examples import rapidocr_cls as rc  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return rc.load_classifier()


@pytest.fixture(scope="module")
def lines():
    return rc.dataset(rc.EVAL_SEED, 24)


def test_converter_matches_onnxruntime(model, lines):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(rc.onnx_path()), providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {"x": lines.x[i:i + 1]})[0] for i in range(len(lines))])
    with torch.no_grad():
        got = torch.cat([model(torch.from_numpy(lines.x[i:i + 1])) for i in range(len(lines))]).numpy()
    # edgeconv's fp32 parity criterion (1e-4 of the output range): onnxruntime's fp32 conv kernels
    # accumulate in an ISA-dependent order (2.8e-5 apart on an AVX2-only host, ~1e-6 with AVX-512).
    from edgeconv.parity import FLOAT_TOLERANCE
    from edgeconv.parity import diff

    d = diff(got, want, "onnxruntime", FLOAT_TOLERANCE)
    assert d.passed and d.max_rel < 1e-4, d
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert (convs, bns) == (53, 35)  # as DATA.md describes the file
    assert (got.argmax(1) == lines.y).mean() >= 0.9  # rendered lines, half upside down


def test_coreml_w8a8_keeps_every_scale(model, lines, tmp_path):
    pytest.importorskip("coremltools", reason="needs coremltools (pip install 'edgeconv[coreml]')")
    from edgeconv import registrations
    from edgeconv.config import ExportOptions, QuantOptions
    from edgeconv.context import Context
    from edgeconv.exporters.coreml import export as coreml_export
    from edgeconv.exporters.coreml import read as coreml_read
    from edgeconv.graph import capture
    from edgeconv.passes.manager import run_passes
    from edgeconv.registry import TARGETS

    registrations.load()
    calib = rc.dataset(rc.CALIB_SEED, 8)
    ctx = Context(options=ExportOptions(quant=QuantOptions(samples=8)), model=None, calib=calib)
    graph = run_passes(capture(model, (torch.zeros(rc.INPUT_SHAPE),)), ctx, coreml_export.INT8_PASSES)
    path = tmp_path / "cls.mlpackage"
    info = TARGETS.get("coreml-w8a8")().export(graph, ctx, path)
    assert "53 weight scale/zero-point sets equal PT2E's" in info.scales_from or \
        "54 weight scale/zero-point sets equal PT2E's" in info.scales_from  # 53 convs + the fc
    weights = [w for w, _ in coreml_read.read_weights(path)]
    assert len(weights) == 54 and all(w.dtype == "int8" and w.num_scales == w.shape[0] for w in weights)
    runner = TARGETS.get("coreml-w8a8")().load(path)
    got = runner(lines.x[:8])
    from edgeconv.quant.program import forward, simulate

    want = forward(simulate(graph.module(), ()), lines.x[:8])
    # softmax output: the last activation is float; compare probabilities
    assert np.abs(got - want).max() < 0.02
    assert (got.argmax(1) == want.argmax(1)).all()
