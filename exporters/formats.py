"""What an artifact format is: the one object that knows how to open, run and read a file of its kind.

Each format lives in its own folder (`exporters/onnx/`, `exporters/tflite/`, `exporters/coreml/`)
with its targets, its runtime runner and every reading of its files, and registers one `Format`
in FORMATS. Everything outside exporters/ asks `format_for(path)` and calls the format — never
switches on a file suffix — so a new format is its folder plus one line in
`edgeconv.registrations.MODULES`, and gets per-layer isolation, float-op counting and profiling
from the code that already asks.

Readings a format cannot give raise `Unsupported` (a UserError: one line naming the format and
what it lacks), so a caller that needs one says so instead of silently skipping it.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from edgeconv.errors import UserError
from edgeconv.registry import FORMATS
from edgeconv.results import TensorSpec

if TYPE_CHECKING:
    from edgeconv.costops import Op
    from edgeconv.inputs import Batch
    from edgeconv.opview import OpView
    from edgeconv.exporters.tflite.sparse_check import SparseReport
    from edgeconv.results import FloatOps, WeightQuant


class Unsupported(UserError):
    """The format has no such reading (e.g. no int8 activations to read back)."""


@dataclasses.dataclass(frozen=True)
class QTensor:
    """One int8 activation read back from an artifact (or from the torch simulation)."""

    name: str
    scale: float
    zero_point: int
    values: np.ndarray  # int values, one block of rows per sample (N, ...)
    layer: str = ""
    qnode: str = ""  # torch side: the quantize node that produced it
    # torch side: the quantize node whose values this one re-lays out with the same scale and zero
    # point (a view, reshape, flatten, permute, or an identity requantization): formats keep one
    # tensor for both
    copy_of: str = ""
    # torch side, for a copy: where each of its values comes from, as a flat index into one sample
    # of copy_of's tensor (shape: one sample of this one); None where the op was not replayed
    moves: np.ndarray | None = None


def int_values(a: np.ndarray, shift: int = 0) -> np.ndarray:
    """One sample of an int8 (or uint8) tensor as QTensor.values stores it, less `shift`: a copy in
    the runtime's own 8-bit type, or the narrowest that holds the shifted values (a uint8 ONNX
    tensor less 128 is int8 again). Not int32: per-layer isolation keeps every activation of every
    sample on both sides, and a net with large attention maps (timm HaloNet at 256²: 481 M int8
    values a sample) held 1.9 GB a sample and side at four bytes a value. Every comparison widens
    the values first (int64 or float64): no arithmetic on them wraps."""
    a = np.asarray(a)
    if not shift and a.dtype in (np.int8, np.uint8, np.int16):
        return a.copy()
    wide = a.astype(np.int32) - shift
    lo, hi = (int(wide.min()), int(wide.max())) if wide.size else (0, 0)
    kind = next(t for t in (np.int8, np.uint8, np.int16, np.int32)
                if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
    return wide.astype(kind)


def join_samples(rows: list[np.ndarray]) -> np.ndarray:
    """Per-sample blocks of one tensor as QTensor.values (N, ...). A tensor with no batch dimension
    (a 0-d scalar, e.g. `x.mean()` over everything) becomes one row per sample instead of failing."""
    rows = [np.reshape(r, (1,)) if np.ndim(r) == 0 else r for r in rows]
    return rows[0] if len(rows) == 1 else np.concatenate(rows)  # one sample: no second copy


class Runner(Protocol):
    """A loaded artifact in its real runtime: float NCHW in, float (dequantized) out.

    `x` is one array for a one-input net, or one array per input in forward's order (edgeconv.inputs:
    the built-in runners feed each to the file's input of that name, `inputs` in the same order)."""

    engine: str  # exactly what computes the outputs (runtime and kernels): parity reports name it
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __call__(self, x: "Batch") -> np.ndarray: ...  # the first output

    def run_all(self, x: "Batch") -> list[np.ndarray]: ...  # every output, in `outputs` order


class Format:
    name: ClassVar[str]  # "onnx", "tflite", "coreml"
    suffixes: ClassVar[tuple[str, ...]]  # the first is what its targets write
    # Which runtime family loads the file on a board (the remote runners take it as --format):
    # a format that is another spelling of an existing one (a second ONNX opset) names that family.
    family: ClassVar[str] = ""
    runtime: ClassVar[str] = ""  # the Python package that runs it here, for messages

    # --- identity -----------------------------------------------------------------------------
    def owns(self, path: Path) -> bool:
        return path.suffix in self.suffixes

    def is_folder(self, path: Path) -> bool:
        """Whether an artifact of this name is a directory (an .mlpackage) rather than a file."""
        return False

    def check(self, path: Path) -> None:
        """A one-line UserError unless `path` exists, has this format's shape (file or folder)
        and opens in its reader; called before any work, so a corrupt file fails at once."""
        if not path.exists():
            raise UserError(f"artifact {path} does not exist")
        if self.is_folder(path) != path.is_dir():
            is_a, wants = ("a folder", "file") if path.is_dir() else ("a file", "package folder")
            raise UserError(f"artifact {path} is {is_a}, not a {self.name} {wants}; give the artifact "
                            "edgeconv export wrote")
        try:
            self.open(path)
        except UserError:
            raise
        except Exception as e:  # each runtime has its own exception types for a corrupt file
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise UserError(f"{path} is not a readable {self.name} artifact ({type(e).__name__}: {first}); "
                            "give the file edgeconv export wrote") from None

    def open(self, path: Path) -> None:
        """Parse the file enough to know it is one (raise anything on failure)."""
        self._reading("open_model", "open them")(path)

    def companions(self, path: Path) -> tuple[Path, ...]:
        """Files that must travel with the artifact to a device (e.g. ONNX external data)."""
        return ()

    # --- running ------------------------------------------------------------------------------
    def runner(self, path: Path, threads: int = 1, kernels: str = "reference") -> "Runner":
        raise NotImplementedError

    # --- reading ------------------------------------------------------------------------------
    # Every reading lives in the format's reader module (e.g. exporters/onnx/read.py), imported on
    # first use so that its heavy dependencies load only when a file is read; a reading the module
    # does not define is one the format cannot give (`Unsupported`).
    reader: ClassVar[str]

    def _reading(self, fn: str, what: str):
        found = getattr(importlib.import_module(self.reader), fn, None)
        if found is None:
            raise Unsupported(f"{self.name} artifacts: edgeconv cannot {what}")
        return found

    def read_weights(self, path: Path) -> "list[tuple[WeightQuant, np.ndarray | None]]":
        """Each conv/linear weight as stored in the file, with its scales when quantized."""
        return self._reading("read_weights", "read their weights")(path)

    def activation_scales(self, path: Path) -> list[float]:
        """Scales of the int8 activation tensors (not weights)."""
        return self._reading("read_activation_scales", "read their activation scales")(path)

    def float_ops(self, path: Path) -> "FloatOps":
        """What an int8 file still computes in float, read from the file."""
        return self._reading("float_ops", "count their float ops")(path)

    def int8_tensors(self, path: Path, x: "Batch", kernels: str = "reference") -> list[QTensor]:
        """Every int8 activation the file computes on inputs `x` (one sample at a time, every input), in
        execution order, fused pre-activations left out: what per-layer isolation compares. `kernels`
        as for runner(); a reader that has one kind of kernels takes no such argument."""
        read = self._reading("int8_tensors", "read their int8 tensors")
        return read(path, x) if kernels == "reference" else read(path, x, kernels=kernels)

    def cost_ops(self, path: Path) -> "tuple[list[Op], str]":
        """(ops, stored precision) for the cost model: the file's ops after a runtime's usual fusions."""
        return self._reading("cost_ops", "list their ops for the cost model")(path)

    def op_view(self, path: Path) -> "tuple[OpView, ...]":
        """Every op of the file with its tensors' dtypes, shapes, constness and options: what the
        delegate support tables test (edgeconv.devices.delegates)."""
        return self._reading("op_view", "list their ops for the delegate tables")(path)

    def delegated_nodes(self, path: Path) -> tuple[dict[int, int], list[str]]:
        """Which nodes this host's runtime hands to its CPU delegate (measured, not predicted)."""
        return self._reading("delegated_nodes", "say which nodes a delegate takes here")(path)

    def sparse_report(self, path: Path) -> "SparseReport":
        """Whether XNNPACK's sparse (CHW) path will run the file, rule by rule."""
        return self._reading("sparse_report", "judge XNNPACK's sparse path on them (check-sparse reads "
                             ".tflite files)")(path)


def format_for(path: Path | str) -> Format:
    """The format of an artifact, by its name (or, for formats that have one, its magic bytes)."""
    fmt = find_format(path)
    if fmt is None:
        known = ", ".join(s for _, f in FORMATS.items() for s in f.suffixes)
        raise UserError(f"{Path(path).name} is not an artifact edgeconv reads (known: {known}); "
                        "give a file edgeconv export wrote")
    return fmt


def find_format(path: Path | str) -> Format | None:
    from edgeconv import registrations

    registrations.load()
    p = Path(path)
    return next((f for _, f in FORMATS.items() if f.owns(p)), None)
