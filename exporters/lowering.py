"""Turn a converter's failure into one line that names the op and the target (every format's
exporter lowers inside `lowering_errors`)."""
from __future__ import annotations

import contextlib
from typing import Iterator

from edgeconv.errors import UserError, ops_named


@contextlib.contextmanager
def lowering_errors(target: str) -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # converters raise anything from ValueError to their own types
        text = f"{type(e).__name__}: {e}"
        ops = ops_named(text)
        what = f"op {', '.join(ops[:3])}" if ops else text.strip().splitlines()[0][:200]
        raise UserError(f"{target}: the converter cannot lower {what}; replace that op in the model "
                        f"or choose another target") from None
