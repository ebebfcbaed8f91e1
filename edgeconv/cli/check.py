"""`edgeconv check`: the export verdict on artifacts that already exist."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

from edgeconv.cli.options import model_options, progress, quant_and_calib, quant_options

if TYPE_CHECKING:
    pass


@click.command("check")
@click.argument("path", type=click.Path(exists=False, dir_okay=True, file_okay=True))
@model_options
@click.option("--target", "-t", default=None, metavar="NAME",
              help="The target that wrote the artifact (default: the manifest's, else read from the file).")
@quant_options
@click.option("--eval-samples", default=256, show_default=True, type=click.IntRange(1))
@click.option("--min-cosine", type=click.FloatRange(-1, 1), default=None, metavar="C",
              help="Lower (or raise) the cosine floor vs torch fp32 explicitly.")
@click.option("--min-top1", type=click.FloatRange(0, 1), default=None, metavar="A",
              help="Lower (or raise) the decisive top-1 agreement floor vs torch fp32 explicitly.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_cmd(path: str, **kw) -> None:
    """Re-verify artifacts: PATH is an export folder (every artifact its edgeconv.json lists, with its
    options and model) or one artifact file (its folder's manifest if it lists it; else give --model
    and the export flags it was made with). Exit 0: all pass; 1: a verdict failed; 2: bad input."""
    import dataclasses
    from pathlib import Path

    from edgeconv.check import check, infer_target, manifest_of, options_of, spec_of
    from edgeconv.check import listed as listed_in_manifest
    from edgeconv.cli.options import load_spec
    from edgeconv.config import ExportOptions
    from edgeconv.errors import ParityFailure, UserError
    from edgeconv.pipeline import MANIFEST

    as_json, target = kw.pop("as_json"), kw.pop("target")
    floors = {"min_cosine": kw.pop("min_cosine"), "min_top1": kw.pop("min_top1")}
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path} does not exist: give an export folder or an artifact file")
    from edgeconv.exporters.formats import find_format

    if p.is_dir() and not (p / MANIFEST).is_file() and find_format(p) is None:
        raise UserError(f"{p} has no {MANIFEST}: give the folder edgeconv export wrote, or one artifact file")
    given = load_spec(kw) if kw["model_ref"] else None
    if p.is_dir() and (p / MANIFEST).is_file():
        manifest = manifest_of(p)
        # a target export could not produce (its `failure` line) has no file to check
        entries = [(p / a["path"], a["target"], a.get("sha256")) for a in manifest["artifacts"] if a.get("path")]
        if not entries:
            raise UserError(f"{p / MANIFEST} lists no exported artifact")
        options, spec = options_of(manifest, p), spec_of(manifest, given)
    else:
        listed = listed_in_manifest(p)
        if listed is not None:
            manifest, entry = listed
            entries = [(p, target or entry["target"], entry.get("sha256"))]
            options, spec = options_of(manifest, p.parent), spec_of(manifest, given)
        else:
            if given is None:
                raise UserError(f"{p.name} is not listed in a manifest beside it: give the model it came from "
                                "with --model (and the export flags it was made with)")
            entries = [(p, target or infer_target(p), None)]
            options = ExportOptions(**quant_and_calib(kw), eval_samples=kw.pop("eval_samples"), out_dir=str(p.parent))
            spec = given
    options = dataclasses.replace(options, **{k: v for k, v in floors.items() if v is not None})
    report = check(entries, spec, options, progress(as_json))
    if as_json:
        click.echo(report.to_json())
    else:
        _print(report)
    failed = [c.target for c in report.checked if not c.passed]
    if failed:
        raise ParityFailure(f"check failed for {', '.join(failed)}")


def _print(report) -> None:
    for c in report.checked:
        p = c.parity
        head = "PASS" if c.passed else "FAIL"
        if c.changed:
            bytes_ = f"CHANGED since export (sha256 {c.sha256[:12]}, manifest {c.manifest_sha256[:12]})"
        else:
            bytes_ = "same bytes as exported" if c.manifest_sha256 else f"sha256 {c.sha256[:12]}"
        click.echo(f"{head} {c.target} {c.path} — {bytes_}; in {p.runtime}")
        for d in p.diffs:
            click.echo(f"    vs {d.reference}: {'ok' if d.passed else 'FAILED ' + d.reason}")
            if d.warning:
                click.echo(f"    WARNING vs {d.reference}: {d.warning}")
        if p.host_kernels is not None and p.host_kernels.deviates:
            click.echo(f"    WARNING host kernels: {p.host_kernels.message}")
        if p.layers is not None:
            lay = p.layers
            line = (f"    each int8 layer in isolation: {lay.layers} layers, worst {lay.worst_steps:g} steps at "
                    f"{lay.worst_layer}" + ("" if lay.passed else f" — FAILED: {'; '.join(lay.over[:3])}"))
            click.echo(line)
            if lay.unmatched:
                click.echo(f"    unverified in isolation: {lay.unmatched}: " + "; ".join(lay.excluded[:3]))
            if lay.within:
                click.echo(f"    judged within larger ops: {len(lay.within)} tensors the file computes inside one op "
                           "(checked at the tensors they feed): " + "; ".join(lay.within[:2]))
        click.echo(f"    scales: {c.scales}")
        if c.simulation:
            click.echo(f"    int8 simulation: {c.simulation}")


commands = [check_cmd]
