"""Runs on a Mac: coremltools' MLModelBenchmarker on the Mac itself or on an attached iPhone.

Copied onto the Mac by the `apple` backend (over ssh) next to the .mlpackage, and printed back as one
JSON object. Needs macOS, Xcode command-line tools (for an iPhone: `xcrun devicectl`) and coremltools
>= 8.3 (`coremltools.models.ml_program.experimental.perf_utils`). Core ML prediction exists only on
macOS, so on any other system this stops at once with exit code 2 and says so.

    python3 apple_runner.py MODEL.mlpackage --compute-units ALL --runs 50 --warmup 1
        [--load-runs 3] [--iphone [--development-team TEAMID]] [--per-op]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


def measurement_to_dict(m) -> dict:
    """An MLModelBenchmarker.Measurement as plain JSON (samples in ms, and its own statistics)."""
    s = m.statistics
    stats = None if s is None else {"min": s.minimum, "max": s.maximum, "mean": s.average,
                                    "std": s.std_dev, "median": s.median}
    return {"samples_ms": [float(x) for x in m.samples], "stats": stats}


def op_to_dict(info) -> dict:
    """One OperationExecutionInfo. Its times are Core ML's estimates: the measured predict time
    split by the compute plan's per-op cost weights (coremltools documents this)."""
    usage = info.compute_device_usage
    unit = type(usage.preferred_compute_device).__name__ if usage is not None else ""
    stats = info.measurement.statistics
    return {"name": str(info.path), "op": info.spec.type,
            "avg": None if stats is None else stats.median, "unit": "ms",
            "compute_unit": unit, "estimated": True}


async def _bench(args) -> dict:
    import coremltools as ct
    from coremltools.models.ml_program.experimental.perf_utils import MLModelBenchmarker
    from coremltools.models.ml_program.experimental.remote_device import (
        AppSigningCredentials, Device, DeviceType)

    device, where = None, f"mac ({platform.machine()})"
    if args.iphone:
        phones = Device.get_connected_devices(DeviceType.IPHONE)
        if not phones:
            raise SystemExit(_fail("no iPhone is connected to this Mac (xcrun devicectl list devices)"))
        creds = AppSigningCredentials(development_team=args.development_team) if args.development_team else None
        device = await phones[0].prepare_for_model_debugging(credentials=creds)
        where = f"{phones[0].name} (iOS {phones[0].os_version})"
    model = ct.models.MLModel(args.model, compute_units=getattr(ct.ComputeUnit, args.compute_units))
    bench = MLModelBenchmarker(model=model, device=device)
    load = await bench.benchmark_load(iterations=args.load_runs)
    predict = await bench.benchmark_predict(iterations=args.runs, warmup=args.warmup > 0)
    ops = await bench.benchmark_operation_execution(iterations=min(args.runs, 10)) if args.per_op else []
    return {"runtime": "coreml", "runtime_version": ct.__version__, "ran_on": where,
            "compute_units": args.compute_units, "load": measurement_to_dict(load),
            "predict": measurement_to_dict(predict), "per_op": [op_to_dict(o) for o in ops],
            "environment": {"macos": platform.mac_ver()[0], "machine": platform.machine(),
                            "python": platform.python_version()}}


def _fail(msg: str) -> int:
    print(msg, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--compute-units", choices=COMPUTE_UNITS, default="ALL")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--load-runs", type=int, default=3)
    p.add_argument("--iphone", action="store_true")
    p.add_argument("--development-team", default="")
    p.add_argument("--per-op", action="store_true")
    args = p.parse_args(argv)
    if sys.platform != "darwin":
        return _fail(f"Core ML prediction needs macOS; this machine runs {platform.system()}")
    try:
        import coremltools  # noqa: F401
    except ImportError:
        return _fail("coremltools is not installed on the Mac: pip install coremltools")
    print(json.dumps(asyncio.run(_bench(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
