"""Coverage matrix: every zoo family (examples/zoo), or the smallest variant of every timm model
module (`--catalog timm`), × every edgeconv target, through the CLI.

    python bench/coverage.py                                  # all zoo nets, all targets, --size full
    python bench/coverage.py --nets mobilenet_v2,repvgg --size small --targets onnx,tflite-int8
    python bench/coverage.py --catalog timm --targets onnx,onnx-int8,tflite,tflite-int8,coreml,coreml-w8a8 \
        --shard 1/4 --limit 10                                # resumable: one JSON per net in --cache

One `edgeconv export` subprocess per net for its dense targets (they share one capture and one
calibration) and one for its sparse targets (the CLI refuses sparse beside int8). A run that dies
without a manifest is re-run one target at a time (unless it timed out), so one broken converter
cannot hide the others' results; a crash is recorded as a failure with the last line of its stderr, never a bench crash.
Calibration is on real photos (`examples.zoo.images`: crops of scikit-learn's sample photos, written
as PNGs to a temporary folder and passed as `--calib FOLDER`): the first --calib-samples calibrate,
the next --eval-samples are held out for parity.

Per net × target it records: pass / fail (with the reason edgeconv gave) / refused (exit 2, bad
input or a predicate refusing, with its one line) / crash (any other exit, last stderr line);
error vs the torch int8 simulation in output steps (int8 targets) or max |Δ|/range vs torch fp32
(float targets); the simulation's own relative L2 error vs fp32 and top-1 agreement; layers left
unverified by per-layer isolation; the float ops left in each int8 artifact, read by the format's
own reader (`format_for(path).float_ops`); seconds per stage from the manifest, and wall time.

Zoo mode writes bench/results/coverage.json and docs/coverage.md (rewritten after every net, so a
long run leaves partial results); entries for nets not run this time are kept from the existing
JSON when it was made at the same --size (--fresh drops them).

Catalog mode (`--catalog timm`, nets from bench/timm_catalog.py, built by bench/timm_nets.py at
the catalog's small input size) keeps one JSON per net in --cache (bench/results/coverage-timm/):
a net already there is not run again unless --fresh, so a long run can stop and resume, and shards
run on several machines merge by copying their cache folders together. The summary
(bench/results/coverage-timm.json, docs/coverage-timm.md) is rebuilt from every cached net after
each one (`--limit 0` only rebuilds it). A run of some targets of a cached net (`--targets coreml-w8a8
--fresh --nets densenet`) replaces those cells and keeps the others (`reruns` says which ran when).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
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

from examples.zoo import FAMILIES, select

RESULTS = ROOT / "bench" / "results" / "coverage.json"
DOC = ROOT / "docs" / "coverage.md"
CATALOG_RESULTS = ROOT / "bench" / "results" / "coverage-timm.json"
CATALOG_DOC = ROOT / "docs" / "coverage-timm.md"
CATALOG_CACHE = ROOT / "bench" / "results" / "coverage-timm"


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

def artifact_ops(path: Path) -> dict:
    """What an int8 artifact still computes in float, read from the file by its format's own reader
    (`format_for(path).float_ops`: TFLite, ONNX QDQ and Core ML each know their files): the count,
    the count per op type, and integer requantizations counted apart."""
    from edgeconv.exporters.formats import format_for

    try:
        found = format_for(path).float_ops(path)
    except Exception as e:  # noqa: BLE001 — reading is best effort; the export's verdict stands without it
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}
    by_op: dict[str, int] = {}
    for entry in found.ops:  # "OP tensor"
        op = entry.split(" ", 1)[0]
        by_op[op] = by_op.get(op, 0) + 1
    return {"float_ops": found.count, "float_ops_by_op": dict(sorted(by_op.items())),
            "requantize": found.requantize, "how": found.how}


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
        p = subprocess.run(cmd, check=False, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=args.timeout)
        rc, stdout, stderr = p.returncode, p.stdout, p.stderr
        if rc == -9:  # SIGKILL before the timeout: the kernel's OOM killer (dmesg names it)
            stderr += f"\nkilled (SIGKILL) after {time.perf_counter() - t0:.0f} s, before the timeout: out of memory"
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
    layers = par.get("layers") or {}
    sim = next((d for d in diffs if d.get("reference") == "torch-quant-sim"), None)
    fp = next((d for d in diffs if d.get("reference") == "torch-fp32"), None)
    reasons = [f"{d.get('reference')}: {d.get('reason')}" for d in diffs if not d.get("passed") and d.get("reason")]
    if layers and layers.get("passed") is False:  # per-layer isolation failed the artifact
        over = layers.get("over") or []
        reasons.append(f"per-layer isolation: {len(over)} layer(s) over {layers.get('limit'):g} step: "
                       + "; ".join(over[:3]) + (" …" if len(over) > 3 else ""))
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
            # the simulation's own error vs fp32 (int8 targets): what int8 costs this net, artifact aside
            "sim_rel_l2_vs_fp32": sim.get("sim_rel_l2_vs_fp32") if sim else None,
            "rel_l2_vs_sim": sim.get("rel_l2") if sim else None,
            "unverified_layers": list(layers.get("excluded") or []), "layers_matched": layers.get("layers"),
            "layers_unmatched": layers.get("unmatched"),
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
    if is_int8(a["target"]) and p.exists():  # a Core ML package is a folder
        cell["ops"] = artifact_ops(p)
    return cell


def rounding_of(ref: str, args) -> dict:
    """The fp32 net's own output change when only its input is rounded to int8 (bench/rounding.py)."""
    from bench.rounding import rounding_sensitivity

    try:
        return rounding_sensitivity(ref, args.calib_dir, args.calib_samples, args.eval_samples)
    except Exception as e:  # noqa: BLE001 — a measurement beside the verdicts; its failure is recorded
        return {"error": f"{type(e).__name__}: {str(e)[:200]}"}


def fill_rounding(entries: list, cache: Path, args, log) -> None:
    """Measure it for cached nets that lack it (run before it was recorded)."""
    for e in entries:
        f = cache / f"{e.module}.json"
        if e.skipped or not f.exists():
            continue
        res = json.loads(f.read_text())
        if "rounding" not in res:
            res["rounding"] = rounding_of(e.ref, args)
            f.write_text(json.dumps(res, indent=1, default=str) + "\n")
            log(f"{e.module}: input rounding alone moves fp32 by rel-L2 {res['rounding'].get('rel_l2')}")


def run_net(name: str, ref: str, targets: list[str], args, work: Path, log) -> dict:
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
        # a crash is isolated target by target; a timeout is not (each alone would time out again)
        if pending and r["rc"] not in (0, 1, -9) and len(group) > 1:
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
    return {"host": host and f"{host.get('cpu')} ({host.get('isa')})", "family": name, "ref": ref,
            "model": next((r["manifest"]["model"] for r in runs if r["manifest"]), None),
            "calibration": next((r["manifest"].get("calibration") for r in runs if r["manifest"]), None),
            "wall_s": round(time.perf_counter() - t0, 2), "shared_stage_s": shared,
            "runs": [{"targets": r["targets"], "rc": r["rc"], "wall_s": r["wall_s"], "error": r["error"],
                      "command": " ".join(r["cmd"][1:]).replace(str(args.calib_dir), "CALIB")} for r in runs],
            "targets": cells}


def failure_cell(r: dict) -> dict:
    status = "refused" if r["rc"] == 2 else "crash"
    if r["rc"] == -9:
        status = "timeout" if "timed out" in (r["error"] or "") else "killed"
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
        if ops.get("float_ops"):
            detail += f", {ops['float_ops']} fl"
        return f"{mark} {detail}".strip()
    return {"refused": "refused", "crash": "**CRASH**", "timeout": "**TIMEOUT**", "killed": "**KILLED**"}.get(s, s)


FLOAT_OPS_NOTE = ("Read from each file by its format's own reader (`format_for(path).float_ops`): TFLite — DEQUANTIZE, "
                  "QUANTIZE from float and every op with a float input or output; ONNX — ops fed by something other "
                  "than DequantizeLinear; Core ML — ops fed by something other than dequantize. int8 → int8 "
                  "requantizations are counted apart (integer).")


def by_op(ops: dict) -> str:
    by = ops.get("float_ops_by_op", ops.get("float_compute_ops")) or {}
    return ", ".join(f"{k}: {v}" for k, v in by.items()) or "—"


def write_markdown(data: dict, path: Path) -> None:
    targets = data["targets"]
    nets = data["nets"]
    lines = ["# Coverage: the zoo × every target", "",
             "<!-- generated by bench/coverage.py; do not edit by hand -->", "",
             (f"Generated {data['generated']} by `{data['command']}` on {data.get('host', '?')}; "
             f"size `{data['size']}`, calibration on {data['calib']}."), "",
             ("Each cell: `ok`/`FAIL` is edgeconv's parity verdict for the artifact in its runtime; then, for int8 "
             "targets, the max error against the torch int8 simulation in output quantization steps (`st`), for "
             "float targets the max |Δ|/range against torch fp32; `N fl` = compute ops left in float inside an "
             "int8 artifact (TFLite / ONNX only). `refused` = edgeconv declined with a one-line reason (exit 2); "
             "`CRASH` = the export died (last stderr line below). Zoo nets: `examples/zoo/` (random weights, "
             "BatchNorm statistics from real photos). Sparse targets prune 80 % of the 1×1/linear weights of a "
             "*random-weight* net with no fine-tuning, so their drop check against the dense net (top-1 agreement, "
             "≤ 0.02) is expected to fail; what they show is whether the sparse artifact builds and matches the "
             "pruned torch program."), ""]
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
    lines += ["", "## Float ops left in int8 artifacts", "", FLOAT_OPS_NOTE, "",
              "| net | target | float ops | requantize | float ops by op |", "|---|---|---:|---:|---|"]
    for name, n in nets.items():
        for t in targets:
            c = n["targets"].get(t) or {}
            ops = c.get("ops")
            if not ops:
                continue
            if "error" in ops:
                lines.append(f"| {name} | {t} | ? | ? | unreadable: {ops['error']} |")
                continue
            # entries kept from runs before the format readers (`float_compute`: compute ops only) read as they were
            fl = ops.get("float_ops", ops.get("float_compute", "?"))
            lines.append(f"| {name} | {t} | {fl} | {ops.get('requantize', '?')} | {by_op(ops)} |")
    lines += ["", "## Time", "", ("Seconds: shared stages (capture, fold, quantize … summed over the net's runs) and "
              "export + parity per target, from the manifests; wall = the whole net, all runs."), "",
              "| net | wall | capture | quantize | slowest target (export+parity) |", "|---|---:|---:|---:|---|"]
    for name, n in nets.items():
        per = {t: sum(v for k, v in (c.get("stage_s") or {}).items() if k.endswith(":" + t))
               for t, c in n["targets"].items()}
        slow = max(per.items(), key=lambda kv: kv[1]) if per else ("", 0)
        sh = n.get("shared_stage_s", {})
        lines.append(f"| {name} | {n['wall_s']:.0f} | {sh.get('capture', 0):.1f} | {sh.get('quantize', 0):.1f} | "
                     f"{slow[0]} {slow[1]:.1f} |")
    lines += ["", "## Reproduce", "", "```bash", f"HF_HUB_OFFLINE=1 python bench/coverage.py --size {data['size']}", "```", "",
              ("Per net, the exact export commands (CALIB = the temporary folder of photo crops) are in "
              "`bench/results/coverage.json` (`nets.*.runs[].command`)."), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# --- the timm catalog ---------------------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` (1 ≤ I ≤ N): this machine runs catalog nets I, I+N, I+2N … (1-based, catalog order)."""
    i, sep, n = text.partition("/")
    if not sep or not i.isdigit() or not n.isdigit() or not 1 <= int(i) <= int(n):
        raise ValueError(f"--shard {text!r}: give I/N with 1 ≤ I ≤ N, e.g. --shard 2/4")
    return int(i), int(n)


def select_catalog(entries: list, nets: str, shard: tuple[int, int]) -> list:
    """Runnable catalog entries, filtered by --nets (module or model names), then this shard's."""
    runnable = [e for e in entries if not e.skipped]
    wanted = [n for n in nets.split(",") if n]
    if wanted:
        known = {e.module for e in runnable} | {e.model for e in runnable}
        bad = [n for n in wanted if n not in known]
        if bad:
            raise ValueError(f"--nets {','.join(bad)}: not a runnable timm module or model of the catalog")
        runnable = [e for e in runnable if e.module in wanted or e.model in wanted]
    i, n = shard
    return runnable[i - 1::n]


def cached(cache: Path, module: str, targets: list[str], model: str = "") -> dict | None:
    """The net's cached result when it covers every requested target (and is of `model`, the
    catalog's current pick for the module, when given), else None."""
    f = cache / f"{module}.json"
    if not f.exists():
        return None
    try:
        res = json.loads(f.read_text())
    except ValueError:
        return None
    if model and (res.get("entry") or {}).get("model") != model:
        return None  # the catalog now picks another variant (e.g. a new timm release)
    return res if all(t in res.get("targets", {}) for t in targets) else None


def merged(old: dict | None, new: dict) -> dict:
    """`new` (a run of some targets) over the cached result `old` of the same net: cells of targets not
    run this time stay, and the net's wall time stays that of its run of every target."""
    if old is None or not set(new["targets"]) < set(old.get("targets", {})):
        return new
    rerun = {"targets": sorted(new["targets"]), "wall_s": new["wall_s"], "runs": new["runs"], "host": new.get("host"),
             "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    return {**old, "targets": {**old["targets"], **new["targets"]}, "rounding": new.get("rounding") or old.get("rounding"),
            "reruns": [*old.get("reruns", []), rerun]}


def faithful(c: dict | None) -> bool:
    """The artifact is as the int8 program (or fp32 net) says: it passed, or only its fp32 floors failed."""
    return c is not None and (c["status"] == "pass" or fail_cause(c) == "fp32 floors only")


def share(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f} %)" if n else "0/0"


def fail_cause(c: dict) -> str:
    """Why a cell did not pass, in three kinds: the artifact differs from the torch int8 simulation
    (end to end or a layer in isolation: an exporter's fault), only the fp32 floors failed (the int8
    program itself is far from fp32: quantization quality of a random-init net, not the artifact), or
    it did not export (refused / crash / timeout / killed)."""
    if c["status"] != "fail":
        return "no artifact"
    reason = c.get("reason") or ""
    # a stage that failed (prepare, capture, convert …) or a file the runtime cannot load: no artifact
    # to judge, whichever reference the verdict names first
    if " failed: " in reason or "cannot load the file" in reason:
        return "no artifact"
    if "torch-quant-sim:" in reason or "per-layer isolation:" in reason:
        return "artifact vs simulation"
    others = ("torch-after-passes:", "torch-int8-weights:", "source-model:", "no parity report", "no comparison",
              "unverified")
    if reason.startswith("torch-fp32:") and not any(o in reason for o in others):
        return "fp32 floors only"
    return "other"


def catalog_summary(entries: list, cache: Path, targets: list[str]) -> dict:
    """The summary of every cached net (whichever run or shard made it) for `targets`."""
    nets = {}
    for e in entries:
        if not e.skipped and (c := cached(cache, e.module, [], e.model)) is not None:
            nets[e.module] = {**c, "entry": dataclasses.asdict(e)}  # the catalog's current record of it
    per_target = {}
    for t in targets:
        cells = [n["targets"].get(t) for n in nets.values() if n["targets"].get(t)]
        entry = {"run": len(cells), "pass": sum(c["status"] == "pass" for c in cells),
                 "faithful": sum(faithful(c) for c in cells), "fail_causes": {}}
        for c in cells:
            if c["status"] != "pass":
                cause = fail_cause(c)
                entry["fail_causes"][cause] = entry["fail_causes"].get(cause, 0) + 1
        if is_int8(t):
            read = [c["ops"] for c in cells if isinstance(c.get("ops"), dict) and "float_ops" in c["ops"]]
            entry["artifacts_read"] = len(read)
            entry["float_ops_zero"] = sum(o["float_ops"] == 0 for o in read)
        per_target[t] = entry
    all_pass = [m for m, n in nets.items() if all((n["targets"].get(t) or {}).get("status") == "pass" for t in targets)]
    all_faithful = [m for m, n in nets.items() if all(faithful(n["targets"].get(t)) for t in targets)]
    walls = [n["wall_s"] for n in nets.values() if n.get("wall_s")]
    by_size: dict[int, list[float]] = {}
    for n in nets.values():
        if n.get("wall_s"):
            by_size.setdefault(n["entry"]["size"], []).append(n["wall_s"])
    runnable_by_size: dict[int, int] = {}
    for e in entries:
        if not e.skipped:
            runnable_by_size[e.size] = runnable_by_size.get(e.size, 0) + 1
    return {"nets": nets, "per_target": per_target, "all_targets_pass": all_pass, "all_targets_faithful": all_faithful,
            "skipped": {e.module: e.skipped for e in entries if e.skipped},
            "wall_s": {"nets": len(walls), "total": round(sum(walls), 1),
                       "mean": round(sum(walls) / len(walls), 1) if walls else None,
                       "max": max(walls) if walls else None,
                       "mean_by_input_side": {k: round(sum(v) / len(v), 1) for k, v in sorted(by_size.items())},
                       "runnable_by_input_side": dict(sorted(runnable_by_size.items()))}}


def rounding_lines(nets: dict, targets: list[str]) -> list[str]:
    """The fp32 floors failed vs the net's own rounding sensitivity (bench/rounding.py), as evidence."""
    import statistics

    int8 = [t for t in targets if is_int8(t)]

    def sens(n: dict) -> float | None:
        return (n.get("rounding") or {}).get("rel_l2")

    floors = [n for n in nets.values() if sens(n) is not None and any(
        (n["targets"].get(t) or {}).get("status") == "fail" and fail_cause(n["targets"][t]) == "fp32 floors only"
        for t in int8)]
    clean = [n for n in nets.values() if sens(n) is not None and all(
        (n["targets"].get(t) or {}).get("status") == "pass" for t in int8)]
    if not floors or not clean:
        return []
    def med(group: list) -> float:
        return statistics.median(sens(n) for n in group)

    return [(f"Nets with an int8 cell failing only the fp32 floors ({len(floors)}): the fp32 net fed only its "
             f"input rounded to int8 moves by a median rel-L2 of {med(floors):.3f}; nets whose int8 cells all "
             f"pass ({len(clean)}): {med(clean):.3f} (bench/rounding.py). A net that the rounding of its input "
             "alone moves that far cannot meet the floors in int8, however faithful the file; one that it does not "
             "move (the ViT family here) loses the accuracy in the int8 program itself: for DeiT-Ti the class-token "
             "readout (simulation rel-L2 0.469 vs fp32; 0.055 for the same weights read by average pooling — a "
             "random-init class token is a small row beside the patch rows under one per-tensor int8 scale)."),
            ""]


def write_catalog_markdown(data: dict, path: Path) -> None:
    targets, nets, s = data["targets"], data["nets"], data["summary"]
    runnable = data["catalog"]["runnable"]
    lines = ["# Coverage: the timm catalog × targets", "",
             "<!-- generated by bench/coverage.py --catalog timm; do not edit by hand -->", "",
             (f"Generated {data['generated']} (commands: Reproduce, below) on {data.get('host', '?')}; calibration on "
             f"{data['calib']}."), "",
             (f"The catalog (bench/timm_catalog.py, timm {data['catalog']['timm']}): {data['catalog']['modules']} model "
             f"modules, the smallest variant of each at or under {data['catalog']['cap'] / 1e6:g} M parameters "
             f"({runnable} runnable, {len(s['skipped'])} skipped below); random init, norms and BatchNorm statistics "
             f"from real photos (bench/timm_nets.py), input {data['catalog']['small']}² unless the model fixes its "
             "size. **Run so far: "
             f"{len(nets)} of {runnable} families** — the shares below are of the families run, not of the catalog."),
             "", ("Cells as in docs/coverage.md: `ok`/`FAIL` is edgeconv's parity verdict in the artifact's runtime, "
             "then steps vs the int8 simulation (`st`, int8 targets) or max |Δ|/range vs fp32 (float targets); "
             "`N fl` = float ops left in the int8 file (format reader); `N unv` = layers per-layer isolation "
             "could not judge alone."), "",
             "## Summary", "", ("Failures by kind (`fail_cause` in bench/coverage.py): *artifact vs simulation* = the artifact "
             "differs from the torch int8 simulation end to end or in a layer alone (an exporter's fault); *fp32 "
             "floors only* = only the checks against fp32 failed while the artifact matches the simulation (the int8 "
             "program itself is far from fp32: int8 quality of a random-init net); *no artifact* = refused / crash "
             "/ timeout; *other* = any other check. *Faithful* = the exporter's share: the artifact passed, or only "
             "its fp32 floors failed (it is the int8 program; the program is far from fp32)."), "",
             "| target | pass | faithful | float ops = 0 (int8 files read) | failures by kind |", "|---|---|---|---|---|"]
    for t in targets:
        pt = s["per_target"][t]
        fl = share(pt["float_ops_zero"], pt["artifacts_read"]) if "artifacts_read" in pt else ""
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(pt["fail_causes"].items())) or "—"
        lines.append(f"| `{t}` | {share(pt['pass'], pt['run'])} | {share(pt['faithful'], pt['run'])} | {fl} | {kinds} |")
    lines += ["", f"All {len(targets)} targets pass: {share(len(s['all_targets_pass']), len(nets))}; all "
              f"{len(targets)} faithful: {share(len(s['all_targets_faithful']), len(nets))}.", ""]
    lines += rounding_lines(nets, targets)
    w = s["wall_s"]
    if w["nets"]:
        per = ", ".join(f"{m:.0f} s at {k}²" for k, m in w["mean_by_input_side"].items())
        sides = ", ".join(f"{v} at {k}²" for k, v in w["runnable_by_input_side"].items())
        lines += [(f"Time (wall per net, all targets, nets run --jobs at a time as in the commands below): {w['total']:.0f} s for {w['nets']} nets here, "
                   f"{w['mean']:.0f} s a net on average (max {w['max']:.0f} s; by input: {per}). The {runnable} "
                   f"runnable families ({sides}) would take about {runnable * w['mean'] / 3600:.1f} h on this host "
                   "at the overall mean; nets at larger inputs cost more than the 64² mean."), ""]
    lines += ["## Families", "",
              "| module | model | M params | input | " + " | ".join(f"`{t}`" for t in targets) + " | wall s |",
              "|---|---|---:|---:|" + "---|" * len(targets) + "---:|"]
    for m, n in nets.items():
        e = n["entry"]
        row = []
        for t in targets:
            c = n["targets"].get(t)
            cell = fmt_cell(c)
            if c and c.get("unverified_layers"):
                cell += f", {len(c['unverified_layers'])} unv"
            row.append(cell)
        lines.append(f"| {m} | {e['model']} | {e['params'] / 1e6:.2f} | {e['size']}² | " + " | ".join(row)
                     + f" | {n['wall_s']:.0f} |")
    int8 = [t for t in targets if is_int8(t)]
    if int8:
        lines += ["", "## int8: the simulation vs fp32, and the artifact", "",
                  ("Per int8 target: the torch int8 simulation's relative L2 error vs fp32 (what int8 costs the net), "
                  "the artifact's top-1 agreement with fp32 on the held-out photos, and its float ops."), "",
                  ("Last column: the fp32 net fed only its input rounded to the int8 input grid (bench/rounding.py) — "
                   "rel-L2 / cosine / decisive top-1 against fp32. Every int8 model rounds its input first; where that "
                   "alone moves the net by tens of percent the net amplifies rounding (deep random-init nets do), and "
                   "no int8 model of it meets the fp32 floors, however faithful the file."), "",
                  "| module | " + " | ".join(f"`{t}` sim rel-L2 / top-1 / fl" for t in int8)
                  + " | fp32, input rounded: rel-L2 / cos / top-1 |",
                  "|---|" + "---|" * len(int8) + "---|"]
        for m, n in nets.items():
            row = []
            for t in int8:
                c = n["targets"].get(t) or {}
                rl = c.get("sim_rel_l2_vs_fp32")
                t1 = c.get("top1_vs_fp32")
                fl = (c.get("ops") or {}).get("float_ops")
                row.append(" / ".join(["—" if rl is None else f"{rl:.3f}", "—" if t1 is None else f"{t1:.2f}",
                                       "—" if fl is None else str(fl)]))
            r = n.get("rounding") or {}
            t1 = r.get("top1_decisive")
            row.append("—" if "rel_l2" not in r else
                       f"{r['rel_l2']:.3f} / {r['cosine']:.3f} / " + ("—" if t1 is None else f"{t1:.2f}"))
            lines.append(f"| {m} | " + " | ".join(row) + " |")
    lines += ["", "## Failures, refusals and crashes", ""]
    bad = [(m, t, n["targets"][t]) for m, n in nets.items() for t in targets
           if n["targets"].get(t) and n["targets"][t]["status"] != "pass"]
    for m, t, c in bad:
        extra = f" ({c['steps_vs_sim']:g} steps)" if c.get("steps_vs_sim") is not None else ""
        lines.append(f"- **{m} ({nets[m]['entry']['model']}) × {t}** — {c['status']}{extra}: {c.get('reason') or '?'}")
    if not bad:
        lines.append("None.")
    lines += ["", "## Float ops left in int8 artifacts", "", FLOAT_OPS_NOTE, "",
              "| module | target | float ops | requantize | float ops by op |", "|---|---|---:|---:|---|"]
    for m, n in nets.items():
        for t in int8:
            ops = (n["targets"].get(t) or {}).get("ops")
            if not ops:
                continue
            if "error" in ops:
                lines.append(f"| {m} | {t} | ? | ? | unreadable: {ops['error']} |")
            elif ops["float_ops"]:
                lines.append(f"| {m} | {t} | {ops['float_ops']} | {ops['requantize']} | {by_op(ops)} |")
    unv = [(m, t, c["unverified_layers"]) for m, n in nets.items() for t, c in n["targets"].items()
           if c.get("unverified_layers")]
    if unv:
        lines += ["", "## Layers per-layer isolation left unverified", ""]
        for m, t, layers in unv:
            lines.append(f"- **{m} × {t}** ({len(layers)}): " + "; ".join(layers[:6]) + (" …" if len(layers) > 6 else ""))
    hk = [(m, t, c["host_kernels"]) for m, n in nets.items() for t, c in n["targets"].items() if c.get("host_kernels")]
    if hk:
        lines += ["", "## Engines that disagree on this host", "",
                  "Cells whose verdict came from one engine while another computed the same file otherwise "
                  "(a warning in the manifest, not a failure): onnxruntime's fast kernels, or XNNPACK where the "
                  "TFLite builtin kernels gave the second opinion.", ""]
        for t in sorted({t for _, t, _ in hk}):
            cells = [(m, msg) for m, tt, msg in hk if tt == t]
            lines.append(f"- **{t}** ({len(cells)}), e.g. {cells[0][1]}")
            lines.append("  - " + "; ".join(f"{m}: {msg.split(' differ from the reference kernels ')[-1].split(':')[0]}"
                                            f" ({_host(nets[m], t)})" for m, msg in cells))
    lines += ["", "## Skipped modules", ""]
    lines += [f"- **{m}**: {why}" for m, why in s["skipped"].items()] or ["None."]
    lines += ["", "## Reproduce", "", "The runs whose nets are cached here, in order:", "", "```bash",
              *[f"HF_HUB_OFFLINE=1 {c}" for c in data.get("commands") or [data["command"]]], "```", "",
              ("Each net's result is cached in `bench/results/coverage-timm/<module>.json` (with the exact export "
              "commands, CALIB = the temporary folder of photo crops); a re-run skips cached nets (`--fresh` redoes "
              "them), `--shard I/N` splits the catalog across machines, `--limit N` runs the next N."), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _host(net: dict, target: str) -> str:
    """The CPU `target`'s cell ran on: its latest re-run's (`reruns` record hosts since 2026-12-07),
    else the net's first run's; the ISA flags in brackets."""
    runs = [r for r in net.get("reruns", []) if target in r.get("targets", ())]
    if runs:
        return runs[-1].get("host") or "a re-run's host, not recorded"
    return str(net.get("host") or "host not recorded")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", choices=("timm",), default=None,
                    help="run the smallest variant of every timm model module instead of the zoo")
    ap.add_argument("--nets", default="", help="comma-separated zoo family names (default: all): " + ",".join(FAMILIES)
                    + "; with --catalog timm: timm module or model names")
    ap.add_argument("--targets", default="", help="comma-separated targets (default: every target of `edgeconv list`)")
    ap.add_argument("--size", choices=("small", "full"), default="full", help="zoo nets' size")
    ap.add_argument("--jobs", type=int, default=1, help="nets exported in parallel")
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per export run")
    ap.add_argument("--out", type=Path, default=None, help=f"summary JSON (default {RESULTS.relative_to(ROOT)}, "
                    f"catalog: {CATALOG_RESULTS.relative_to(ROOT)})")
    ap.add_argument("--md", type=Path, default=None, help=f"markdown (default {DOC.relative_to(ROOT)}, "
                    f"catalog: {CATALOG_DOC.relative_to(ROOT)})")
    ap.add_argument("--work", type=Path, default=None, help="keep artifacts and logs here (default: a temp folder)")
    ap.add_argument("--fresh", action="store_true", help="zoo: drop entries of nets not run this time; "
                    "catalog: re-run nets already in the cache")
    ap.add_argument("--cache", type=Path, default=CATALOG_CACHE, help="catalog: one JSON per net")
    ap.add_argument("--shard", default="1/1", help="catalog: I/N runs nets I, I+N, … of the catalog")
    ap.add_argument("--limit", type=int, default=None, help="catalog: run only the first N nets not yet cached")
    args = ap.parse_args(argv)
    catalog = args.catalog is not None
    args.out = args.out or (CATALOG_RESULTS if catalog else RESULTS)
    args.md = args.md or (CATALOG_DOC if catalog else DOC)

    all_targets = list_targets()
    targets = [t for t in args.targets.split(",") if t] or all_targets
    bad = [t for t in targets if t not in all_targets]
    if bad:
        ap.error(f"unknown target(s) {', '.join(bad)}; choose from {', '.join(all_targets)}")
    if catalog:
        from bench.timm_catalog import CAP, SMALL, timm_version
        from bench.timm_catalog import catalog as timm_catalog

        try:
            shard = parse_shard(args.shard)
        except ValueError as e:
            ap.error(str(e))
        entries = timm_catalog()
        try:
            chosen = select_catalog(entries, args.nets, shard)
        except ValueError as e:
            ap.error(str(e))
        todo = [e for e in chosen if args.fresh or cached(args.cache, e.module, targets, e.model) is None]
        todo = todo[:args.limit] if args.limit is not None else todo
        nets = {e.module: e for e in todo}
    else:
        try:
            nets = {n: FAMILIES[n] for n in select(args.nets)}
        except ValueError as e:
            ap.error(str(e))

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
    command = "python bench/coverage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    data = {"generated": "", "command": command, "calib": calib_text, "targets": targets, "nets": {}}
    if catalog:
        # the cached nets may come from several runs (resumed, sharded): every command that ran nets
        try:
            old = json.loads(args.out.read_text()) if args.out.exists() else {}
            before = old.get("commands") or ([old["command"]] if old.get("command") else [])
        except ValueError:
            before = []
        data["commands"] = [c for c in before if c != command] + ([command] if nets else [])
    if not catalog:
        data.update(size=args.size, targets=all_targets if not args.targets else targets)
    if not catalog and args.out.exists() and not args.fresh:
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
        data["generated"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if catalog:
            summary = catalog_summary(entries, args.cache, targets)
            data["nets"] = summary.pop("nets")
            data["summary"] = summary
            data["catalog"] = {"timm": timm_version(), "modules": len(entries),
                               "runnable": sum(not e.skipped for e in entries), "cap": CAP, "small": SMALL}
            data["host"] = next((n["host"] for n in data["nets"].values() if n.get("host")), data.get("host"))
            args.out.write_text(json.dumps(data, indent=1, default=str) + "\n")
            write_catalog_markdown(data, args.md)
            return
        order = [n for n in FAMILIES if n in data["nets"]]
        data["nets"] = {n: data["nets"][n] for n in order}
        args.out.write_text(json.dumps(data, indent=1, default=str) + "\n")
        write_markdown(data, args.md)

    t0 = time.perf_counter()

    def one(name: str) -> None:
        ref = nets[name].ref if catalog else nets[name].ref(args.size)
        log(f"{name}: {ref} → {len(targets)} targets")
        try:
            res = run_net(name, ref, targets, args, work, log)
        except Exception as e:  # noqa: BLE001 — the bench's own bug for one net must not lose the others
            res = {"family": name, "ref": ref, "wall_s": 0.0, "runs": [],
                   "targets": {t: {"status": "crash", "reason": f"bench: {type(e).__name__}: {e}"} for t in targets}}
        if catalog:
            res["entry"] = dataclasses.asdict(nets[name])
            res["rounding"] = rounding_of(ref, args)
        else:
            fam = nets[name]
            res.update(task=fam.task, paper=fam.paper, watch=fam.watch)
        with lock:
            if catalog:
                res = merged(cached(args.cache, name, [], nets[name].model), res)
                args.cache.mkdir(parents=True, exist_ok=True)
                (args.cache / f"{name}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
            else:
                if res.get("host"):
                    data["host"] = res.pop("host")
                data["nets"][name] = res
            save()
        summary = ", ".join(f"{t}={fmt_cell(c)}" for t, c in res["targets"].items())
        log(f"{name}: {res['wall_s']:.0f}s  {summary}")

    with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, nets))
    if catalog:
        fill_rounding(entries, args.cache, args, log)
    data["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    save()
    log(f"wrote {args.out} and {args.md} in {data['bench_wall_s']:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
