"""Cross-check: edgeconv's sparse encoding equals the one tensorflow's converter writes with
`tf.lite.Optimize.EXPERIMENTAL_SPARSITY` (its DenseToSparse pass, `mlir_sparsify`), on the same
litert-torch conversion. tensorflow-cpu is the `sparse` extra: edgeconv itself does not need it.
"""
from __future__ import annotations

import numpy as np
import pytest

from zoo_sparse import dense_tflite

tf_convert = pytest.importorskip("tensorflow.lite.python.convert",
                                 reason="tensorflow-cpu not installed: pip install 'edgeconv[sparse]'")


def _densified(model, kinds):
    """The sparse constant behind each DENSIFY, in op order."""
    sg = model.subgraphs[0]
    return [sg.tensors[int(op.inputs[0])] for op, k in zip(sg.operators, kinds) if k == "DENSIFY"]


def test_encoding_equals_tensorflow_experimental_sparsity(tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    from edgeconv.exporters.tflite.sparse import pack, rewrite
    from edgeconv.exporters.tflite.flatbuffer import builtin, const_array, op_names, read_tflite

    dense = dense_tflite(0.9)
    # litert-torch marks its constants "keep_stablehlo_constant"; tensorflow's importer then keeps
    # them as stablehlo constants its DenseToSparse pass does not see. Without the mark it encodes.
    m = schema.ModelT.InitFromPackedBuf(dense, 0)
    m.metadata = [x for x in m.metadata if x.name != b"keep_stablehlo_constant"]
    (tmp_path / "tf.tflite").write_bytes(tf_convert.mlir_sparsify(pack(m)))
    rewrite(dense, tmp_path / "ours.tflite", explicit_pad=False)

    tf, ours = read_tflite(tmp_path / "tf.tflite"), read_tflite(tmp_path / "ours.tflite")
    names = op_names()
    kinds = [[builtin(x, op, names) for op in x.subgraphs[0].operators] for x in (tf, ours)]
    assert kinds[0] == kinds[1] and kinds[0].count("DENSIFY") == 17
    a, b = _densified(tf, kinds[0]), _densified(ours, kinds[1])
    assert len(a) == len(b) == 17
    assert all(t.sparsity is not None for t in a + b)
    for ta, tb in zip(a, b):
        assert list(ta.shape) == list(tb.shape)
        sa, sb = ta.sparsity, tb.sparsity
        assert list(sa.traversalOrder) == list(sb.traversalOrder)
        for la, lb in zip(sa.dimMetadata, sb.dimMetadata):
            assert (la.format, la.denseSize) == (lb.format, lb.denseSize)
            if la.format == 1:
                assert (la.arraySegmentsType, la.arrayIndicesType) == (lb.arraySegmentsType, lb.arrayIndicesType)
                assert np.array_equal(la.arraySegments.values, lb.arraySegments.values)
                assert np.array_equal(la.arrayIndices.values, lb.arrayIndices.values)
        assert np.array_equal(const_array(tf, ta), const_array(ours, tb))
