"""Which accelerator runs each zoo net whole: partitions and CPU ops per delegate.

    python bench/delegates.py                        # every family, --size small
    python bench/delegates.py --nets mobilenet_v3,convnext --jobs 1
    python bench/delegates.py --work DIR --reuse     # re-analyse the files a run left in DIR

Per zoo family (examples/zoo, the `_small` factory): one `edgeconv export -t tflite-int8 -t onnx-int8
-t tflite` subprocess (calibrated on crops of real photos, examples/zoo/images.py), then, here:

- XNNPACK: MEASURED on this host (ai-edge-litert's Interpreter with its default XNNPACK delegate;
  devices/delegates/measured.py reads the DELEGATE nodes after allocate_tensors()) and PREDICTED
  from devices/delegates/xnnpack.toml, with the ops where the two disagree. The int8 files are the
  ones the table's int8 rules were corrected on; the fp32 twins (`xnnpack_fp32`) were not used to
  write the table and are the held-out check;
- GPU, NNAPI (feature level 4, and 3), Hexagon on the .tflite, ONNX Runtime's QNN EP (qnn-ep) on the .onnx: PREDICTED only.

Writes bench/results/delegates.json after every net. A failed export is recorded with its last line.

Before / after a change to the int8 recipe (e.g. full-integer export), per family, tflite-int8 only:

    python bench/delegates.py --targets tflite-int8 --label before --out bench/results/delegates-int8-before.json
    ... the change ...
    python bench/delegates.py --targets tflite-int8 --label after --out bench/results/delegates-int8-after.json \
        --compare bench/results/delegates-int8-before.json

--compare adds, per family and delegate, partitions and CPU ops then and now ("compared" in the
JSON); each file records the git commit it was made at.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.zoo import FAMILIES, select  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "delegates.json"
TFLITE_DELEGATES = (("gpu", None), ("nnapi", 4), ("nnapi", 3), ("hexagon", None))


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["HF_HUB_OFFLINE"] = "1"
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [e.get("PYTHONPATH")])])
    return e


def export(ref: str, out: Path, args) -> tuple[dict[str, Path], str, float]:
    if args.reuse and (out / "edgeconv.json").exists():  # re-analyse files a previous run left in --work
        m = json.loads((out / "edgeconv.json").read_text())
        return {a["target"]: out / a["path"] for a in m.get("artifacts", []) if a["target"] in args.targets}, "", 0.0
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "edgeconv", "export", "--model", ref, *(a for t in args.targets for a in ("-t", t)),
           "--calib", str(args.calib_dir), "--calib-samples", str(args.calib_samples),
           "--eval-samples", str(args.eval_samples), "--out", str(out)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=args.timeout)
    files: dict[str, Path] = {}
    manifest = out / "edgeconv.json"
    if manifest.exists():
        for a in json.loads(manifest.read_text()).get("artifacts", []):
            if (out / a["path"]).is_file():
                files[a["target"]] = out / a["path"]
    err = "" if files else ([ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()] or [f"exit {p.returncode}"])[-1]
    return files, err[:300], time.perf_counter() - t0


def summary(v) -> dict:
    rules = collections.Counter(f.rule for f in v.fallbacks)
    cpu_ops = collections.Counter(f.op for f in v.fallbacks)
    return {"kind": v.kind, "ops": v.ops, "delegated": len(v.delegated), "partitions": len(v.partitions),
            "cpu_ops": v.cpu_ops, "whole": v.whole, "fallback_rules": dict(rules.most_common()),
            "cpu_op_types": dict(cpu_ops.most_common()), **({"level": v.level} if v.level is not None else {})}


def xnnpack_both(path: Path) -> dict:
    from edgeconv.devices import delegates

    pred, meas = delegates.check(path, "xnnpack"), delegates.measure(path, "xnnpack")
    by = {o.index: o for o in delegates.read_ops(path, "tflite")}
    only_pred = sorted(set(pred.delegated) - set(meas.delegated))
    only_meas = sorted(set(meas.delegated) - set(pred.delegated))
    return {"measured": summary(meas), "predicted": summary(pred),
            "agree": pred.delegated == meas.delegated and pred.partitions == meas.partitions,
            "predicted_not_measured": [by[i].label() for i in only_pred],
            "measured_not_predicted": [by[i].label() for i in only_meas],
            "measure_notes": list(meas.notes)}


def analyse(files: dict[str, Path]) -> dict:
    from edgeconv.devices import delegates

    out: dict = {}
    tfl = files.get("tflite-int8")
    if tfl is not None:
        out["xnnpack"] = xnnpack_both(tfl)
        for name, level in TFLITE_DELEGATES:
            key = name if level in (None, 4) else f"{name}@{level}"
            out[key] = summary(delegates.check(tfl, name, level))
    if files.get("tflite") is not None:  # fp32 twin: not used to write the XNNPACK table (held out)
        out["xnnpack_fp32"] = xnnpack_both(files["tflite"])
    onnx = files.get("onnx-int8")
    if onnx is not None:
        out["qnn-ep"] = summary(delegates.check(onnx, "qnn-ep"))
    return out


def headline(nets: dict) -> dict:
    keys = ["xnnpack_measured", "xnnpack_predicted", "gpu", "nnapi", "nnapi@3", "hexagon", "qnn-ep"]
    h: dict = {}
    for k in keys:
        rows = []
        for n in nets.values():
            d = n.get("delegates", {})
            if k.startswith("xnnpack_"):
                d = d.get("xnnpack", {}).get(k.split("_")[1])
            else:
                d = d.get(k)
            if d:
                rows.append(d)
        if rows:
            h[k] = {"nets": len(rows), "run_whole": sum(r["whole"] for r in rows),
                    "median_partitions": sorted(r["partitions"] for r in rows)[len(rows) // 2],
                    "total_cpu_ops": sum(r["cpu_ops"] for r in rows)}
    for key, label in (("xnnpack", "int8 files (the XNNPACK table was corrected on these)"),
                       ("xnnpack_fp32", "fp32 files (held out: not used to write the table)")):
        x = [n["delegates"][key] for n in nets.values() if key in n.get("delegates", {})]
        if not x:
            continue
        h[f"{key}_predicted_equals_measured"] = f"{sum(r['agree'] for r in x)}/{len(x)} {label}"
    return h


def compare(nets: dict, old: dict) -> dict:
    """Per family and delegate: (partitions, CPU ops) in the other file and in this one."""
    out: dict = {}
    for name, row in nets.items():
        then = (old.get("nets", {}).get(name) or {}).get("delegates", {})
        now = row.get("delegates", {})
        pairs = {}
        for key in sorted(set(then) & set(now)):
            a, b = then[key], now[key]
            if key.startswith("xnnpack"):
                a, b = a.get("measured", {}), b.get("measured", {})
            if "partitions" in a and "partitions" in b:
                pairs[key] = {"partitions": [a["partitions"], b["partitions"]], "cpu_ops": [a["cpu_ops"], b["cpu_ops"]],
                              "whole": [a["whole"], b["whole"]]}
        if pairs:
            out[name] = pairs
    whole = collections.Counter()
    for pairs in out.values():
        for key, p in pairs.items():
            whole[(key, 0)] += p["whole"][0]
            whole[(key, 1)] += p["whole"][1]
    keys = sorted({k for k, _ in whole})
    return {"against": old.get("label") or old.get("command", ""), "against_commit": old.get("commit", ""),
            "run_whole": {k: [whole[(k, 0)], whole[(k, 1)]] for k in keys}, "nets": out}


def _commit() -> str:
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=10, check=False)
    except OSError:
        return ""
    return r.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="", help="comma-separated family names (default: all)")
    ap.add_argument("--size", choices=("small", "full"), default="small")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--work", type=Path, default=None, help="keep artifacts here (default: a temp folder)")
    ap.add_argument("--reuse", action="store_true", help="with --work: analyse the files already there, no export")
    ap.add_argument("--targets", default="tflite-int8,onnx-int8,tflite",
                    help="comma-separated targets to export and analyse (tflite-int8 alone: every TFLite delegate)")
    ap.add_argument("--label", default="", help="a name for this run, recorded in the JSON (e.g. before / after)")
    ap.add_argument("--compare", type=Path, default=None, help="an earlier results file: per family, then and now")
    args = ap.parse_args(argv)
    args.targets = tuple(t for t in args.targets.split(",") if t)
    known = {"tflite-int8", "onnx-int8", "tflite"}
    if not args.targets or not set(args.targets) <= known:
        ap.error(f"--targets takes some of {', '.join(sorted(known))}")
    against = None
    if args.compare is not None:
        try:
            against = json.loads(args.compare.read_text())
        except (OSError, ValueError) as e:
            ap.error(f"--compare {args.compare}: {e}")
    try:
        nets = select(args.nets)
    except ValueError as e:
        ap.error(str(e))

    from examples.zoo.images import write_folder

    tmp = None
    work = args.work
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgeconv-delegates-")
        work = Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    args.calib_dir = write_folder(work / "calib", args.calib_samples + args.eval_samples)
    import ai_edge_litert

    data = {"generated": "", "command": "python bench/delegates.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "host": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "runtime": f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')} (XNNPACK default delegate, 1 thread)",
            "label": args.label, "commit": _commit(), "targets": list(args.targets),
            "size": args.size, "calib": f"{args.calib_samples + args.eval_samples} crops of real photos (examples/zoo/images.py)",
            "how": {"xnnpack": "measured (DELEGATE nodes after allocate_tensors) and predicted (xnnpack.toml)",
                    "gpu": "predicted (gpu.toml; default options: largest partition only)",
                    "nnapi": "predicted (nnapi.toml) at feature level 4; nnapi@3 at level 3",
                    "hexagon": "predicted (hexagon.toml)", "qnn-ep": "predicted (qnn-ep.toml: ONNX Runtime's QNN execution provider) on the onnx-int8 QDQ file",
                    "xnnpack_fp32": "measured and predicted on the fp32 twin (held out from writing the table)",
                    "partitions": "TFLite graph_info.cc epochs over supported nodes (devices/delegates/rules.py)"},
            "headline": {}, "nets": {}}
    if args.out.exists():
        try:
            old = json.loads(args.out.read_text())
            if old.get("size") == args.size and old.get("targets", ["tflite-int8", "onnx-int8", "tflite"]) == list(args.targets):
                data["nets"] = {k: v for k, v in old.get("nets", {}).items() if k not in nets}
        except ValueError:
            pass

    def save() -> None:
        data["generated"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        data["nets"] = {n: data["nets"][n] for n in FAMILIES if n in data["nets"]}
        data["headline"] = headline(data["nets"])
        if against is not None:
            data["compared"] = compare(data["nets"], against)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1) + "\n")

    previous = dict(data["nets"])
    if args.reuse:  # the files were exported by an earlier run into --work: this one only reads them
        data["reanalysed_from"] = str(work)
    if args.out.exists() and args.reuse:
        try:
            old = json.loads(args.out.read_text())
            previous = old.get("nets", {})
            # the files are those the earlier run exported: its command stays the one that made them
            data["reanalysed_by"] = data["command"]
            data["command"] = old.get("command", data["command"])
        except ValueError:
            previous = {}

    def one(name: str) -> tuple[str, dict]:
        ref = FAMILIES[name].ref(args.size)
        files, err, wall = export(ref, work / name, args)
        if args.reuse and wall == 0.0:  # keep the export time the run that made the files recorded
            wall = (previous.get(name) or {}).get("export_s", 0.0)
        row: dict = {"ref": ref, "export_s": round(wall, 1), "error": err}
        if files:
            try:
                row["delegates"] = analyse(files)
            except Exception as e:  # one net's reader bug must not lose the others
                row["error"] = f"analysis: {type(e).__name__}: {e}"[:300]
        return name, row

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for fut in cf.as_completed([pool.submit(one, n) for n in nets]):
            name, row = fut.result()
            data["nets"][name] = row
            x = row.get("delegates", {}).get("xnnpack", {})
            print(f"{name}: {row['export_s']} s, " + (f"xnnpack measured {x['measured']['partitions']} part / "
                  f"{x['measured']['cpu_ops']} cpu, agree={x['agree']}" if x else f"ERROR {row['error']}"), flush=True)
            save()
    print(f"done in {time.perf_counter() - t0:.0f} s -> {args.out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
