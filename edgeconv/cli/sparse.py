"""`edgeconv check-sparse`: will XNNPACK run this model or artifact on its sparse path?"""
from __future__ import annotations

import json

import click


def _sparsity(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Validated before anything heavy is imported or loaded: (0, 1) exclusive."""
    if value is None:
        return None
    from edgeconv.passes.sparsify import check_sparsity

    return check_sparsity(value)


@click.command("check-sparse")
@click.argument("model_or_artifact", metavar="MODEL_OR_ARTIFACT")
@click.option("--sparsity", type=float, default=None, callback=_sparsity, metavar="S",
              help="Prune a model's 1x1 convs to this fraction (4x1 blocks) before checking, e.g. 0.9.")
@click.option("--input-shape", default=None, metavar="1,3,H,W", help="Example input shape for a model factory.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_sparse_cmd(model_or_artifact: str, sparsity: float | None, input_shape: str | None, as_json: bool) -> None:
    """Say whether XNNPACK's sparse inference applies, and which condition fails where.

    MODEL_OR_ARTIFACT is a .tflite file, a .pt2 file, or package.module:factory. Exit 0 when
    eligible, 1 when not, 2 on bad input.
    """
    import sys

    from edgeconv.sparse_check import check_path

    shape = None
    if input_shape:
        from edgeconv.models import parse_shape

        shape = parse_shape(input_shape)
    report = check_path(model_or_artifact, sparsity, shape)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo("\n".join(report.lines()))
    sys.exit(0 if report.eligible else 1)


commands = [check_sparse_cmd]
