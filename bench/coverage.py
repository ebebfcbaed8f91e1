"""Coverage matrix: every zoo family (examples/zoo) × every edgeconv target, through the CLI.

    python bench/coverage.py                                  # all nets, all targets, --size full
    python bench/coverage.py --nets mobilenet_v2,repvgg --size small --targets onnx,tflite-int8

One `edgeconv export` subprocess per net for its dense targets (they share one capture and one
calibration) and one for its sparse targets (the CLI refuses sparse beside int8). A run that dies
without a manifest is re-run one target at a time, so one broken converter cannot hide the others'
results; a crash is recorded as a failure with the last line of its stderr, never a bench crash.
Calibration is on real photos (`examples.zoo.images`: crops of scikit-learn's sample photos, written
as PNGs to a temporary folder and passed as `--calib FOLDER`): the first --calib-samples calibrate,
the next --eval-samples are held out for parity.

Per net × target it records: pass / fail (with the reason edgeconv gave) / refused (exit 2, bad
input or a predicate refusing, with its one line) / crash (any other exit, last stderr line);
error vs the torch int8 simulation in output steps (int8 targets) or max |Δ|/range vs torch fp32
(float targets); the float ops left in each int8 artifact (TFLite: QUANTIZE/DEQUANTIZE and ops
computing on float32 tensors, read with ai-edge-litert's interpreter; ONNX QDQ: nodes outside
DequantizeLinear → op → QuantizeLinear pairs); seconds per stage from the manifest, and wall time.

Writes bench/results/coverage.json and docs/coverage.md (rewritten after every net, so a long run
leaves partial results). Entries for nets not run this time are kept from the existing JSON when it
was made at the same --size (--fresh drops them).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.zoo import FAMILIES, select  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "coverage.json"
DOC = ROOT / "docs" / "coverage.md"
QDQ = ("QuantizeLinear", "DequantizeLinear")
FUSED_ACT = ("Relu", "Clip")  # QDQ pattern DQ → Conv → Relu → Q: the activation fuses into the op
# Ops that only move or reinterpret data: in a QDQ graph they may sit between Q and DQ without
# computing in float; listed apart from float compute.
DATA_MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Concat", "Gather",
                 "Identity", "Shape", "Expand", "DepthToSpace", "SpaceToDepth", "Pad", "MaxPool", "Resize",
                 "Constant", "ConstantOfShape", "Cast", "Range", "Tile"}
TFL_DATA_MOVEMENT = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "SLICE", "SPLIT", "SPLIT_V",
                     "CONCATENATION", "GATHER", "PAD", "PADV2", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "MAX_POOL_2D",
                     "BROADCAST_TO", "RESIZE_NEAREST_NEIGHBOR", "CAST", "SHAPE", "PACK", "UNPACK", "TILE"}


def python() -> str:
    return sys.executable


def edgeconv_cmd() -> list[str]:
    return [python(), "-m", "edgeconv"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["HF_HUB_OFFLINE"] = "1"
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [e.get("PYTHONPATH")])])
    return e


def list_targets() -> list[str]:
    out = subprocess.run([*edgeconv_cmd(), "list"], cwd=ROOT, env=env(), capture_output=True, text=True, check=True).stdout
    names, inside = [], False
    for line in out.splitlines():
        if line.startswith("targets:"):
            inside = True
            continue
        if inside and line.startswith("  ") and line.strip():
            names.append(line.split()[0])
        elif inside and line.strip():
            break
    return names


def is_sparse(t: str) -> bool:
    return t.startswith("tflite-sparse")


def is_int8(t: str) -> bool:
    return "int8" in t or t.endswith("w8a8")


# --- reading artifacts ------------------------------------------------------------------------

def tflite_ops(path: Path) -> dict:
    """Op counts of a .tflite, split into QUANTIZE/DEQUANTIZE, float compute (an op with a float32
    input or output tensor that is not a constant weight of a DEQUANTIZE) and int8 compute."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    dtypes = {t["index"]: str(t["dtype"].__name__ if hasattr(t["dtype"], "__name__") else t["dtype"])
              for t in it.get_tensor_details()}
    counts: dict[str, int] = {}
    float_ops: dict[str, int] = {}
    q = dq = 0
    for op in it._get_ops_details():
        name = op["op_name"]
        counts[name] = counts.get(name, 0) + 1
        if name == "QUANTIZE":
            q += 1
            continue
        if name == "DEQUANTIZE":
            dq += 1
            continue
        tensors = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(dtypes.get(i, "").startswith("float") for i in tensors):
            float_ops[name] = float_ops.get(name, 0) + 1
    compute_float = {k: v for k, v in float_ops.items() if k not in TFL_DATA_MOVEMENT}
    return {"ops": sum(counts.values()), "quantize": q, "dequantize": dq,
            "float_compute": sum(compute_float.values()), "float_compute_ops": compute_float,
            "float_data_movement": sum(v for k, v in float_ops.items() if k in TFL_DATA_MOVEMENT)}


def onnx_ops(path: Path) -> dict:
    """Op counts of an ONNX file; for QDQ graphs, nodes outside DQ → op → Q pairs: a compute node
    with an activation input not produced by DequantizeLinear, or an output not consumed (only) by
    QuantizeLinear, computes in float."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    g = m.graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    counts: dict[str, int] = {}
    for n in g.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    qdq = counts.get("QuantizeLinear", 0) + counts.get("DequantizeLinear", 0)
    float_ops: dict[str, int] = {}

    def quantized(name: str) -> bool:  # every use is a QuantizeLinear, possibly behind a fused Relu/Clip
        uses = consumers.get(name, [])
        return bool(uses) and name not in outputs and all(
            c.op_type == "QuantizeLinear" or (c.op_type in FUSED_ACT and quantized(c.output[0])) for c in uses)

    if qdq:
        for n in g.node:
            if n.op_type in QDQ or n.op_type in DATA_MOVEMENT:
                continue
            outs_float = any(not quantized(o) for o in n.output if o)
            if n.op_type in FUSED_ACT and n.input and n.input[0] in producer \
                    and producer[n.input[0]].op_type not in QDQ:
                in_float = False  # the activation fused into the op before it, which is counted itself
            else:
                acts = [i for i in n.input if i and i not in inits
                        and not (i in producer and producer[i].op_type == "Constant")]
                in_float = any(i not in producer or producer[i].op_type != "DequantizeLinear" for i in acts)
            if in_float or outs_float:
                float_ops[n.op_type] = float_ops.get(n.op_type, 0) + 1
    return {"ops": sum(counts.values()), "quantize": counts.get("QuantizeLinear", 0),
            "dequantize": counts.get("DequantizeLinear", 0), "float_compute": sum(float_ops.values()),
            "float_compute_ops": float_ops}


def artifact_ops(path: Path, target: str) -> dict | None:
    try:
        if path.suffix == ".tflite":
            return tflite_ops(path)
        if path.suffix == ".onnx":
            return onnx_ops(path)
    except Exception as e:  # reading is best effort; the export's verdict stands without it
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}
    return None


# --- one net ----------------------------------------------------------------------------------

def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # The one-line error edgeconv prints (exit 2) or the exception line of a traceback.
    for ln in reversed(lines):
        if ln.startswith(("error:", "Error:")) or ln.split(":")[0].endswith(("Error", "Exception")):
            return ln[:400]
    return lines[-1][:400] if lines else ""


def run_export(ref: str, targets: list[str], out: Path, args) -> dict:
    if out.exists():
        shutil.rmtree(out)
    cmd = [*edgeconv_cmd(), "export", "--model", ref, *[a for t in targets for a in ("-t", t)],
           "--calib", str(args.calib_dir), "--calib-samples", str(args.calib_samples),
           "--eval-samples", str(args.eval_samples), "--out", str(out)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=args.timeout)
        rc, stdout, stderr = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout = -9, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = f"timed out after {args.timeout} s"
    wall = time.perf_counter() - t0
    manifest = None
    mpath = out / "edgeconv.json"
    if mpath.exists():
        try:
            manifest = json.loads(mpath.read_text())
        except ValueError:
            manifest = None
    (out.parent / f"{out.name}.log").write_text(f"$ {' '.join(cmd)}\n[rc {rc}]\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    return {"cmd": cmd, "targets": targets, "rc": rc, "wall_s": round(wall, 2), "manifest": manifest,
            "error": "" if rc in (0, 1) else last_line(stderr + "\n" + stdout), "out": out}


def cell_from_artifact(a: dict, out: Path) -> dict:
    par = a.get("parity") or {}
    diffs = par.get("diffs") or []
    sim = next((d for d in diffs if d.get("reference") == "torch-quant-sim"), None)
    fp = next((d for d in diffs if d.get("reference") == "torch-fp32"), None)
    reasons = [f"{d.get('reference')}: {d.get('reason')}" for d in diffs if not d.get("passed") and d.get("reason")]
    if not par:
        status, reasons = "fail", ["no parity report (unverified)"]
    else:
        status = "pass" if par.get("passed") else "fail"
        if status == "fail" and not reasons:
            reasons = [f"{d.get('reference')}: failed {d.get('checked')}" for d in diffs if not d.get("passed")] or ["no comparison"]
    cell = {"status": status, "reason": "; ".join(reasons), "runtime": par.get("runtime"),
            "steps_vs_sim": sim.get("max_steps") if sim else None,
            "step_unit": sim.get("step_unit") if sim else None,
            "max_rel_vs_fp32": fp.get("max_rel") if fp else None,
            "cosine_vs_fp32": fp.get("cosine") if fp else None,
            "top1_vs_fp32": fp.get("top1_agreement") if fp else None,
            "host_kernels": (par.get("host_kernels") or {}).get("message") or None,
            "size_bytes": a.get("size_bytes"), "path": a.get("path"),
            "stage_s": {s["stage"]: s["seconds"] for s in a.get("stages", [])},
            "float_layers": a.get("float_layers") or []}
    lay = par.get("layers")
    if lay:  # int8 targets: which int8 tensors per-layer isolation could not judge, and why
        total = lay["layers"] + lay["unmatched"]
        cell["isolation"] = {"judged": lay["layers"], "unverified": lay["unmatched"], "covered": lay.get("covered", 0),
                             "unverified_pct": round(100 * lay["unmatched"] / total, 2) if total else None,
                             "passed": lay["passed"], "excluded": lay.get("excluded", []),
                             "within": lay.get("within", [])}
    p = out / a.get("path", "")
    if is_int8(a["target"]) and p.is_file():
        cell["ops"] = artifact_ops(p, a["target"])
    return cell


def run_net(name: str, targets: list[str], args, work: Path, log) -> dict:
    fam = FAMILIES[name]
    ref = fam.ref(args.size)
    groups = [g for g in ([t for t in targets if not is_sparse(t)], [t for t in targets if is_sparse(t)]) if g]
    cells: dict[str, dict] = {}
    runs = []
    t0 = time.perf_counter()
    for gi, group in enumerate(groups):
        r = run_export(ref, group, work / f"{name}-{gi}", args)
        runs.append(r)
        pending = list(group)
        if r["manifest"]:
            for a in r["manifest"].get("artifacts", []):
                if a["target"] in pending:
                    cells[a["target"]] = cell_from_artifact(a, r["out"])
                    pending.remove(a["target"])
        if pending and r["rc"] not in (0, 1) and len(group) > 1:
            log(f"  {name}: run of {len(group)} targets ended rc {r['rc']} ({r['error'][:120]}); isolating {len(pending)}")
            for t in pending:
                rt = run_export(ref, [t], work / f"{name}-{gi}-{t}", args)
                runs.append(rt)
                arts = (rt["manifest"] or {}).get("artifacts", [])
                if arts:
                    cells[t] = cell_from_artifact(arts[0], rt["out"])
                else:
                    cells[t] = failure_cell(rt)
        else:
            for t in pending:
                cells[t] = failure_cell(r)
    shared = {}
    for r in runs:
        for s in (r["manifest"] or {}).get("stages", []):
            if not s["stage"].startswith(("export:", "parity:")):
                shared[s["stage"]] = round(shared.get(s["stage"], 0.0) + s["seconds"], 3)
    host = next((r["manifest"].get("host") for r in runs if r["manifest"]), None)
    return {"host": host and f"{host.get('cpu')} ({host.get('isa')})", "family": name, "ref": ref, "task": fam.task, "paper": fam.paper, "watch": fam.watch,
            "model": next((r["manifest"]["model"] for r in runs if r["manifest"]), None),
            "calibration": next((r["manifest"].get("calibration") for r in runs if r["manifest"]), None),
            "wall_s": round(time.perf_counter() - t0, 2), "shared_stage_s": shared,
            "runs": [{"targets": r["targets"], "rc": r["rc"], "wall_s": r["wall_s"], "error": r["error"],
                      "command": " ".join(r["cmd"][1:]).replace(str(args.calib_dir), "CALIB")} for r in runs],
            "targets": cells}


def failure_cell(r: dict) -> dict:
    status = "refused" if r["rc"] == 2 else "crash"
    if r["rc"] == -9:
        status = "timeout"
    return {"status": status, "reason": r["error"] or f"exit {r['rc']} without a manifest", "rc": r["rc"]}


# --- report -----------------------------------------------------------------------------------

def fmt_cell(c: dict | None) -> str:
    if not c:
        return "·"
    s = c["status"]
    if s in ("pass", "fail"):
        mark = "ok" if s == "pass" else "**FAIL**"
        if c.get("steps_vs_sim") is not None:
            detail = f"{c['steps_vs_sim']:g} st"
        elif c.get("max_rel_vs_fp32") is not None:
            detail = f"{c['max_rel_vs_fp32']:.0e}"
        else:
            detail = ""
        ops = c.get("ops") or {}
        if ops.get("float_compute"):
            detail += f", {ops['float_compute']} fl"
        return f"{mark} {detail}".strip()
    return {"refused": "refused", "crash": "**CRASH**", "timeout": "**TIMEOUT**"}.get(s, s)


def write_markdown(data: dict, path: Path) -> None:
    targets = data["targets"]
    nets = data["nets"]
    lines = ["# Coverage: the zoo × every target", "",
             "<!-- generated by bench/coverage.py; do not edit by hand -->", "",
             f"Generated {data['generated']} by `{data['command']}` on {data.get('host', '?')}; "
             f"size `{data['size']}`, calibration on {data['calib']}.", "",
             "Each cell: `ok`/`FAIL` is edgeconv's parity verdict for the artifact in its runtime; then, for int8 "
             "targets, the max error against the torch int8 simulation in output quantization steps (`st`), for "
             "float targets the max |Δ|/range against torch fp32; `N fl` = compute ops left in float inside an "
             "int8 artifact (TFLite / ONNX only). `refused` = edgeconv declined with a one-line reason (exit 2); "
             "`CRASH` = the export died (last stderr line below). Zoo nets: `examples/zoo/` (random weights, "
             "BatchNorm statistics from real photos). Sparse targets prune 80 % of the 1×1/linear weights of a "
             "*random-weight* net with no fine-tuning, so their drop check against the dense net (top-1 agreement, "
             "≤ 0.02) is expected to fail; what they show is whether the sparse artifact builds and matches the "
             "pruned torch program.", ""]
    lines.append("| net | " + " | ".join(f"`{t}`" for t in targets) + " | wall s |")
    lines.append("|---|" + "---|" * len(targets) + "---:|")
    for name, n in nets.items():
        row = [fmt_cell(n["targets"].get(t)) for t in targets]
        lines.append(f"| {name} | " + " | ".join(row) + f" | {n['wall_s']:.0f} |")
    counts: dict[str, int] = {}
    for n in nets.values():
        for c in n["targets"].values():
            counts[c["status"]] = counts.get(c["status"], 0) + 1
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".", ""]
    lines += ["## Failures, refusals and crashes", ""]
    any_bad = False
    for name, n in nets.items():
        for t in targets:
            c = n["targets"].get(t)
            if c and c["status"] != "pass":
                any_bad = True
                extra = f" ({c['steps_vs_sim']:g} steps)" if c.get("steps_vs_sim") is not None else ""
                lines.append(f"- **{name} × {t}** — {c['status']}{extra}: {c.get('reason') or '?'}")
    if not any_bad:
        lines.append("None.")
    lines += ["", "## Float ops left in int8 artifacts", "",
              "TFLite: QUANTIZE / DEQUANTIZE counts and ops computing on float32 tensors; ONNX QDQ: compute nodes "
              "outside DequantizeLinear → op → QuantizeLinear.", "",
              "| net | target | ops | Q | DQ | float compute (op: count) |", "|---|---|---:|---:|---:|---|"]
    for name, n in nets.items():
        for t in targets:
            c = n["targets"].get(t) or {}
            ops = c.get("ops")
            if not ops:
                continue
            if "error" in ops:
                lines.append(f"| {name} | {t} | ? | ? | ? | unreadable: {ops['error']} |")
                continue
            fl = ", ".join(f"{k}: {v}" for k, v in sorted(ops["float_compute_ops"].items())) or "—"
            lines.append(f"| {name} | {t} | {ops['ops']} | {ops['quantize']} | {ops['dequantize']} | {fl} |")
    lines += ["", "## Time", "", "Seconds: shared stages (capture, fold, quantize … summed over the net's runs) and "
              "export + parity per target, from the manifests; wall = the whole net, all runs.", "",
              "| net | wall | capture | quantize | slowest target (export+parity) |", "|---|---:|---:|---:|---|"]
    for name, n in nets.items():
        per = {t: sum(v for k, v in (c.get("stage_s") or {}).items() if k.endswith(":" + t))
               for t, c in n["targets"].items()}
        slow = max(per.items(), key=lambda kv: kv[1]) if per else ("", 0)
        sh = n.get("shared_stage_s", {})
        lines.append(f"| {name} | {n['wall_s']:.0f} | {sh.get('capture', 0):.1f} | {sh.get('quantize', 0):.1f} | "
                     f"{slow[0]} {slow[1]:.1f} |")
    lines += ["", "## Reproduce", "", "```bash", f"HF_HUB_OFFLINE=1 python bench/coverage.py --size {data['size']}", "```", "",
              "Per net, the exact export commands (CALIB = the temporary folder of photo crops) are in "
              "`bench/results/coverage.json` (`nets.*.runs[].command`).", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="", help="comma-separated family names (default: all): " + ",".join(FAMILIES))
    ap.add_argument("--targets", default="", help="comma-separated targets (default: every target of `edgeconv list`)")
    ap.add_argument("--size", choices=("small", "full"), default="full")
    ap.add_argument("--jobs", type=int, default=1, help="nets exported in parallel")
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per export run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--md", type=Path, default=DOC)
    ap.add_argument("--work", type=Path, default=None, help="keep artifacts and logs here (default: a temp folder)")
    ap.add_argument("--fresh", action="store_true", help="drop entries of nets not run this time")
    args = ap.parse_args(argv)

    try:
        nets = select(args.nets)
    except ValueError as e:
        ap.error(str(e))
    all_targets = list_targets()
    targets = [t for t in args.targets.split(",") if t] or all_targets
    bad = [t for t in targets if t not in all_targets]
    if bad:
        ap.error(f"unknown target(s) {', '.join(bad)}; choose from {', '.join(all_targets)}")

    from examples.zoo.images import photos, write_folder

    tmp = None
    work = args.work
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgeconv-coverage-")
        work = Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    # edgeconv calibrates on min(--calib-samples, half the data): write enough for both halves.
    args.calib_dir = write_folder(work / "calib", max(2 * args.calib_samples, args.calib_samples + args.eval_samples))
    n_img = len(list(args.calib_dir.iterdir()))
    calib_text = (f"{n_img} 256² crops of {len(photos())} real photos (examples/zoo/images.py): edgeconv calibrates on "
                  f"min(--calib-samples {args.calib_samples}, half of them) and checks parity on the next "
                  f"--eval-samples {args.eval_samples}")

    data = {"generated": "", "command": "python bench/coverage.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "size": args.size, "calib": calib_text, "targets": all_targets if not args.targets else targets, "nets": {}}
    if args.out.exists() and not args.fresh:
        try:
            old = json.loads(args.out.read_text())
            if old.get("size") == args.size:
                data["nets"] = {k: v for k, v in old.get("nets", {}).items() if k not in nets}
                data["targets"] = list(dict.fromkeys([*old.get("targets", []), *data["targets"]]))
        except ValueError:
            pass
    lock = threading.Lock()

    def log(msg: str) -> None:
        with lock:
            print(msg, flush=True)

    def save() -> None:
        data["generated"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        order = [n for n in FAMILIES if n in data["nets"]]
        data["nets"] = {n: data["nets"][n] for n in order}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1, default=str) + "\n")
        write_markdown(data, args.md)

    t0 = time.perf_counter()

    def one(name: str) -> None:
        log(f"{name}: {FAMILIES[name].ref(args.size)} → {len(targets)} targets")
        try:
            res = run_net(name, targets, args, work, log)
        except Exception as e:  # the bench's own bug for one net must not lose the others
            res = {"family": name, "ref": FAMILIES[name].ref(args.size), "wall_s": 0.0, "runs": [],
                   "targets": {t: {"status": "crash", "reason": f"bench: {type(e).__name__}: {e}"} for t in targets}}
        with lock:
            if res.get("host"):
                data["host"] = res.pop("host")
            data["nets"][name] = res
            save()
        summary = ", ".join(f"{t}={fmt_cell(c)}" for t, c in res["targets"].items())
        log(f"{name}: {res['wall_s']:.0f}s  {summary}")

    with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, nets))
    data["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    save()
    log(f"wrote {args.out} and {args.md} in {data['bench_wall_s']:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
