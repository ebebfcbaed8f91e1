"""Error types and their exit codes.

A UserError is bad input the user can fix: the CLI prints its one-line message (no traceback)
and exits 2. ParityFailure is a produced artifact that does not match the reference: exit 1.
"""
from __future__ import annotations


class EdgeconvError(Exception):
    exit_code = 3


class UserError(EdgeconvError):
    """Bad input: one line that names the thing and the fix."""

    exit_code = 2


class ParityFailure(EdgeconvError):
    exit_code = 1


def missing_extra(package: str, extra: str) -> UserError:
    return UserError(f"{package} is not installed; install it with: pip install 'edgeconv[{extra}]'")
