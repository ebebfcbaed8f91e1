"""Model sources for `--model`: a `package.module:factory`, a `.pt2` file, or the embedded demo.

A factory returns an `nn.Module`, or a `ModelSpec` when it wants to declare its example input,
preprocessing or bundled evaluation data.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgeconv.errors import UserError

if TYPE_CHECKING:
    import torch

    from edgeconv.calib.data import DataSet
    from edgeconv.outputs import OutputSpec

DEMO_REF = "edgeconv.demo:demo"


@dataclasses.dataclass(frozen=True, eq=False)
class ModelSpec:
    module: "torch.nn.Module"
    example_inputs: tuple["torch.Tensor", ...]
    name: str = "model"
    sha256: str = ""
    mean: tuple[float, ...] = ()  # preprocessing the model expects (applied by calib/ sources)
    std: tuple[float, ...] = ()
    data: "Callable[[], DataSet] | None" = None  # bundled labelled data, e.g. the demo's held-out split
    train_data: "Callable[[], DataSet] | None" = None  # labelled training data for QAT, if bundled
    ref: str = ""  # what load_model was given (package.module:factory or a .pt2), "" when built in code
    weights: str = ""  # and its --weights file
    # what each output is, in the order forward returns them (name and kind; edgeconv.outputs):
    # the names every artifact gives its outputs, the kinds parity judges them by. Empty: inferred.
    outputs: "tuple[OutputSpec, ...]" = ()
    # the names every artifact gives the inputs, in the order forward takes them (edgeconv.inputs);
    # empty: forward's parameter names for a net with several inputs, the converter's own for one.
    # The data of a net with several inputs supplies each (DataSet.more: bundled data, a .npz with
    # one array per name, or random).
    input_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.example_inputs[0].shape)

    @property
    def more_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shapes of the inputs after the first (none for a one-input net)."""
        return tuple(tuple(t.shape) for t in self.example_inputs[1:])

    def reference(self) -> dict[str, Any] | None:
        """How to load this model again (the manifest's `model_ref`), or None when built in code."""
        if not self.ref:
            return None
        return {"model": self.ref, "weights": self.weights, "input_shape": list(self.input_shape)}


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(d <= 0 for d in shape):
        raise UserError(f"--input-shape {text!r} is not a shape; write it like 1,3,224,224")
    return shape


def module_sha256(module: "torch.nn.Module") -> str:
    """Hash of the architecture name and every parameter/buffer, independent of file format."""
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path | str) -> str:
    """sha256 of a file, or of a folder artifact (an .mlpackage): its files' relative names and
    bytes, in sorted order, so the same bytes give the same hash wherever they lie."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(bytes.fromhex(file_sha256(f)))
        return h.hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_size(path: Path | str) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def load_model(ref: str | None = None, weights: str | None = None,
               input_shape: tuple[int, ...] | None = None) -> ModelSpec:
    ref = ref or DEMO_REF
    if ref.endswith(".pt2"):
        spec = _from_pt2(Path(ref))
    elif ":" in ref and not Path(ref).exists():
        spec = _from_factory(ref)
    elif Path(ref).suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise UserError(f"{ref} is a checkpoint without an architecture; pass the factory that builds "
                        f"the model and the file as weights: --model pkg.module:factory --weights {ref}")
    else:
        raise UserError(f"--model {ref!r} is neither a package.module:factory reference nor a .pt2 file")
    if weights:
        spec = _with_weights(spec, Path(weights))
    if input_shape:
        import torch

        # --input-shape is the first input's; a net's other inputs keep their declared shapes
        spec = dataclasses.replace(spec, example_inputs=(torch.zeros(input_shape),) + tuple(spec.example_inputs[1:]))
    _check_runs(spec)
    from edgeconv.inputs import resolve_names

    spec = dataclasses.replace(spec, input_names=resolve_names(
        spec.input_names, spec.module, len(spec.example_inputs), tuple(o.name for o in spec.outputs)))
    # paths absolute, so `edgeconv check` finds them again from any folder
    weights_ref = str(Path(weights).resolve()) if weights else ""
    return dataclasses.replace(spec, ref=str(Path(ref).resolve()) if ref.endswith(".pt2") else ref, weights=weights_ref)


def resolve_ref(ref: str, flag: str, wants: str = "a function") -> Callable[..., Any]:
    """The callable behind a `package.module:function` reference given to `flag`, or a one-line
    error. Like `python -m`, the user's own modules resolve from the current folder."""
    import os
    import sys

    mod_name, sep, fn_name = ref.partition(":")
    if not sep or not mod_name or not fn_name:
        raise UserError(f"{flag} {ref!r} is not package.module:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # a user module may fail in any way on import
        raise UserError(f"cannot import {mod_name!r} for {flag} {ref}: {type(e).__name__}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise UserError(f"{mod_name} has no callable {fn_name!r}; {flag} wants package.module:function ({wants})")
    return fn


def call_ref(ref: str, flag: str, *args: Any) -> Any:
    """Resolve and call a reference; whatever it raises becomes a one-line error naming it."""
    fn = resolve_ref(ref, flag)
    try:
        return fn(*args)
    except Exception as e:
        raise UserError(f"{flag} {ref} raised {type(e).__name__}: {e}") from None


def _from_factory(ref: str) -> ModelSpec:
    import torch

    out: Any = call_ref(ref, "--model")
    if isinstance(out, ModelSpec):
        spec = out
    elif isinstance(out, torch.nn.Module):
        spec = ModelSpec(module=out, example_inputs=())
    else:
        raise UserError(f"model factory {ref} returned {type(out).__name__}, not an nn.Module or ModelSpec")
    from edgeconv.outputs import OutputSpec

    declared = tuple(o if isinstance(o, OutputSpec) else OutputSpec(*o) for o in spec.outputs)  # (name, kind) pairs too
    return dataclasses.replace(spec, name=spec.name if spec.name != "model" else ref,
                               sha256=spec.sha256 or module_sha256(spec.module), outputs=declared)


def _from_pt2(path: Path) -> ModelSpec:
    from edgeconv.pt2 import PT2_HOW, load_pt2, torch_logging_off

    if not path.is_file():
        raise UserError(f"model file {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                        f"give a .pt2 file: {PT2_HOW}")
    program = load_pt2(path)
    args = program.example_inputs[0] if program.example_inputs else ()
    try:
        with torch_logging_off():
            module = program.module()
    except Exception as e:
        raise UserError(f"{path} holds a program torch cannot turn into a module ({type(e).__name__}); "
                        f"{PT2_HOW}") from None
    return ModelSpec(module=module, example_inputs=tuple(args), name=path.name, sha256=file_sha256(path))


def _with_weights(spec: ModelSpec, path: Path) -> ModelSpec:
    import torch

    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        # weights_only: a checkpoint is untrusted input, never unpickle arbitrary objects.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable state-dict checkpoint ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict")
    try:
        spec.module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise UserError(f"weights {path} do not fit the model: {first}") from None
    return dataclasses.replace(spec, sha256=file_sha256(path))


def set_eval(module: "torch.nn.Module") -> "torch.nn.Module":
    """`module.eval()`, also for unlifted torch.export modules, which refuse `.eval()` but were
    captured with their inference behaviour already fixed in the graph."""
    for m in module.modules():
        m.training = False
    return module


def _check_runs(spec: ModelSpec) -> None:
    import torch

    if not spec.example_inputs:
        raise UserError(f"{spec.name} declares no example input; pass --input-shape 1,3,H,W")
    set_eval(spec.module)
    try:
        with torch.no_grad():
            y = spec.module(*spec.example_inputs)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{spec.name} rejects input shape {list(spec.input_shape)}: {msg}; "
                        "fix --input-shape") from None
    count = len(y) if isinstance(y, (tuple, list)) else 1
    if spec.outputs and len(spec.outputs) != count:
        raise UserError(f"{spec.name} declares {len(spec.outputs)} outputs "
                        f"({', '.join(o.name for o in spec.outputs)}) but returns {count}; fix ModelSpec.outputs")
