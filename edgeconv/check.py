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
    # what the int8 simulation was built from: "edgeconv's calibration", or — for a file whose
    # activation grids are mostly not edgeconv's (quantized elsewhere) — "the file's own scales"
    simulation: str = ""

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


def listed(path: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(manifest, its entry) when the folder beside `path` holds a manifest that lists it."""
    from edgeconv.pipeline import MANIFEST

    if not (path.parent / MANIFEST).is_file():
        return None
    manifest = manifest_of(path.parent)
    entry = next((a for a in manifest.get("artifacts", ()) if a.get("path") == path.name), None)
    return (manifest, entry) if entry is not None else None


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
    from edgeconv.verify import ProgramRuns, isolation_samples, verify

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
        scales, match, foreign = _scales(target, path, graph)
        simulation = "edgeconv's calibration" if target.quantized else ""
        if foreign:
            x = evalset.take(0, isolation_samples(runs.folded(graph))).batch
            graph, simulation = _file_simulation(target, path, graph, x)
        verdict = verify(target, path, graph, ctx, evalset, ref_fp32, runs)
        out.append(Checked(name, str(path), file_sha256(path), recorded, scales, match, verdict.report, simulation))
    return CheckReport(spec.name, options.to_dict(), tuple(out))


# A file whose activation grids are mostly not edgeconv's was quantized elsewhere (another tool, other
# calibration data): it is judged against a simulation at its own grids. Below this share of equal
# activation scales; a hand edit of a few scales in edgeconv's file stays judged against edgeconv's.
FOREIGN_MAX_SHARE = 0.5


def _scales(target: "Target", path: Path, graph: Any) -> tuple[str, bool | None, bool]:
    """The file's weight and activation scales against the rebuilt program's, read back: (what was
    found, whether all are equal, whether the file was quantized elsewhere)."""
    import numpy as np

    from edgeconv.exporters.base import scales_matched

    if not target.quantized:
        return "float target: no scales", None, False
    weights = [np.asarray(s) for _, s in target.format.read_weights(path) if s is not None]
    acts = target.format.activation_scales(path)
    w_ok, a_ok = scales_matched(weights, acts, graph)
    match = w_ok == len(weights) and a_ok == len(acts)
    foreign = bool(acts) and a_ok < FOREIGN_MAX_SHARE * len(acts)
    text = (f"{w_ok}/{len(weights)} weight scale vectors and {a_ok}/{len(acts)} activation scales equal the "
            "rebuilt calibration's")
    if foreign:
        text += "; the file was quantized elsewhere, so the simulation is rebuilt at the file's own scales"
    elif not match:
        text += ("; the file carries other scales at some tensors, each a finding where it occurs "
                 "(edited, or re-quantized in part)")
    return text, match, foreign


def _file_simulation(target: "Target", path: Path, graph: Any, x: Any) -> tuple[Any, str]:
    """edgeconv's program at the grids the file carries (`quant.rebase`), and how it was built."""
    from edgeconv.quant.rebase import rebase

    try:
        rebased = rebase(graph, target.format.int8_tensors(path, x), target.format.read_weights(path), x)
    except Exception as e:  # any failure is said, and the file is judged against edgeconv's own grids
        first = (str(e).strip().splitlines() or [""])[0][:160]
        return graph, (f"edgeconv's calibration: the simulation at the file's own scales could not be built "
                       f"({type(e).__name__}: {first}), so every grid that differs is a finding")
    return rebased.graph, rebased.summary()
