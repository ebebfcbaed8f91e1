"""Times one .tflite or .onnx file in its real runtime and prints one JSON object.

This file is copied as-is onto a board (the ssh backend) and also run as a subprocess on this
host (the host backend), so both are measured by the same loop. It needs only the standard
library, numpy and the board's runtime (ai_edge_litert or tflite_runtime for .tflite,
onnxruntime for .onnx). Keep it that way: no edgeconv imports.

    python3 remote_runner.py MODEL --threads 4 --warmup 5 --runs 50 [--per-op] [--delegate xnnpack]
        [--pin 4,5,6,7] [--workdir DIR] [--deadline-s 300]

Exit codes: 0 ok (JSON on stdout), 2 bad input or missing runtime (message on stderr),
3 the controlling connection went away or the deadline passed (stopped early on purpose).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np


class Stop(Exception):
    """The run must end now: our ssh session died (we were re-parented) or the deadline passed."""


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so the peak we read is this run's.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kb() -> float:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 1024.0 if sys.platform == "darwin" else float(ru)  # bytes on macOS, KiB on Linux


def _random_input(shape, dtype, rng):
    shape = [max(int(d), 1) for d in shape]  # dynamic dims (-1/None) run at 1
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


class _Watch:
    """Raises Stop when the parent that launched us is gone or time is up."""

    def __init__(self, deadline_s: float) -> None:
        self.ppid = os.getppid()
        self.end = time.monotonic() + deadline_s

    def check(self) -> None:
        if os.getppid() != self.ppid:
            raise Stop("parent process went away (connection dropped)")
        if time.monotonic() > self.end:
            raise Stop("deadline passed")


def _import_tflite():
    try:
        from ai_edge_litert import interpreter
        return "ai-edge-litert", interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter  # older boards
            return "tflite-runtime", interpreter
        except ImportError:
            raise SystemExit(_fail("no TFLite runtime here: pip install ai-edge-litert"))


def _import_onnx():
    try:
        import onnxruntime
        return "onnxruntime", onnxruntime
    except ImportError:
        raise SystemExit(_fail("onnxruntime is not installed here: pip install onnxruntime"))


def _tflite(mod, args, rng, watch):
    kwargs = {"num_threads": args.threads}
    if args.delegate == "cpu":  # the reference kernels, XNNPACK off
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif args.delegate not in ("xnnpack", None):
        raise SystemExit(_fail(f"delegate {args.delegate} is not available to the TFLite Python runtime"))
    t0 = time.perf_counter()
    it = mod.Interpreter(model_path=args.model, **kwargs)
    it.allocate_tensors()
    load_ms = (time.perf_counter() - t0) * 1e3
    for d in it.get_input_details():
        it.set_tensor(d["index"], _random_input(d["shape"], d["dtype"], rng))
    note = ("per-op times are not available from the TFLite Python interpreter; "
            "use benchmark_model --enable_op_profiling on a device")
    used = "cpu (reference kernels)" if args.delegate == "cpu" else "xnnpack"
    return used, load_ms, it.invoke, None, note


def _onnx(ort, args, rng, watch):
    providers = ["CPUExecutionProvider"]
    if args.delegate == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif args.delegate not in ("cpu", "xnnpack", None):
        raise SystemExit(_fail(f"delegate {args.delegate} is not available to onnxruntime here"))

    def options(profile: bool):
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        if profile:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(args.workdir, "ort_profile")
        return so

    t0 = time.perf_counter()
    sess = ort.InferenceSession(args.model, sess_options=options(False), providers=providers)
    load_ms = (time.perf_counter() - t0) * 1e3
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(int32)": np.int32, "tensor(int64)": np.int64}
    feeds = {i.name: _random_input([d if isinstance(d, int) else 1 for d in i.shape],
                                   types.get(i.type, np.float32), rng) for i in sess.get_inputs()}

    def once():
        sess.run(None, feeds)

    def per_op(n: int) -> list[dict]:
        # A separate profiled session: profiling must not slow the timed runs.
        prof = ort.InferenceSession(args.model, sess_options=options(True), providers=providers)
        for _ in range(n):
            watch.check()
            prof.run(None, feeds)
        path = prof.end_profiling()
        try:
            with open(path) as f:
                events = json.load(f)
        finally:
            os.remove(path)
        return _ort_nodes(events, n)

    note = "onnxruntime profiler, from a separate profiled session (its overhead included)"
    return sess.get_providers()[0], load_ms, once, per_op, note


def _ort_nodes(events: list[dict], runs: int) -> list[dict]:
    """Average per-node kernel time from an onnxruntime profile (chrome-trace JSON, dur in us)."""
    total: dict[str, float] = {}
    kinds: dict[str, str] = {}
    order: list[str] = []
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        if node not in total:
            order.append(node)
            total[node] = 0.0
        total[node] += float(e.get("dur", 0))
        kinds[node] = e.get("args", {}).get("op_name", "")
    return [{"name": n, "op": kinds[n], "avg": total[n] / runs / 1e3, "unit": "ms"} for n in order]


def _fail(msg: str) -> int:
    print(msg, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--format", choices=("tflite", "onnx"), required=True, help="the runtime that loads the model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--per-op", action="store_true")
    p.add_argument("--delegate", default=None)
    p.add_argument("--pin", default="", help="comma-separated CPU ids to run on")
    p.add_argument("--workdir", default=None, help="where scratch files go (default: the model's folder)")
    p.add_argument("--deadline-s", type=float, default=600.0)
    args = p.parse_args(argv)
    args.workdir = args.workdir or os.path.dirname(os.path.abspath(args.model))
    if not os.path.isfile(args.model):
        return _fail(f"model {args.model} does not exist")
    with open(os.path.join(args.workdir, "runner.pid"), "w") as f:
        f.write(str(os.getpid()))
    if args.pin:
        try:
            os.sched_setaffinity(0, {int(c) for c in args.pin.split(",")})
        except (AttributeError, OSError, ValueError) as e:
            return _fail(f"cannot pin to CPUs {args.pin}: {e}")
    watch = _Watch(args.deadline_s)
    rng = np.random.default_rng(0)
    import importlib.metadata as md

    name, mod = _import_tflite() if args.format == "tflite" else _import_onnx()
    build = _tflite if args.format == "tflite" else _onnx
    try:
        # Peak memory is counted from here: the runtime is imported, the model not yet loaded.
        _reset_peak()
        base_kb = _status_kb("VmRSS") or _peak_rss_kb()
        used, load_ms, once, per_op, note = build(mod, args, rng, watch)
        t0 = time.perf_counter_ns()
        once()
        first_ms = (time.perf_counter_ns() - t0) / 1e6
        for _ in range(args.warmup):
            watch.check()
            once()
        samples = []
        for _ in range(args.runs):
            watch.check()
            t0 = time.perf_counter_ns()
            once()
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        peak_mb = max(_peak_rss_kb() - base_kb, 0.0) / 1024.0
        ops = per_op(min(args.runs, 20)) if (args.per_op and per_op) else []
    except Stop as e:
        print(f"runner stopped: {e}", file=sys.stderr)
        return 3
    out = {
        "runtime": name, "runtime_version": md.version(name), "delegate": used,
        "threads": args.threads, "warmup": args.warmup, "runs": args.runs,
        "samples_ms": samples, "load_ms": load_ms, "first_ms": first_ms,
        "peak_memory_mb": peak_mb, "per_op": ops, "per_op_note": note if args.per_op else "",
        "environment": {
            "machine": platform.machine(), "system": platform.system(), "release": platform.release(),
            "python": platform.python_version(), "numpy": np.__version__,
            "cpus": str(os.cpu_count()),
            "affinity": ",".join(map(str, sorted(os.sched_getaffinity(0)))) if hasattr(os, "sched_getaffinity") else "",
            "hostname": platform.node(),
        },
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
