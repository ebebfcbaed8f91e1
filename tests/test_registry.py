"""Every registered pass, target and device has a test that names it; the registry rules hold."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeconv import registrations
from edgeconv.errors import UserError
from edgeconv.registry import DEVICES, PASSES, TARGETS, Registry

registrations.load()
TESTS = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_registry.py")


@pytest.mark.parametrize("name", PASSES.names())
def test_every_pass_is_tested(name):
    assert f'"{name}"' in TESTS, f"pass {name} has no test naming it"


@pytest.mark.parametrize("name", TARGETS.names())
def test_every_target_is_tested(name):
    assert f'"{name}"' in TESTS, f"target {name} has no test naming it"
    t = TARGETS.get(name)
    assert t.name == name and t.suffix.startswith(".") and t.passes and t.runtime
    assert all(p in PASSES for p in t.passes), t.passes
    assert ("quantize" in t.passes) == t.quantized


@pytest.mark.parametrize("name", sorted({d.name for _, d in DEVICES.items()}))
def test_every_device_is_tested(name):
    assert f'"{name}"' in TESTS, f"device {name} has no test naming it"


def test_unknown_name_lists_the_choices():
    r: Registry = Registry("widget")
    r.add("a-b", 1)
    with pytest.raises(UserError, match=r"unknown widget 'c'; choose one of: a-b"):
        r.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        r.add("a-b", 2)


def test_every_pass_declares_the_options_it_reads():
    """`@reads(...)` on each pass matches the `ctx.options.X` its module's code reads."""
    import inspect
    import re

    from edgeconv.registry import PASSES

    for name, fn in PASSES.items():
        declared = set(getattr(fn, "reads", ("<missing>",)))
        assert "<missing>" not in declared, f"pass {name} has no @reads(...)"
        src = inspect.getsource(inspect.getmodule(fn))
        used = set(re.findall(r"ctx\.options\.([a-z_]+(?:\.[a-z_]+)?)", src))
        # `opts = ctx.options.quant` then opts.samples: a section read counts as reading its declared fields
        missing = {u for u in used if not any(d == u or d.startswith(u + ".") for d in declared)}
        assert not missing, f"pass {name} reads {sorted(missing)} without declaring them in @reads"


def test_every_pipeline_step_declares_the_options_it_reads():
    """The pipeline's steps (prepare, QAT, the work before quantize) declare their options like
    passes do: each `options.X` their code reads — or a private helper they call reads — is declared."""
    import inspect
    import re

    from edgeconv import pipeline

    found: set[str] = set()
    for name, fn in pipeline.STEPS.items():
        declared = set(getattr(fn, "reads", ("<missing>",)))
        assert "<missing>" not in declared, f"step {name} has no @reads(...)"
        src = inspect.getsource(fn)
        helpers = set(re.findall(r"\b(_[a-z]\w*)\(", src))
        src += "".join(inspect.getsource(getattr(pipeline, h)) for h in helpers if hasattr(pipeline, h))
        used = set(re.findall(r"options\.([a-z_]+(?:\.[a-z_]+)?)", src))
        missing = {u for u in used if not any(d == u or d.startswith(u + ".") for d in declared)}
        assert not missing, f"step {name} reads {sorted(missing)} without declaring them in @reads"
        found.update(used)
    assert found, "the check found no option reads in any step (the pattern is stale)"
