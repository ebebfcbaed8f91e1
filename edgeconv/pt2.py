"""Loading a torch.export `.pt2` without unpickling or evaluating anything from the file.

`torch.export.load` is not safe on untrusted files: it falls back to the pre-2.8 zip layout whose
state dict, constants and example inputs go through `torch.load(weights_only=False)` when the
weights-only load fails; the current layout unpickles weights and constants marked `use_pickle`
(weights_only=False), custom objects (`torch._C._pickle_load_obj`) and opaque objects
(`pickle.loads`); it loads AOTInductor shared libraries from `data/aotinductor/`; and the model
JSON holds text that torch evaluates — `guards_code` is exec'd by `ExportedProgram.module()`,
symbolic-shape `expr_str` goes through `sympy.sympify` (eval), a node `target` resolves to any
callable reachable from `torch`, and a string input becomes part of a generated guard. So the
archive is read into memory once, checked here, and only then handed to torch's deserializer:
weights and constants as raw bytes + JSON tensor metadata (what `torch.export.save` writes for
plain tensors), the example inputs through `torch.load(weights_only=True)` (torch's restricted
unpickler: tensors and containers only, no fallback).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeconv.errors import UserError

PT2_HOW = "write it with torch.export.save(torch.export.export(model, args), path)"
_PT2_SAFE_HOP = frozenset({"wrap_with_set_grad_enabled", "wrap_with_autocast"})


class _Pt2Refused(Exception):
    """An archive edgeconv will not load, and why (one line)."""


class _Pt2Corrupt(Exception):
    """Not a .pt2 at all (e.g. not a zip)."""


def load_pt2(path: Path) -> Any:
    """The ExportedProgram in `path`, loaded without unpickling anything but tensors; a UserError
    (one line, torch's logger silenced) for a corrupt, foreign or unsafe archive."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read model file {path}: {e.strerror or e}") from None
    try:
        with torch_logging_off():
            model_json, sample = _check_pt2_archive(data)
            program = _deserialize_pt2(data, model_json, sample)
    except _Pt2Refused as e:
        raise UserError(f"refusing {path}: {e}; edgeconv loads only plain torch.export programs "
                        f"(tensors as raw bytes, nothing pickled); {PT2_HOW}") from None
    except _Pt2Corrupt as e:
        raise UserError(f"{path} is not a readable torch.export .pt2 file ({e}); {PT2_HOW}") from None
    except Exception as e:  # corrupt JSON or tensor records, a foreign schema: torch may raise anything
        raise UserError(f"{path} is not a readable torch.export .pt2 file ({type(e).__name__}); "
                        f"{PT2_HOW}") from None
    return program


class torch_logging_off:
    """Torch logs some load failures with their traceback (`log.warning(..., exc_info=True)`) before
    raising; the CLI reports the failure itself, in one line."""

    def __enter__(self) -> None:
        import logging

        self._prev = logging.root.manager.disable
        logging.disable(logging.CRITICAL)

    def __exit__(self, *exc: Any) -> None:
        import logging

        logging.disable(self._prev)


def _check_pt2_archive(data: bytes) -> tuple[dict, bytes]:
    """Inspect the zip and its JSON; return the model JSON and the pickled example inputs' bytes.
    Raises _Pt2Refused for anything that would need unpickling or evaluating text."""
    import io
    import json
    import zipfile

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = zf.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise _Pt2Corrupt("not a zip archive") from None
    if not names:
        raise _Pt2Refused("the zip archive is empty")
    if len(set(names)) != len(names):  # zipfile and torch's reader could pick different copies
        raise _Pt2Refused("it holds two records with the same name")
    top = {n for n in names if "/" not in n}
    if {"version", "serialized_exported_program.json"} & top or any(n.endswith(".pt") for n in top):
        raise _Pt2Refused("it is in the pre-2.8 torch.export layout, whose state dict, constants and "
                          "example inputs are pickles torch would unpickle")
    root = names[0].split("/", 1)[0] + "/"
    if any(not n.startswith(root) for n in names):
        raise _Pt2Refused("its records are not all under one archive folder")
    rel = {n[len(root):]: n for n in names}

    def read(name: str) -> bytes:
        return zf.read(rel[name])

    if "archive_format" not in rel:
        raise _Pt2Refused("it has no archive_format record")
    if read("archive_format") != b"pt2" or rel.get("archive_version") is None or read("archive_version") != b"0":
        raise _Pt2Refused("its archive_format/archive_version is not pt2/0")
    allowed_fixed = {"archive_format", "archive_version", ".data/version", ".data/serialization_id", "byteorder",
                     "models/model.json", "data/weights/model_weights_config.json",
                     "data/constants/model_constants_config.json", "data/sample_inputs/model.pt"}
    for name in rel:
        if name.endswith("/") or name in allowed_fixed:
            continue
        if name.startswith("data/weights/weight_") or name.startswith("data/constants/tensor_"):
            continue
        if name.startswith("extra/"):
            continue  # read as text, never deserialized
        what = ("compiled AOTInductor code" if name.startswith("data/aotinductor/")
                else "a pickled custom object" if name.startswith(("data/constants/custom_obj_",
                                                                   "data/constants/opaque_obj_"))
                else "legacy pickled weights" if name.endswith(".pt")
                else "a second model" if name.startswith("models/") else "a record torch.export.save does not write")
        raise _Pt2Refused(f"it holds {name!r} ({what})")
    for name in ("models/model.json", "data/weights/model_weights_config.json",
                 "data/constants/model_constants_config.json"):
        if name not in rel:
            raise _Pt2Refused(f"it lacks {name}")
    for name, prefix in (("data/weights/model_weights_config.json", "weight_"),
                         ("data/constants/model_constants_config.json", "tensor_")):
        config = json.loads(read(name)).get("config", {})
        for fqn, meta in config.items():
            if meta.get("use_pickle") is not False or not str(meta.get("path_name", "")).startswith(prefix):
                raise _Pt2Refused(f"{fqn!r} in {name} is stored as a pickle ({meta.get('path_name')!r})")
            if "data/" + name.split("/")[1] + "/" + meta["path_name"] not in rel:
                raise _Pt2Refused(f"{fqn!r} in {name} points at a missing record {meta['path_name']!r}")
    model_json = json.loads(read("models/model.json"))
    if not isinstance(model_json, dict):
        raise _Pt2Refused("models/model.json is not a JSON object")
    _check_program_json(model_json)
    sample = read("data/sample_inputs/model.pt") if "data/sample_inputs/model.pt" in rel else b""
    return model_json, sample


def _check_program_json(doc: dict) -> None:
    """Refuse text in the program JSON that torch would execute or evaluate (see above)."""
    import re

    from torch._export.serde.serialize import _SYM_OPS

    sym_ops = {f"{getattr(f, '__module__', '')}.{getattr(f, '__name__', '')}" for f in _SYM_OPS}
    sym_ops.add("torch.ops.aten.item.default")
    if doc.get("guards_code"):
        raise _Pt2Refused("it carries guards_code (Python source torch would exec); export with static shapes")
    ident = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
    sympy_names = {"Max", "Min", "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
                   "True", "False", "oo", "Abs", "sqrt", "Integer", "Rational", "Mod", "FloorDiv", "CeilDiv",
                   "ModularIndexing", "CleanDiv", "PythonMod", "Where", "ToFloat", "TruncToInt", "TruncToFloat",
                   "FloorToInt", "CeilToInt", "RoundToInt", "RoundDecimal", "IntTrueDiv", "FloatTrueDiv",
                   "PowByNatural", "FloatPow", "Identity", "LShift", "RShift", "Symbol", "Float",
                   "Add", "Mul", "Pow", "positive", "negative", "nonnegative", "nonpositive", "integer",
                   "real", "finite", "zero", "nonzero", "even", "odd"}

    def check_expr(text: str) -> None:
        # torch writes sympy's srepr, e.g. "Symbol('s31', positive=True, integer=True)", or str forms
        # like "2*s0 + 1": names of symbols in quotes, sympy functions, assumption keywords, numbers.
        # No attribute access, no other names, no other strings: nothing for eval to reach.
        bare = re.sub(r"'[a-z]+[0-9]+'", "s0", text) if isinstance(text, str) else ""
        if (not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_+\-*/%(),. <>=!]*", bare)
                or re.search(r"[A-Za-z_)\]]\s*\.", bare)
                or any(not (w in sympy_names or re.fullmatch(r"[a-z]+[0-9]+", w)) for w in ident.findall(bare))):
            raise _Pt2Refused(f"symbolic expression {str(text)[:60]!r} is not one torch writes (sympy would eval it)")

    def check_target(target: Any) -> None:
        if not isinstance(target, str):
            raise _Pt2Refused(f"node target {target!r} is not an operator name")
        if target in sym_ops:
            return
        parts = target.split(".")
        if (len(parts) not in (4, 5) or parts[:2] != ["torch", "ops"]
                or any(not ident.fullmatch(p) or p.startswith("__") for p in parts[2:])
                or (parts[2] == "higher_order" and parts[3] not in _PT2_SAFE_HOP)):
            raise _Pt2Refused(f"node target {target[:80]!r} is not a torch operator")
        import torch

        op: Any = torch.ops
        for p in parts[2:]:
            op = getattr(op, p, None)
            if op is None:
                raise _Pt2Refused(f"node target {target!r} is not a registered torch operator")
        if not isinstance(op, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
            raise _Pt2Refused(f"node target {target!r} is not a torch operator overload")

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "target" and (isinstance(v, str) or "inputs" in x):
                    check_target(v)
                elif k == "expr_str":
                    check_expr(v)
                elif k == "as_string" and not (isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.\-]*", v)):
                    raise _Pt2Refused(f"string argument {str(v)[:60]!r} is not one edgeconv accepts")
                elif k == "as_strings" and any(not (isinstance(s, str) and re.fullmatch(r"[A-Za-z0-9_.\-]*", s))
                                               for s in (v or [])):
                    raise _Pt2Refused("a string-list argument holds characters edgeconv does not accept")
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc.get("graph_module", {}))
    for name in doc.get("range_constraints", {}) or {}:
        check_expr(name)


def _deserialize_pt2(data: bytes, model_json: dict, sample: bytes) -> Any:
    """torch's own deserializer on the checked bytes: weights and constants from raw records (the
    configs were checked to hold no pickles), example inputs through the weights-only unpickler."""
    import io
    import json

    import torch
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass
    from torch.export.pt2_archive._package import PT2ArchiveReader, _load_constants, _load_state_dict

    example: Any = None
    if sample:
        try:
            example = torch.load(io.BytesIO(sample), map_location="cpu", weights_only=True)
        except Exception as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
            raise _Pt2Refused(f"its example inputs are not plain tensors (the weights-only unpickler refused "
                              f"them: {why})") from None
        if not isinstance(example, tuple):
            raise _Pt2Refused(f"its example inputs are a {type(example).__name__}, not an (args, kwargs) tuple")
    with PT2ArchiveReader(io.BytesIO(data)) as reader:
        state_dict = _load_state_dict(reader, "model")
        constants = _load_constants(reader, "model")
    if not isinstance(state_dict, dict) or not isinstance(constants, dict):  # legacy pickled records
        raise _Pt2Refused("its weights are stored as a pickle")
    serialized = _bytes_to_dataclass(schema.ExportedProgram, json.dumps(model_json).encode())
    return ExportedProgramDeserializer(None).deserialize(serialized, state_dict, constants, example)
