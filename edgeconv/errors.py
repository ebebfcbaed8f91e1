"""Error types and their exit codes.

A UserError is bad input the user can fix: the CLI prints its one-line message (no traceback)
and exits 2. ParityFailure is a produced artifact that does not match the reference: exit 1.
"""
from __future__ import annotations

import contextlib
import os
import re
import traceback
from collections.abc import Iterator


class EdgeconvError(Exception):
    exit_code = 3


class UserError(EdgeconvError):
    """Bad input: one line that names the thing and the fix."""

    exit_code = 2


class ParityFailure(EdgeconvError):
    exit_code = 1


def missing_extra(package: str, extra: str) -> UserError:
    return UserError(f"{package} is not installed; install it with: pip install 'edgeconv[{extra}]'")


class StageFailure(EdgeconvError):
    """A valid model that edgeconv could not take through one stage of export (capture, a pass, a
    converter, a runtime, the parity run): one line naming the stage, the target and the op,
    exit 1. The pipeline still writes the manifest, with that target recorded as failed."""

    exit_code = 1

    def __init__(self, stage: str, detail: str, target: str = "") -> None:
        self.stage, self.detail, self.target = stage, detail, target
        super().__init__(f"{stage}{f' ({target})' if target else ''} failed: {detail}")

    manifest: object = None  # the manifest export wrote before raising (edgeconv.results.Manifest)

    @classmethod
    def from_line(cls, line: str) -> StageFailure:
        """One that prints exactly `line` (already formatted by an earlier StageFailure)."""
        e = cls("", "")
        e.args = (line,)
        return e

    def for_target(self, target: str) -> StageFailure:
        return self if self.target else StageFailure(self.stage, self.detail, target)


# An op as torch, a converter or an FX program's generated code names it.
_OP = re.compile(r"(aten[._:]+[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?|torch\.ops\.[\w.]+)")


def ops_named(text: str) -> list[str]:
    return sorted(set(_OP.findall(text)))


def failure_line(e: BaseException) -> str:
    """`Type: first line of the message`, then the op it failed at: the innermost traceback line
    that calls one (an FX program's generated code keeps its source in linecache, so a failure
    while running a captured program names its aten op), else an op the message names, else the
    innermost frame outside the standard library."""
    msg = (str(e).strip().splitlines() or [""])[0][:300]
    if isinstance(e, EdgeconvError):  # edgeconv's own line already names the thing (e.g. the op)
        return msg
    head = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    frames = traceback.extract_tb(e.__traceback__)
    for f in reversed(frames):
        found = ops_named(f.line or "")
        if found:
            return f"{head} [at op {found[0]}]"
    found = ops_named(str(e))
    if found:
        return f"{head} [op {', '.join(found[:3])}]"
    lib = os.path.dirname(os.__file__)
    outside = [f for f in frames if not f.filename.startswith(lib)]
    if outside:
        f = outside[-1]
        return f"{head} [in {f.name}, {os.path.basename(f.filename)}:{f.lineno}]"
    return head


@contextlib.contextmanager
def in_stage(stage: str, target: str = "", keep: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Whatever the stage raises becomes a StageFailure naming it; `keep` lists error types that
    pass through unchanged (e.g. UserError where the stage reads user input)."""
    try:
        yield
    except StageFailure as e:
        raise e.for_target(target) from None
    except keep:
        raise
    except Exception as e:
        raise StageFailure(stage, failure_line(e), target) from None
