"""Fit the roofline cost model to qai-hub-models' published TFLite latencies.

    pip install --no-deps qai-hub-models==0.65.0   # the `fit` extra; its own deps are not needed
    pip install pyyaml==6.0.4 scipy==1.17.1        # if not already there
    python bench/fit_costmodel.py        # writes the three files below

Reads models/<id>/perf.yaml straight from the installed package (never imports it), keeps the
TFLite measurements of the conv nets edgeconv describes in devices/costmodel/zoo.py, fits every
compute unit × precision group with enough models on the fit set, and scores the models in
HELD_OUT — fixed before the first fit and never fitted on.

Writes:
  devices/costmodel/published.json  the measurements used (model, device, unit, precision, ms, job id)
  devices/costmodel/fitted.json     constants per device × unit × precision, with their held-out error
  bench/results/costmodel_fit.json  held-out and fit-set error per group and per device, every prediction
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from edgeconv.devices.costmodel import fit as F  # noqa: E402
from edgeconv.devices.costmodel.roofline import model_seconds  # noqa: E402
from edgeconv.devices.costmodel.zoo import ZOO  # noqa: E402
from edgeconv.results import atomic_write  # noqa: E402

SOURCE = "qai-hub-models==0.65.0 models/<id>/perf.yaml, runtime tflite"
# Chosen before the first fit, spread over families (MobileNet, MNASNet, ResNet, RegNet-Y with SE,
# DenseNet, EfficientNet at 380 px, ResNeXt); never fitted on, never tuned against.
HELD_OUT = ("mobilenet_v3_large", "mnasnet05", "resnet101", "regnet_y_800mf", "densenet121",
            "efficientnet_b4", "resnext50")
MIN_FIT_MODELS = 8  # a device × unit × precision with fewer fitted models gets no constants
PRECISION = {"float": {"NPU": "fp16", "GPU": "fp16", "CPU": "fp32"}, "w8a8": {"NPU": "int8", "GPU": "int8", "CPU": "int8"}}


def perf_root() -> Path:
    spec = importlib.util.find_spec("qai_hub_models")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("qai-hub-models is not installed: pip install --no-deps qai-hub-models==0.65.0")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def extract(root: Path) -> list[F.Measurement]:
    import yaml

    out = []
    for model in sorted(ZOO):
        doc = yaml.safe_load((root / model / "perf.yaml").read_text())
        for prec, pv in doc["precisions"].items():
            if prec not in PRECISION:
                continue
            for comp in pv["components"].values():
                for device, runtimes in comp["performance_metrics"].items():
                    r = runtimes.get("tflite") if isinstance(runtimes, dict) else None
                    if not r or r.get("inference_time_milliseconds") is None:
                        continue
                    unit = r.get("primary_compute_unit", "")
                    if unit not in PRECISION[prec]:
                        continue
                    out.append(F.Measurement(model, device, unit, PRECISION[prec][unit],
                                             float(r["inference_time_milliseconds"]), str(r.get("job_id", ""))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ridge", type=float, default=1.0, help="penalty on a device's deviation from the shared op-class shape")
    ap.add_argument("--no-write", action="store_true", help="print the errors only (e.g. to see another --ridge)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    meas = extract(perf_root())
    graphs = {m: ZOO[m]() for m in ZOO}
    groups: dict[tuple[str, str], list[F.Measurement]] = defaultdict(list)
    for m in meas:
        groups[(m.unit, m.precision)].append(m)

    fitted, report, predictions = {}, {}, []
    for (unit, prec), ms in sorted(groups.items()):
        fit_counts = defaultdict(int)
        for m in ms:
            fit_counts[m.device] += m.model not in HELD_OUT
        keep = [m for m in ms if fit_counts[m.device] >= MIN_FIT_MODELS]
        if not keep:
            report[f"{unit}/{prec}"] = {"skipped": f"no device has {MIN_FIT_MODELS} fitted models",
                                        "devices": dict(fit_counts)}
            continue
        consts = F.fit_group([m for m in keep if m.model not in HELD_OUT], graphs, ridge=args.ridge)
        per_dev: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"held_out": [], "fit": []})
        for m in keep:
            pred = 1e3 * model_seconds(graphs[m.model], consts[m.device])
            split = "held_out" if m.model in HELD_OUT else "fit"
            per_dev[m.device][split].append(F.ape(pred, m.ms))
            predictions.append({**m.to_dict(), "predicted_ms": round(pred, 4), "ape": F.ape(pred, m.ms),
                                "split": split})
        ho_all = [e for d in per_dev.values() for e in d["held_out"]]
        fit_all = [e for d in per_dev.values() for e in d["fit"]]
        report[f"{unit}/{prec}"] = {"held_out": F.summarize(ho_all), "fit": F.summarize(fit_all),
                                    "devices": {d: {k: F.summarize(v) for k, v in e.items() if v}
                                                for d, e in sorted(per_dev.items())}}
        for d, c in consts.items():
            models = sorted({m.model for m in keep if m.device == d and m.model not in HELD_OUT})
            fitted[f"{d}|{unit}|{prec}"] = {
                "device": d, "unit": unit, "precision": prec, "constants": c.to_dict(),
                "fit_models": models, "held_out": F.summarize(per_dev[d]["held_out"]),
            }

    all_ho = [p for p in predictions if p["split"] == "held_out"]
    by_model: dict[str, list[float]] = defaultdict(list)
    for p in all_ho:
        by_model[f"{p['model']} ({p['precision']})"].append(p["ape"])
    overall = F.summarize([p["ape"] for p in all_ho])
    meta = {"source": SOURCE, "held_out_models": list(HELD_OUT),
            "fit_models": sorted(set(ZOO) - set(HELD_OUT)), "ridge": args.ridge}
    if args.no_write:
        print(f"ridge {args.ridge}: held-out n={overall['n']} median APE {overall['median_ape']:.1f} % "
              f"p90 {overall['p90_ape']:.1f} % (nothing written)")
        return
    atomic_write(ROOT / "devices/costmodel/published.json",
                 json.dumps({"source": SOURCE, "measurements": [m.to_dict() for m in meas]}, indent=1))
    atomic_write(ROOT / "devices/costmodel/fitted.json",
                 json.dumps({**meta, "held_out_overall": overall, "entries": fitted}, indent=1))
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    atomic_write(ROOT / "bench/results/costmodel_fit.json",
                 json.dumps({**meta, "held_out_overall": overall,
                             "held_out_by_model": {k: F.summarize(v) for k, v in sorted(by_model.items())},
                             "devices": sorted({m.device for m in meas}), "groups": report,
                             "seconds": round(time.perf_counter() - t0, 1), "predictions": predictions},
                            indent=1))
    for name in ("devices/costmodel/published.json", "devices/costmodel/fitted.json", "bench/results/costmodel_fit.json"):
        os.chmod(ROOT / name, 0o644)  # package data: readable by everyone (the temp file was 0600)
    print(f"held-out: n={overall['n']} median APE {overall['median_ape']:.1f} % p90 {overall['p90_ape']:.1f} %")
    for g, r in report.items():
        if "held_out" in r:
            print(f"  {g}: held-out median {r['held_out']['median_ape']:.1f} % p90 {r['held_out']['p90_ape']:.1f} % "
                  f"(n={r['held_out']['n']}); fit median {r['fit']['median_ape']:.1f} % over {len(r['devices'])} devices")
        else:
            print(f"  {g}: {r['skipped']}")
    print("medians per device (held-out): " + ", ".join(
        f"{k.split('|')[0]}/{k.split('|')[2]} {v['held_out']['median_ape']:.0f}%" for k, v in fitted.items()
        if v["held_out"]["n"]))


if __name__ == "__main__":
    main()
