"""Dense zoo × targets: segmentation, detection, text detection and restoration nets, each output
judged by its kind's task metric (edgeconv.outputs), through the CLI with default options.

    python bench/dense.py                       # every dense net, six targets, --size small
    python bench/dense.py --nets lraspp,dbnet --targets onnx,coreml

One `edgeconv export` subprocess per net for all its targets (one capture, one calibration shared
by the int8 targets). Calibration on real photos (`examples.zoo.images` crops written as PNGs, the
first --calib-samples calibrate, the next --eval-samples are held out). The manifest is written
even when a target fails (its one-line reason is recorded), so the table always says why.

Per net × target × output: the kind (declared by the net), the headline metric against torch fp32
(mIoU, mask IoU, PSNR, box IoU, top-k score overlap), against the torch int8 simulation and the
simulation's own against fp32 (int8 targets), the floor the verdict held it to, and the verdict.
Writes bench/results/dense.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "dense.json"
NETS = ("lraspp", "segformer", "ssdlite", "dbnet", "swinir")
TARGETS = ("onnx", "onnx-int8", "tflite", "tflite-int8", "coreml", "coreml-w8a8")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["HF_HUB_OFFLINE"] = "1"
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [e.get("PYTHONPATH")])])
    return e


def run_net(net: str, size: str, targets: tuple[str, ...], calib: Path, out: Path, n_cal: int, n_eval: int) -> dict:
    ref = f"examples.zoo.dense:{net}" + ("_small" if size == "small" else "")
    cmd = [sys.executable, "-m", "edgeconv", "export", "--model", ref, "--calib", str(calib), "--calib-samples",
           str(n_cal), "--eval-samples", str(n_eval), "-o", str(out / net), "--json"]
    for t in targets:
        cmd += ["-t", t]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, check=False)
    wall = round(time.perf_counter() - t0, 1)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("edgeconv: error:")]
    manifest = out / net / "edgeconv.json"
    entry = {"model": ref, "exit": res.returncode, "error": errors[0] if errors else "", "wall_s": wall,
             "traceback": "Traceback" in res.stderr, "targets": {}}
    if not manifest.is_file():
        entry["error"] = entry["error"] or (res.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return entry
    m = json.loads(manifest.read_text())
    for a in m["artifacts"]:
        p = a["parity"] or {}
        entry["targets"][a["target"]] = {
            "passed": bool(p.get("passed")) and not a.get("failure"),
            "failure": a.get("failure", ""),
            "size_bytes": a["size_bytes"],
            "output_names": [o["name"] for o in a["outputs"]],
            "failed_checks": [f"vs {d['reference']}: {d['reason']}" for d in p.get("diffs", ()) if not d["passed"]]
            + ([f"layers: {'; '.join(p['layers']['over'][:3])}"] if p.get("layers") and not p["layers"]["passed"] else []),
            "outputs": [{"name": o["name"], "kind": o["kind"], "metric": o["metric"],
                         "vs_fp32": o["vs_fp32"].get(o["metric"]), "vs_sim": (o["vs_sim"] or {}).get(o["metric"]),
                         "sim_vs_fp32": (o["sim_vs_fp32"] or {}).get(o["metric"]), "floor": o["floor"],
                         "passed": o["passed"], "all_vs_fp32": o["vs_fp32"]} for o in p.get("outputs", ())],
        }
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--size", choices=("small", "full"), default="small")
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None,
                    help=f"results JSON (default {RESULTS.relative_to(ROOT)}; --size full: dense-full.json beside it)")
    args = ap.parse_args()
    nets = [n for n in args.nets.split(",") if n]
    unknown = [n for n in nets if n not in NETS]
    if unknown:
        sys.exit(f"unknown net(s) {', '.join(unknown)}; choose from {', '.join(NETS)}")
    targets = tuple(t for t in args.targets.split(",") if t)
    from examples.zoo.images import write_folder

    results: dict = {"size": args.size, "targets": list(targets), "calib_samples": args.calib_samples,
                     "eval_samples": args.eval_samples, "nets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        calib = write_folder(Path(tmp) / "photos", args.calib_samples + args.eval_samples)
        for net in nets:
            results["nets"][net] = e = run_net(net, args.size, targets, calib, Path(tmp) / "out",
                                               args.calib_samples, args.eval_samples)
            print(table_rows(net, e), flush=True)
    results["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    out = args.out or (RESULTS.with_name("dense-full.json") if args.size == "full" else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


def table_rows(net: str, e: dict) -> str:
    rows = [f"{net}: exit {e['exit']} in {e['wall_s']} s" + (f" — {e['error']}" if e["error"] else "")]
    for t, r in e["targets"].items():
        if r["failure"]:
            rows.append(f"  {t:<12} NOT EXPORTED: {r['failure']}")
            continue
        outs = "; ".join(f"{o['name']} {o['metric']} {o['vs_fp32']:.4g}"
                         + (f" (sim {o['sim_vs_fp32']:.4g}, vs sim {o['vs_sim']:.4g})" if o["vs_sim"] is not None else "")
                         for o in r["outputs"])
        rows.append(f"  {t:<12} {'ok    ' if r['passed'] else 'FAILED'} {outs}"
                    + (f" — {'; '.join(r['failed_checks'])[:200]}" if r["failed_checks"] else ""))
    return "\n".join(rows)


if __name__ == "__main__":
    main()
