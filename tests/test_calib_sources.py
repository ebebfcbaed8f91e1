"""Calibration sources: real PNG files written with PIL, real .npy/.npz files, and every bad input."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeconv.calib.data import DataSet
from edgeconv.calib.sources import IMAGE_SUFFIXES, RANDOM_SOURCE, load_data
from edgeconv.config import CalibSpec
from edgeconv.errors import UserError

SHAPE = (1, 3, 8, 8)


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def load(source, shape=SHAPE, **kw):
    spec_kw = {k: kw.pop(k) for k in ("mean", "std", "layout") if k in kw}
    return load_data(CalibSpec(source=str(source), **spec_kw), shape, **kw)


# --- image folders --------------------------------------------------------------------------------

def test_folder_rgb_grey_rgba_resized_scaled_nchw(tmp_path):
    png(tmp_path / "a_rgb.png", np.full((20, 30, 3), (255, 0, 51), np.uint8))
    png(tmp_path / "b_grey.png", np.full((5, 5), 102, np.uint8))
    png(tmp_path / "c_rgba.png", np.full((9, 9, 4), (10, 20, 30, 0), np.uint8))  # alpha must be dropped
    png(tmp_path / "sub" / "d.png", np.full((8, 8, 3), 255, np.uint8))  # subfolders count
    png(tmp_path / ".hidden" / "e.png", np.zeros((8, 8, 3), np.uint8))  # hidden: skipped
    (tmp_path / "notes.txt").write_text("not an image")
    d = load(tmp_path)
    assert d.real and d.y is None and "4 images" in d.source
    assert d.x.shape == (4, 3, 8, 8) and d.x.dtype == np.float32
    # drawn in a seeded order: find each image by its pixels
    got = sorted(tuple(np.round(d.x[i, :, 3, 3], 6)) for i in range(4))
    want = sorted(tuple(np.round(v, 6)) for v in ([1.0, 0.0, 0.2], [0.4] * 3,  # grey replicated to 3 channels
                                                  np.array([10, 20, 30]) / 255, [1.0] * 3))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert any(np.allclose(d.x[i], 1.0) for i in range(4))


def test_folder_bilinear_resize_keeps_layout(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, 8:, 0] = 255  # right half red
    img[8:, :, 2] = 255  # bottom half blue
    png(tmp_path / "x.png", img)
    x = load(tmp_path).x[0]
    assert x[0, :, :3].max() < 0.05 and x[0, :, 5:].min() > 0.95  # red right: W is the last axis
    assert x[2, :3, :].max() < 0.05 and x[2, 5:, :].min() > 0.95  # blue bottom: H is the middle axis
    # Bilinear (not nearest) blends the two columns at the border, symmetrically.
    assert 0.05 < x[0, 0, 3] < 0.5 < x[0, 0, 4] < 0.95
    assert x[0, 0, 3] + x[0, 0, 4] == pytest.approx(1.0, abs=1e-6)


def test_folder_mean_std_spec_overrides_model(tmp_path):
    png(tmp_path / "a.png", np.full((8, 8, 3), 255, np.uint8))
    d = load(tmp_path, model_mean=(0.5, 0.5, 0.5), model_std=(0.25, 0.25, 0.25))
    np.testing.assert_allclose(d.x, 2.0)  # (1 - 0.5) / 0.25
    d = load(tmp_path, mean=(0.0, 0.5, 1.0), std=(1.0,), model_mean=(0.5,), model_std=(0.25,))
    np.testing.assert_allclose(d.x[0, :, 0, 0], [1.0, 0.5, 0.0])


def test_folder_one_channel_and_16_bit(tmp_path):
    png(tmp_path / "a.png", np.full((8, 8, 3), (255, 255, 255), np.uint8))
    png(tmp_path / "b.png", np.full((8, 8), 30000, np.uint16))  # 16-bit greyscale PNG
    d = load(tmp_path, shape=(1, 1, 4, 4))
    assert d.x.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(np.sort(d.x[:, 0, 0, 0]), [30000 / 65535, 1.0], atol=1e-6)
    for i in range(2):
        np.testing.assert_allclose(d.x[i], d.x[i, 0, 0, 0], atol=1e-6)  # each image is uniform


def test_folder_count_draws_a_seeded_sample_not_the_first_files(tmp_path):
    for i in range(5):
        png(tmp_path / f"{i}.png", np.full((8, 8, 3), i * 50, np.uint8))
    d = load(tmp_path, count=2)
    assert d.x.shape == (2, 3, 8, 8) and "2 of 5 images" in d.source and "seed 0" in d.source
    values = set(np.round(d.x[:, 0, 0, 0] * 255).astype(int))
    assert len(values) == 2 and values <= {0, 50, 100, 150, 200}
    np.testing.assert_array_equal(load(tmp_path, count=2).x, d.x)  # same seed, same draw
    whole = load(tmp_path)  # the whole folder, each image once
    assert sorted(np.round(whole.x[:, 0, 0, 0] * 255).astype(int)) == [0, 50, 100, 150, 200]


def _class_folders(root, classes=4, per_class=10):
    """A class-per-folder dataset: image value encodes class*per_class + index."""
    for c in range(classes):
        for i in range(per_class):
            png(root / f"class_{c}" / f"img_{i:02d}.png", np.full((8, 8, 3), c * per_class + i, np.uint8))


def _drawn(d):
    return [int(v) for v in np.round(d.x[:, 0, 0, 0] * 255)]


def test_folder_draws_evenly_across_class_folders_and_reproducibly(tmp_path):
    _class_folders(tmp_path)
    d = load(tmp_path, count=8)
    ids = _drawn(d)
    assert len(ids) == 8 == len(set(ids))
    assert sorted({i // 10 for i in ids}) == [0, 1, 2, 3]  # every class, not the first ones in name order
    assert all(sum(i // 10 == c for i in ids) == 2 for c in range(4))  # and evenly: 2 per class
    assert "8 of 40 images, drawn evenly from 4 sub-folders, seed 0" in d.source
    assert _drawn(load(tmp_path, count=8)) == ids  # same seed: same selection, same order
    draws = {tuple(_drawn(load(tmp_path, count=8, seed=s))) for s in range(5)}
    assert len(draws) > 1  # other seeds draw other images
    for s in range(5):
        assert all(sum(i // 10 == c for i in _drawn(load(tmp_path, count=8, seed=s))) == 2 for c in range(4))


def test_calibration_and_held_out_split_both_span_the_classes(tmp_path):
    """The pipeline calibrates on the first samples and checks parity on the ones after: each part
    of one draw covers every class."""
    _class_folders(tmp_path)
    ids = _drawn(load(tmp_path, count=16))
    assert sorted({i // 10 for i in ids[:8]}) == [0, 1, 2, 3] == sorted({i // 10 for i in ids[8:]})
    assert not set(ids[:8]) & set(ids[8:])


# --- arrays ---------------------------------------------------------------------------------------

def test_npy_float_nchw_is_taken_as_model_input(tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    d = load(tmp_path / "x.npy", model_mean=(0.5,), model_std=(0.2,))  # model mean/std not applied
    np.testing.assert_array_equal(d.x, x)
    d = load(tmp_path / "x.npy", mean=(1.0,), std=(2.0,))  # explicit --mean/--std are
    np.testing.assert_allclose(d.x, (x - 1.0) / 2.0, rtol=1e-6)


def test_npz_uint8_nhwc_with_labels(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    y = np.arange(5)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load(tmp_path / "d.npz", layout="NHWC", model_mean=(0.5,), model_std=(0.5,), count=4)
    assert d.x.shape == (4, 3, 8, 8)
    np.testing.assert_allclose(d.x, (x[:4].transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.5, atol=1e-6)
    np.testing.assert_array_equal(d.y, y[:4])
    assert d.y.dtype == np.int64


def test_npz_single_array_any_name(tmp_path):
    x = np.ones((2, 3, 8, 8), np.float32)
    np.savez(tmp_path / "d.npz", images=x)
    assert load(tmp_path / "d.npz").x.shape == (2, 3, 8, 8)


def test_npy_grey_without_channel_axis_and_single_sample(tmp_path):
    np.save(tmp_path / "g.npy", np.zeros((4, 28, 28), np.float32))
    assert load(tmp_path / "g.npy", shape=(1, 1, 28, 28)).x.shape == (4, 1, 28, 28)
    np.save(tmp_path / "one.npy", np.zeros((3, 8, 8), np.float32))
    assert load(tmp_path / "one.npy").x.shape == (1, 3, 8, 8)


def test_rank2_feature_inputs(tmp_path):
    x = np.random.default_rng(2).standard_normal((7, 40)).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    d = load(tmp_path / "f.npy", shape=(1, 40))
    np.testing.assert_array_equal(d.x, x)
    assert load("random", shape=(1, 40), count=3).x.shape == (3, 40)


# --- bundled and random ---------------------------------------------------------------------------

def test_demo_calls_the_bundled_function_and_counts():
    x = np.arange(5 * 3 * 8 * 8, dtype=np.float32).reshape(5, 3, 8, 8)
    bundled = lambda: DataSet(x, np.arange(5), source="bundled test set")  # noqa: E731
    d = load("demo", bundled=bundled, count=3)
    np.testing.assert_array_equal(d.x, x[:3])
    np.testing.assert_array_equal(d.y, [0, 1, 2])
    assert load("bundled", bundled=bundled).source == "bundled test set"


def test_demo_model_data_is_real_and_fits_the_demo():
    from edgeconv.demo import demo

    spec = demo()
    d = load("demo", shape=spec.input_shape, bundled=spec.data, count=16)
    assert d.real and d.x.shape == (16, *spec.input_shape[1:]) and d.y is not None


def test_random_is_seeded_and_marked_not_real():
    a, b = load("random", count=4, seed=3), load("random", count=4, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, load("random", count=4, seed=4).x)
    assert a.x.shape == (4, 3, 8, 8) and a.x.dtype == np.float32
    assert not a.real and a.source == RANDOM_SOURCE and "not a real calibration" in a.source
    assert 0.5 < float(load("random", count=64).x.std()) < 1.5


# --- bad input: one line naming the thing and the fix ----------------------------------------------

def bad(source, *words, **kw):
    with pytest.raises(UserError) as e:
        load(source, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def test_missing_path(tmp_path):
    bad(tmp_path / "nope", "does not exist", "nope", "--calib")


def test_empty_folder_lists_extensions(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    msg = bad(tmp_path, "no images", str(tmp_path))
    assert all(s in msg for s in IMAGE_SUFFIXES)


def test_corrupt_and_truncated_images_are_named(tmp_path):
    png(tmp_path / "ok.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"definitely not a jpeg")
    bad(tmp_path, "broken.jpg", "cannot be read")
    (tmp_path / "broken.jpg").unlink()
    png(tmp_path / "big.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "big.png").write_bytes((tmp_path / "big.png").read_bytes()[:200])
    bad(tmp_path, "big.png", "cannot be read")


def test_wrong_shape_says_expected_and_got(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 28, 28), np.float32))
    msg = bad(tmp_path / "x.npy", shape=(1, 3, 32, 32))
    assert msg == ("calibration data x.npy has shape (10, 28, 28), the model takes (N, 3, 32, 32); "
                   "pass arrays shaped N×3×32×32 (or N×32×32×3 with --calib-layout NHWC)")
    np.save(tmp_path / "h.npy", np.zeros((2, 3, 8, 8), np.float32))
    bad(tmp_path / "h.npy", "(2, 3, 8, 8)", "N×8×8×3", "--calib-layout NCHW", layout="NHWC")
    np.save(tmp_path / "f.npy", np.zeros((7, 41), np.float32))
    bad(tmp_path / "f.npy", "(7, 41)", "(N, 40)", "N×40", shape=(1, 40))
    np.save(tmp_path / "e.npy", np.zeros((0, 3, 8, 8), np.float32))
    bad(tmp_path / "e.npy", "no samples")


@pytest.mark.parametrize("array, word", [
    (np.zeros((2, 3, 8, 8), np.complex64), "complex"),
    (np.zeros((2, 3, 8, 8), bool), "bool"),
    (np.full((2, 3, 8, 8), "a"), "string"),
])
def test_wrong_dtype(tmp_path, array, word):
    np.save(tmp_path / "x.npy", array)
    bad(tmp_path / "x.npy", "x.npy", word, "dtype")


def test_object_arrays_are_refused_not_unpickled(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    bad(tmp_path / "o.npy", "o.npy", "object")
    np.savez(tmp_path / "o.npz", x=np.array([1, None], dtype=object))
    bad(tmp_path / "o.npz", "o.npz", "object")


def test_nan_and_inf_are_counted(tmp_path):
    x = np.zeros((2, 3, 8, 8), np.float32)
    x[0, 0, 0, :3] = np.nan
    x[1, 2, 1, 1] = np.inf
    x[1, 2, 1, 2] = -np.inf
    np.save(tmp_path / "x.npy", x)
    bad(tmp_path / "x.npy", "x.npy", "3 NaN", "2 Inf")


def test_labels_length_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 8, 8), np.float32), y=np.arange(3))
    bad(tmp_path / "d.npz", "4 samples", "3 labels", "d.npz")


def test_unreadable_and_unlabelled_archives(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    bad(tmp_path / "junk.npy", "junk.npy", "not a readable numpy file")
    (tmp_path / "junk.npz").write_bytes(b"PK garbage")
    bad(tmp_path / "junk.npz", "junk.npz", "not a readable numpy file")
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    bad(tmp_path / "two.npz", "two.npz", "'a'", "'x'")


def test_other_bad_specs(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    bad(tmp_path / "x.npy", "NCHW", "NHWC", layout="NCWH")
    bad(tmp_path / "x.npy", "3 channels", "--mean", mean=(0.1, 0.2))
    bad(tmp_path / "x.npy", "--std", mean=(0.1,), std=(0.0,))
    bad(tmp_path / "x.npy", "--calib-samples", count=0)
    (tmp_path / "x.csv").write_text("1,2")
    bad(tmp_path / "x.csv", "x.csv", ".npy/.npz")
    png(tmp_path / "imgs" / "a.png", np.zeros((8, 8, 3), np.uint8))
    bad(tmp_path / "imgs", "(N, 40)", ".npy/.npz", shape=(1, 40))
    bad(tmp_path / "imgs", "5-channel", shape=(1, 5, 8, 8))
    bad("demo", "bundles no calibration data", "random")
    wrong = lambda: DataSet(np.zeros((2, 3, 4, 4), np.float32), None, source="tiny")  # noqa: E731
    bad("demo", "(2, 3, 4, 4)", "(N, 3, 8, 8)", bundled=wrong)
