"""Which nodes ai-edge-litert's default XNNPACK delegate actually took, on this host.

The Python interpreter exposes no execution plan. What it does expose, after `allocate_tensors()`,
is the node list with the delegate kernels appended: one `DELEGATE` node per delegated partition,
whose inputs and outputs are the partition's boundary tensors (constants it consumes included).
The original nodes stay listed. A node belongs to a delegate's partition when it lies between that
boundary: walking back from the DELEGATE node's outputs through producers, stopping at its inputs,
reaches exactly the nodes it replaced (in TFLite a partition's inputs are the tensors produced
outside it, so the walk cannot leave the partition). Each node is claimed at most once; any
double claim or a DELEGATE node reaching nothing is reported as a note, not hidden.
The interpreter is built with the default op resolver (AUTO: builtin kernels + XNNPACK applied by
default), single-threaded, exactly as parity runs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeconv.opview import OpView

if TYPE_CHECKING:
    from edgeconv.devices.delegates.rules import Verdict


def xnnpack_measured(path: Path | str, ops: tuple[OpView, ...]) -> "Verdict":
    from ai_edge_litert.interpreter import Interpreter

    from edgeconv.devices.delegates.rules import Fallback, Verdict, partition

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    details = it._get_ops_details()
    originals = [d for d in details if d["op_name"] != "DELEGATE"]
    delegates = [d for d in details if d["op_name"] == "DELEGATE"]
    notes: list[str] = []
    if len(originals) != len(ops):
        notes.append(f"interpreter lists {len(originals)} original nodes, the file {len(ops)}")
    producer = {int(t): d["index"] for d in originals for t in d["outputs"]}
    owner: dict[int, int] = {}
    for k, d in enumerate(delegates):
        stop = {int(t) for t in d["inputs"]}
        frontier = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while frontier:
            t = frontier.pop()
            if t in stop or t not in producer:
                continue
            n = producer[t]
            if n in seen:
                continue
            seen.add(n)
            frontier.extend(int(x) for x in details[n]["inputs"] if int(x) >= 0)
        if not seen:
            notes.append(f"DELEGATE node {d['index']} reaches no original node")
        for n in seen:
            if n in owner:
                notes.append(f"node {n} claimed by two DELEGATE nodes")
            owner[n] = k
    delegated = tuple(sorted(owner))
    parts = [tuple(sorted(n for n, k in owner.items() if k == j)) for j in range(len(delegates))]
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

