"""The `edgeconv` command line. Exit codes: 0 ok, 1 parity or gate failed, 2 user error.

Only click and the standard library are imported here so `edgeconv --help` stays fast; every
command imports what it needs when it runs.
"""
from __future__ import annotations

import importlib
import sys

import click

from edgeconv import __version__

# Modules that contribute commands: each defines `commands`, a list of click.Command.
COMMAND_MODULES: tuple[str, ...] = (
    "edgeconv.cli_export",
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeconv")
def main() -> None:
    """Export, verify and measure PyTorch conv nets for phones and boards."""


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).commands:
        main.add_command(_cmd)
