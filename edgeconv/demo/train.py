"""Seeded training of the embedded demo on sklearn's digits: `python -m edgeconv.demo.train`.

Writes, next to this file, `demo_digits.pt` (state dict) and `digits_heldout.npz` (the held-out
split, preprocessed model inputs and labels). Same seed, same bytes: training runs on one thread
with deterministic algorithms, so the shipped weights can be re-derived.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "demo_digits.pt"
HELDOUT = HERE / "digits_heldout.npz"
SEED = 0
HELDOUT_SIZE = 400
EPOCHS = 12
BATCH = 32


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix equal to 1-D bilinear resize with align_corners=False (torch's default).

    A numpy matrix instead of torch's interpolate so preprocessing needs no torch and is exact
    across versions: out = A @ image @ A.T.
    """
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    a = np.zeros((n_out, n_in))
    a[np.arange(n_out), lo] += 1.0 - frac
    a[np.arange(n_out), hi] += frac
    return a


def preprocess(images: np.ndarray) -> np.ndarray:
    """sklearn digits (N, 8, 8), values 0..16 -> float32 (N, 3, 32, 32) normalised model input."""
    from edgeconv.demo.model import INPUT_SHAPE, MEAN, STD

    size = INPUT_SHAPE[-1]
    a = bilinear_matrix(images.shape[-1], size)
    up = a @ (np.asarray(images, dtype=np.float64) / 16.0) @ a.T          # (N, 32, 32) in [0, 1]
    x = np.repeat(up[:, None], 3, axis=1)
    mean = np.asarray(MEAN).reshape(1, 3, 1, 1)
    std = np.asarray(STD).reshape(1, 3, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    return d.images, d.target.astype(np.int64)


def split_indices(labels: np.ndarray, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, held-out) index arrays; the held-out part is never trained on."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train_idx, held_idx = train_test_split(idx, test_size=HELDOUT_SIZE, stratify=labels,
                                           random_state=seed)
    return np.sort(train_idx), np.sort(held_idx)


def train(epochs: int = EPOCHS, seed: int = SEED):
    """Train a DemoNet deterministically; returns (model in eval mode, held-out x, held-out y)."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(epochs, seed)
    finally:  # a caller (a test, a notebook) keeps its own torch settings
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(epochs: int, seed: int):
    import torch

    from edgeconv.demo.model import DemoNet

    torch.manual_seed(seed)
    images, labels = load_digits()
    train_idx, held_idx = split_indices(labels, seed)
    x = torch.from_numpy(preprocess(images[train_idx]))
    y = torch.from_numpy(labels[train_idx])

    model = DemoNet()
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(BATCH):
            xb = _shift(x[batch], gen)
            loss = torch.nn.functional.cross_entropy(model(xb), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval(), preprocess(images[held_idx]), labels[held_idx]


def _shift(x, gen, max_px: int = 2):
    """Random translation of the whole batch by up to max_px pixels: cheap augmentation that
    keeps a 1.4k-sample training set from being memorised."""
    import torch

    dy, dx = torch.randint(-max_px, max_px + 1, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def save(model, x: np.ndarray, y: np.ndarray, weights: Path = WEIGHTS, heldout: Path = HELDOUT) -> None:
    import torch

    from edgeconv.results import atomic_write

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write(weights, buf.getvalue())
    buf = io.BytesIO()
    # float16 storage keeps the file small; the held-out inputs are normalised digits whose
    # float16 rounding (~1e-3) is far below anything int8 can resolve. Loaded back as float32.
    np.savez_compressed(buf, x=x.astype(np.float16), y=y.astype(np.int64))
    atomic_write(heldout, buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    model, x, y = train(args.epochs, args.seed)
    save(model, x, y)
    print(f"held-out accuracy {accuracy(model, x, y):.4f} on {len(y)} digits; "
          f"wrote {WEIGHTS.name} ({WEIGHTS.stat().st_size} B), {HELDOUT.name} ({HELDOUT.stat().st_size} B)")


if __name__ == "__main__":
    main()
