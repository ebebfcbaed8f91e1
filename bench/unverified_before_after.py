"""Before/after: int8 tensors left unverified by per-layer isolation, per zoo family × int8 target,
read from the manifests of two runs of bench/coverage.py (same command, same calibration crops).

    python bench/coverage.py --size small --nets ... --targets onnx-int8,tflite-int8,coreml-w8a8 --work BEFORE
    (change the code)  python bench/coverage.py ... --work AFTER
    python bench/unverified_before_after.py BEFORE AFTER [--out bench/results/isolation-unverified-before-after.json]

Share = unverified / (judged + unverified + covered) per artifact: the same denominator before and
after, so a tensor moved from "unverified" to "judged within a larger op" (covered) shows as a drop.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rows(root: Path) -> dict[str, dict]:
    res = {}
    for m in sorted(root.glob("*/edgeconv.json")):
        fam = m.parent.name.split("-0")[0]
        for a in json.loads(m.read_text())["artifacts"]:
            lay = (a.get("parity") or {}).get("layers")
            if not lay:
                continue
            total = lay["layers"] + lay["unmatched"] + lay.get("covered", 0)
            why = collections.Counter(re.sub(r"^\S+ \([^)]*\): ", "", e) for e in lay["excluded"])
            res[f"{fam} / {a['target']}"] = {
                "int8_tensors": total, "judged": lay["layers"], "unverified": lay["unmatched"],
                "unverified_pct": round(100 * lay["unmatched"] / total, 2) if total else None,
                "covered_views": lay.get("covered", 0) - len(lay.get("within", [])),
                "judged_within_larger_ops": len(lay.get("within", [])),
                "isolation_passed": lay["passed"], "verdict_passed": a["parity"]["passed"],
                "unverified_reasons": dict(why), "unverified_tensors": lay["excluded"],
                "within": lay.get("within", [])}
    return res


def cell(r: dict | None) -> str:
    if r is None:
        return "—"
    within = f" within={r['judged_within_larger_ops']}" if r.get("judged_within_larger_ops") else ""
    return f"{r['unverified']}/{r['int8_tensors']} ({r['unverified_pct']}%){within}" + ("" if r["verdict_passed"] else " FAIL")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "isolation-unverified-before-after.json")
    args = ap.parse_args()
    b, a = rows(args.before), rows(args.after)
    table = {k: {"before": b.get(k), "after": a.get(k)} for k in sorted(set(b) | set(a))}
    doc = {"what": __doc__.split("\n\n")[0], "before": str(args.before), "after": str(args.after),
           "share": "unverified / (judged + unverified + covered), per artifact",
           "max_unverified_pct_before": max((v["before"]["unverified_pct"] for v in table.values() if v["before"]), default=None),
           "max_unverified_pct_after": max((v["after"]["unverified_pct"] for v in table.values() if v["after"]), default=None),
           "table": table}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for k, v in table.items():
        print(f"{k:30s} before {cell(v['before']):28s} after {cell(v['after'])}")


if __name__ == "__main__":
    main()
