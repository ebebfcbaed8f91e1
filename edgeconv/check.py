"""`edgeconv check`: the verdict export gives, on artifact files that already exist.

A user who edits, re-quantizes or receives an artifact, or a CI job that verifies a file built
elsewhere, gets the same parity export runs: the torch programs are rebuilt from the model and the
options (the manifest's, or the command line's) exactly as export built them — same data split,
same calibration — and each file runs in its runtime against them, every int8 layer in isolation.
A file whose bytes differ from the manifest's is re-verified like any other, and the difference is
reported, never taken as a verdict by itself. The file's scales are read back and compared with the
rebuilt calibration's: a file that carries other scales is judged against a simulation that is not
its own, and the check says so.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeconv.errors import UserError
from edgeconv.results import ParityReport, Record

if TYPE_CHECKING:
    from edgeconv.config import ExportOptions
    from edgeconv.context import Progress
    from edgeconv.exporters.base import Target
    from edgeconv.models import ModelSpec


@dataclasses.dataclass(frozen=True)
class Checked(Record):
    target: str
    path: str
    sha256: str
    manifest_sha256: str | None  # what the manifest recorded (None: no manifest entry)
    scales: str  # the file's scales against the rebuilt calibration's, read back
    scales_match: bool | None  # None: a float target (no scales to compare)
    parity: "ParityReport"

    @property
    def passed(self) -> bool:
        return self.parity.passed

    @property
    def changed(self) -> bool:
        return self.manifest_sha256 is not None and self.manifest_sha256 != self.sha256


@dataclasses.dataclass(frozen=True)
class CheckReport(Record):
    model: str
    options: dict[str, Any]
    checked: tuple[Checked, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checked)


def manifest_of(out_dir: Path) -> dict[str, Any]:
    from edgeconv.pipeline import MANIFEST

    path = out_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"{out_dir} has no {MANIFEST}; give the folder edgeconv export wrote, or an artifact "
                        "with --model")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable manifest ({type(e).__name__}); re-export, or check the "
                        "artifact with --model") from None


def options_of(manifest: dict[str, Any], out_dir: Path) -> "ExportOptions":
    from edgeconv.config import ExportOptions

    try:
        opts = ExportOptions.from_dict(manifest["options"])
    except Exception as e:  # a manifest from another version, or edited by hand
        raise UserError(f"the options in {out_dir}'s manifest cannot be read ({type(e).__name__}: {e}); "
                        "check the artifact with --model and the export flags instead") from None
    return dataclasses.replace(opts, out_dir=str(out_dir))


def spec_of(manifest: dict[str, Any], given: "ModelSpec | None") -> "ModelSpec":
    """The model: the one given on the command line, else the manifest's `model_ref`."""
    from edgeconv.models import load_model

    if given is not None:
        return given
    ref = manifest.get("model_ref")
    if not ref:
        raise UserError(f"the manifest does not say how to load {manifest.get('model', 'the model')} (it was "
                        "exported from code); give it with --model package.module:factory")
    spec = load_model(ref["model"], ref.get("weights") or None, tuple(ref["input_shape"]))
    if manifest.get("model_sha256") and spec.sha256 and spec.sha256 != manifest["model_sha256"]:
        raise UserError(f"{ref['model']} now loads a model whose weights differ from the exported one "
                        f"(sha256 {spec.sha256[:12]} vs {manifest['model_sha256'][:12]}); check with --model "
                        "and --weights naming the model the artifacts came from")
    return spec


def infer_target(path: Path) -> str:
    """The target that writes files like `path`: its format, and whether the file stores int8."""
    from edgeconv.exporters.formats import format_for

    fmt = format_for(path)
    fmt.check(path)
    weights = fmt.read_weights(path)
    int8 = any(w.dtype in ("int8", "uint8") for w, _ in weights)
    if fmt.name == "tflite":
        return "tflite-int8" if int8 else "tflite"
    if fmt.name == "onnx":
        if not int8:
            return "onnx"
        return "onnx-int8-u8" if any(w.dtype == "uint8" for w, _ in weights) else "onnx-int8"
    if fmt.name == "coreml":
        if fmt.activation_scales(path):
            return "coreml-w8a8"
        return "coreml-int8" if int8 else "coreml"
    raise UserError(f"{path.name}: say which target wrote it with --target")


def check(artifacts: list[tuple[Path, str, str | None]], spec: "ModelSpec", options: "ExportOptions",
          progress: "Progress") -> CheckReport:
    """Each (file, target name, manifest sha256) re-verified against the programs rebuilt from
    `spec` and `options`."""
    from edgeconv.models import file_sha256
    from edgeconv.pipeline import programs, resolve_targets
    from edgeconv.verify import ProgramRuns, verify

    for path, _, _ in artifacts:
        if not path.exists():
            raise UserError(f"artifact {path} does not exist")
    targets = resolve_targets(tuple(dict.fromkeys(t for _, t, _ in artifacts)))
    by_name = {t.name: t for t in targets}
    options = dataclasses.replace(options, targets=tuple(by_name))
    built = programs(spec, options, targets, progress)
    ctx, cache, evalset, ref_fp32 = built.ctx, built.cache, built.evalset, built.ref_fp32
    runs = ProgramRuns(built.refs_fp32)
    out = []
    for path, name, recorded in artifacts:
        target = by_name[name]
        target.format.check(path)
        graph = cache.get(target.passes)
        scales, match = _scales(target, path, graph)
        verdict = verify(target, path, graph, ctx, evalset, ref_fp32, runs)
        out.append(Checked(name, str(path), file_sha256(path), recorded, scales, match, verdict.report))
    return CheckReport(spec.name, options.to_dict(), tuple(out))


def _scales(target: "Target", path: Path, graph: Any) -> tuple[str, bool | None]:
    """The file's weight and activation scales against the rebuilt program's, read back."""
    import numpy as np

    from edgeconv.exporters.base import scales_matched

    if not target.quantized:
        return "float target: no scales", None
    weights = [np.asarray(s) for _, s in target.format.read_weights(path) if s is not None]
    acts = target.format.activation_scales(path)
    w_ok, a_ok = scales_matched(weights, acts, graph)
    match = w_ok == len(weights) and a_ok == len(acts)
    text = (f"{w_ok}/{len(weights)} weight scale vectors and {a_ok}/{len(acts)} activation scales equal the "
            "rebuilt calibration's")
    if not match:
        text += ("; the file carries other scales, so it is judged against a simulation that is not its "
                 "own (re-quantized elsewhere, or edited)")
    return text, match
