"""Turn a converter's failure into one line that names the op and the target (every format's
exporter lowers inside `lowering_errors`)."""
from __future__ import annotations

import contextlib
import re
from typing import Iterator

from edgeconv.errors import UserError

_OP = re.compile(r"(aten[._:]+[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?|torch\.ops\.[\w.]+)")


@contextlib.contextmanager
def lowering_errors(target: str) -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # converters raise anything from ValueError to their own types
        text = f"{type(e).__name__}: {e}"
        ops = sorted(set(_OP.findall(text)))
        what = f"op {', '.join(ops[:3])}" if ops else text.strip().splitlines()[0][:200]
        raise UserError(f"{target}: the converter cannot lower {what}; replace that op in the model "
                        f"or choose another target") from None
