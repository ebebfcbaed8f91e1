"""Fit and hold out the partition-aware part of the cost model on qai-hub-models' published runs.

    pip install --no-deps qai-hub-models==0.65.0 && pip install pyyaml scipy   # as bench/fit_costmodel.py
    python bench/fit_partitions.py

Every published TFLite run whose primary unit is the NPU and whose net also has, on the same device
and precision, a QNN (qnn_dlc) run with every layer on the NPU. That twin stands for "the net run
whole on this NPU" (on nets TFLite runs whole too, the two differ by a median 3 %): the roofline
has no op list for most of these nets (detectors, video, transformers), so the NPU part is taken
from the measurement rather than predicted. Layers the perf.yaml puts on the GPU count as off the
NPU with those on the CPU.

  before  = twin                                      (partition-unaware: all of it on the NPU)
  after   = devices/costmodel/partitions.py published_ms (CPU layers at ρ × their NPU share, τ per hand-off)

Held out: every third net (sorted by name, starting with the second) among the partitioned ones,
fixed by that rule before any fit; the whole nets are split the same way. The hand-off rule
(K_RULES) is chosen by fit-set error only.

Writes devices/costmodel/partitions.json (the constants predict() uses) and
bench/results/costmodel_partitions.json (held-out error split whole / partitioned, before / after,
every prediction).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeconv.devices.costmodel import fit as F
from edgeconv.devices.costmodel import partitions as P

from bench.fit_costmodel import perf_root
from edgeconv.results import atomic_write

SOURCE = "qai-hub-models==0.65.0 models/<id>/perf.yaml: runtime tflite (primary unit NPU) vs qnn_dlc (all layers NPU)"
AS_RUN = {"float": "fp16", "w8a8": "int8"}


def extract(root: Path) -> list[dict]:
    import yaml

    out = []
    for f in sorted(root.glob("*/perf.yaml")):
        doc = yaml.safe_load(f.read_text())
        for prec, pv in (doc.get("precisions") or {}).items():
            if prec not in AS_RUN:
                continue
            for comp_name, comp in pv.get("components", {}).items():
                for device, runtimes in (comp.get("performance_metrics") or {}).items():
                    t, q = (runtimes or {}).get("tflite"), (runtimes or {}).get("qnn_dlc")
                    if not (isinstance(t, dict) and isinstance(q, dict)):
                        continue
                    tc, qc = t.get("layer_counts") or {}, q.get("layer_counts") or {}
                    if (t.get("primary_compute_unit") != "NPU" or t.get("inference_time_milliseconds") is None
                            or q.get("inference_time_milliseconds") is None or not tc.get("total")
                            or qc.get("npu", 0) != qc.get("total", -1)):
                        continue
                    off = int(tc.get("cpu", 0)) + int(tc.get("gpu", 0))
                    out.append({"model": f.parent.name, "component": comp_name, "device": device,
                                "precision": AS_RUN[prec], "npu": int(tc.get("npu", 0)), "off": off,
                                "cpu": int(tc.get("cpu", 0)), "gpu": int(tc.get("gpu", 0)),
                                "ms": float(t["inference_time_milliseconds"]),
                                "whole_ms": float(q["inference_time_milliseconds"]),
                                "job_id": str(t.get("job_id", "")), "twin_job_id": str(q.get("job_id", ""))})
    return out


def held_out(names: list[str]) -> set[str]:
    return {n for i, n in enumerate(sorted(names)) if i % 3 == 1}


def main() -> None:
    t0 = time.perf_counter()
    rows = extract(perf_root())
    part_models = sorted({r["model"] for r in rows if r["off"]})
    whole_models = sorted({r["model"] for r in rows if not r["off"]} - set(part_models))
    ho = held_out(part_models) | held_out(whole_models)
    fit_rows = [r for r in rows if r["off"] and r["model"] not in ho]
    cands = {}
    for rule in P.K_RULES:
        c = P.fit(fit_rows, rule)
        errs = [F.ape(P.published_ms(r["whole_ms"], r["npu"], r["off"], r["precision"], c), r["ms"]) for r in fit_rows]
        cands[rule] = (F.summarize(errs)["median_ape"], c)
    rule = min(cands, key=lambda k: cands[k][0])
    c = cands[rule][1]
    preds = []
    for r in rows:
        after = P.published_ms(r["whole_ms"], r["npu"], r["off"], r["precision"], c)
        preds.append({**r, "split": "held_out" if r["model"] in ho else "fit",
                      "kind": "partitioned" if r["off"] else "whole",
                      "before_ms": r["whole_ms"], "after_ms": round(after, 4),
                      "ape_before": F.ape(r["whole_ms"], r["ms"]), "ape_after": F.ape(after, r["ms"])})

    def table(split: str) -> dict:
        out = {}
        for kind in ("whole", "partitioned"):
            sel = [p for p in preds if p["split"] == split and p["kind"] == kind]
            out[kind] = {"nets": len({p["model"] for p in sel}),
                         "before": F.summarize([p["ape_before"] for p in sel]),
                         "after": F.summarize([p["ape_after"] for p in sel])}
        return out

    per_net = defaultdict(list)
    for p in preds:
        if p["kind"] == "partitioned" and p["split"] == "held_out":
            per_net[p["model"]].append(p)
    held_nets = {m: {"off_npu_layers": sorted({p["off"] for p in ps}), "runs": len(ps),
                     "median_ape_before": F.summarize([p["ape_before"] for p in ps])["median_ape"],
                     "median_ape_after": F.summarize([p["ape_after"] for p in ps])["median_ape"]}
                 for m, ps in sorted(per_net.items())}
    consts = {"rho": c.rho, "handoff_s": c.handoff_s, "k_rule": rule}
    result = {"source": SOURCE, "constants": consts,
              "k_rule_fit_median_ape": {k: v[0] for k, v in cands.items()},
              "held_out_models": sorted(ho & set(part_models)), "held_out_whole_models": len(ho & set(whole_models)),
              "fit": {"models": sorted(set(part_models) - ho), "measurements": len(fit_rows)},
              "held_out": table("held_out"), "fit_set": table("fit"), "held_out_partitioned_by_net": held_nets}
    atomic_write(ROOT / "devices/costmodel/partitions.json",
                 json.dumps({k: result[k] for k in ("source", "constants", "held_out_models", "fit", "held_out")},
                            indent=1))
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    atomic_write(ROOT / "bench/results/costmodel_partitions.json",
                 json.dumps({**result, "command": "python bench/fit_partitions.py",
                             "seconds": round(time.perf_counter() - t0, 1),
                             # whole runs are summarised above (before = after for them); partitioned ones in full
                             "predictions": [p for p in preds if p["kind"] == "partitioned"]}, indent=1))
    for name in ("devices/costmodel/partitions.json", "bench/results/costmodel_partitions.json"):
        os.chmod(ROOT / name, 0o644)
    print(f"rho fp16 {c.rho['fp16']:.3g}, int8 {c.rho['int8']:.3g}; {1e3 * c.handoff_s:.3g} ms per hand-off; "
          f"rule {rule} (fit medians {', '.join(f'{k} {v[0]:.1f} %' for k, v in cands.items())})")
    for split in ("held_out", "fit_set"):
        for kind, t in result[split].items():
            print(f"{split} {kind}: {t['nets']} nets, n={t['after']['n']}: median APE before {t['before']['median_ape']:.1f} % "
                  f"-> after {t['after']['median_ape']:.1f} % (p90 {t['before']['p90_ape']:.0f} -> {t['after']['p90_ape']:.0f} %)")


if __name__ == "__main__":
    main()
