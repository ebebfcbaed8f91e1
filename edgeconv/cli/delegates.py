"""`edgeconv check-delegate ARTIFACT --delegate NAME`: will this accelerator run the file whole?

Exit 0 when every op runs on the delegate, 1 when some stay on the CPU, 2 on bad input (missing
file, a format the delegate does not read, an unknown delegate).
"""
from __future__ import annotations

import json
import sys

import click

from edgeconv.devices.delegates import OLD_NAMES, names


@click.command("check-delegate")
@click.argument("artifact", metavar="ARTIFACT")
@click.option("--delegate", "-d", required=True, type=click.Choice((*names(), *OLD_NAMES)),
              help="Accelerator whose support table to apply (.tflite: xnnpack, gpu, nnapi, hexagon; "
                   ".onnx: qnn-ep, ONNX Runtime's QNN execution provider (old name qnn); .mlpackage: ane).")
@click.option("--level", type=click.IntRange(1, 8), default=None, metavar="N",
              help="NNAPI feature level of the device (default 4 = Android 11).")
@click.option("--measured", is_flag=True,
              help="xnnpack only: also report what ai-edge-litert's XNNPACK delegate took on this host; "
                   "the exit code then follows the measurement.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict(s) as JSON.")
def check_delegate_cmd(artifact: str, delegate: str, level: int | None, measured: bool, as_json: bool) -> None:
    """Say, per op, whether DELEGATE runs it or which rule (and source) sends it to the CPU, and count
    the partitions the delegate would build."""
    from edgeconv.devices import delegates
    from edgeconv.errors import UserError

    delegate = delegates.resolve(delegate, artifact)
    if measured and delegate != "xnnpack":
        raise UserError(f"--measured works for xnnpack only (the runtime on this host), not {delegate}")
    if level is not None and delegate != "nnapi":
        raise UserError("--level applies to nnapi only")
    verdicts = [delegates.check(artifact, delegate, level)]
    if measured:
        verdicts.append(delegates.measure(artifact, delegate))
    if as_json:
        out = [v.to_dict() for v in verdicts]
        click.echo(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        for v in verdicts:
            click.echo("\n".join(v.lines()))
    sys.exit(0 if verdicts[-1].whole else 1)


commands = [check_delegate_cmd]
