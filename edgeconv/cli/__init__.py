"""The `edgeconv` command line. Exit codes: 0 ok, 1 parity or gate failed, 2 user error.

Only click and the standard library are imported here so `edgeconv --help` stays fast; every
command imports what it needs when it runs.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

import click

from edgeconv import __version__

# Modules that contribute commands: each defines `commands`, a list of click.Command.
COMMAND_MODULES: tuple[str, ...] = (
    "edgeconv.cli.export",
    "edgeconv.cli.check",
    "edgeconv.cli.devices",
    "edgeconv.cli.gate",
    "edgeconv.cli.analyze",
    "edgeconv.cli.sparse",
    "edgeconv.cli.report",
    "edgeconv.cli.delegates",
)


class _Group(click.Group):
    """Turns an EdgeconvError into one line on stderr and its exit code, without a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        from edgeconv.errors import EdgeconvError

        try:
            return super().invoke(ctx)
        except EdgeconvError as e:
            click.echo(f"edgeconv: error: {e}", err=True)
            sys.exit(e.exit_code)
        except click.UsageError as e:  # a subcommand's bad option/argument: one line too, exit 2
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            hint = (" (a value that starts with '-' goes after --, e.g. ./-name)"
                    if isinstance(e, click.NoSuchOption) else "")
            msg = " ".join(e.format_message().split()).rstrip(".")
            click.echo(f"edgeconv: error: {msg}{hint}; see '{where} --help'", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeconv")
def main() -> None:
    """Export, verify and measure PyTorch conv nets for phones and boards."""
    _quiet_converters()


def _quiet_converters() -> None:
    """Converters log build chatter (absl/TF info lines, deprecation warnings) that buries the
    report; keep warnings and errors that matter, drop the rest."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|torchao|litert_torch|onnxscript)\b.*")
    import logging

    # torchao logs optional CUDA kernels it cannot load on a CPU machine at WARNING on the root logger.
    logging.getLogger().addFilter(lambda r: "Failed to load" not in r.getMessage())
    for name in ("torch.onnx", "torch._export", "torch.export", "torch.utils._pytree", "absl", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).commands:
        main.add_command(_cmd)
