"""Which nodes ai-edge-litert's default XNNPACK delegate actually took, on this host: the TFLite
format reads it from the interpreter (`Format.delegated_nodes`: each DELEGATE node's boundary walked
back to the nodes it replaced); here it becomes a Verdict beside the table's prediction. Each node is
claimed at most once; a double claim or a DELEGATE node reaching nothing is a note, not hidden."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeconv.opview import OpView

if TYPE_CHECKING:
    from edgeconv.devices.delegates.rules import Verdict


def xnnpack_measured(path: Path | str, ops: tuple[OpView, ...]) -> "Verdict":
    from edgeconv.devices.delegates.rules import Fallback, Verdict, partition
    from edgeconv.exporters.formats import format_for

    owner, notes = format_for(Path(path)).delegated_nodes(Path(path))
    if owner and max(owner) >= len(ops):
        notes.append(f"the interpreter lists nodes beyond the file's {len(ops)}")
    delegated = tuple(sorted(owner))
    parts = [tuple(sorted(n for n, k in owner.items() if k == j)) for j in sorted(set(owner.values()))]
    parts = [p for p in parts if p]
    by_index = {op.index: op for op in ops}
    fallbacks = tuple(Fallback(by_index[i].op, i, by_index[i].label(), "xnnpack.measured-not-delegated",
                               "the interpreter kept this node on its builtin kernel", "",
                               "measured: ai-edge-litert Interpreter after allocate_tensors(), DELEGATE node boundaries")
                      for i in sorted(set(by_index) - set(delegated)))
    # Cross-check the count the runtime made against the partitioning rule applied to its own choice.
    if len(partition(ops, set(delegated))) != len(parts):
        notes.append(f"graph_info partitioning of the measured set gives {len(partition(ops, set(delegated)))} "
                     f"partition(s), the runtime made {len(parts)}")
    return Verdict("xnnpack", Path(path).name, "measured", len(ops), delegated, tuple(sorted(parts)), fallbacks,
                   None, tuple(notes))

