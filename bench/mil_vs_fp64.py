"""Is a Core ML verdict's distance from torch the MIL evaluator's or the net's? Op by op beside fp64.

A float artifact of a net that amplifies rounding lands wherever its own fp32 summation order takes
it. When the MIL evaluator (exporters/coreml/mil) is far from torch on such a net, either one of its
kernels computes less precisely than an fp32 runtime, or the evaluator's order is simply another
draw. This tells the two apart on the verdict's own held-out samples:

- each op's own error: the op in fp32 on its exact inputs (the same program run in fp64, rounded to
  fp32) against the op in fp64 on those inputs, as max |Δ| / max |y|. fp32 rounding is ~6e-8; a
  kernel in fp16 or a lossy formula shows as 1e-4 or more;
- where the program's fp32 run parts from its fp64 run: the ops after which the drift grows most;
- the scatter of fp32 itself: several fp32 summation orders (torch one sample at a time, as the
  verdict runs it; torch batched; torch without oneDNN; the MIL evaluator) against torch fp64, and
  against the verdict's torch fp32 in units of that one's own 1 − cosine (the verdict allows 4).

    python bench/mil_vs_fp64.py --model bench.timm_nets:efficientvit_m0@64 --package W/x.mlpackage --calib W/calib
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.timm_env, as bench/coverage.py


def fp64_program(program: Any) -> Any:
    """The same program with every fp32 value (inputs, constants, results) held in fp64."""
    up = {"fp32": "fp64"}
    return dataclasses.replace(
        program, input_dtypes=tuple(up.get(d, d) for d in program.input_dtypes),
        consts={k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v
                for k, v in program.consts.items()},
        steps=tuple(dataclasses.replace(s, out_dtypes=tuple(up.get(d, d) for d in s.out_dtypes)) for s in program.steps))


class _InFloat64:
    """The evaluator's kernels reading float operands in fp64 (they read them through `_f`, which
    rounds to fp32): a diagnostic's exact reference, restored on exit."""

    def __enter__(self) -> None:
        from edgeconv.exporters.coreml.mil import kernels

        self.saved = kernels._f
        kernels._f = lambda a: np.asarray(a, dtype=np.float64)

    def __exit__(self, *exc: Any) -> None:
        from edgeconv.exporters.coreml.mil import kernels

        kernels._f = self.saved


def _cast(v: Any, dtype: Any) -> Any:
    a = np.asarray(v)
    return a.astype(dtype) if a.dtype.kind == "f" else v


def _args(step: Any, exact: dict[str, Any], consts: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """The step's operands: the exact values rounded to fp32 (what an fp32 runtime holds), in `dtype`."""
    def get(name: str) -> Any:
        return _cast(_cast(exact[name] if name in exact else consts[name], np.float32), dtype)
    return {k: tuple(get(n) for n in v) if isinstance(v, tuple) else get(v) for k, v in step.inputs.items()}


def op_errors(program: Any, x: np.ndarray) -> list[tuple[float, float, int, str, str]]:
    """Per fp32 result: (own error, drift of the fp32 run from the fp64 run, step index, op type, name)."""
    from edgeconv.exporters.coreml.mil.kernels import OPS, run

    p64 = fp64_program(program)
    run32 = run(program, {program.inputs[0]: x}, keep=True)
    with _InFloat64():
        exact = run(p64, {program.inputs[0]: x.astype(np.float64)}, keep=True)
    rows = []
    for i, step in enumerate(program.steps):
        y32 = OPS[step.op_type](_args(step, exact, p64.consts, np.float32), step)
        with _InFloat64():
            y64 = OPS[step.op_type](_args(step, exact, p64.consts, np.float64), step)
        y32, y64 = (y32 if isinstance(y32, tuple) else (y32,)), (y64 if isinstance(y64, tuple) else (y64,))
        for name, dt, a, b in zip(step.outputs, step.out_dtypes, y32, y64):
            if dt != "fp32":
                continue
            b = np.asarray(b, dtype=np.float64)
            scale = float(np.abs(b).max()) or 1.0
            own = float(np.abs(np.asarray(a).astype(np.float32).astype(np.float64) - b).max()) / scale
            ref = exact[name]
            drift = float(np.abs(run32[name].astype(np.float64) - ref).max()) / (float(np.abs(ref).max()) or 1.0)
            rows.append((own, drift, i, step.op_type, name))
    return rows


def main() -> None:
    import torch

    from edgeconv import parity
    from edgeconv.config import CalibSpec, ExportOptions
    from edgeconv.exporters.coreml.mil.kernels import run
    from edgeconv.exporters.coreml.mil.program import load_program
    from edgeconv.models import load_model
    from edgeconv.pipeline import split_data

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--package", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--batches", type=int, default=1, help="further held-out batches of the folder, after the first")
    args = ap.parse_args()
    if "timm_nets" in args.model:
        from bench.timm_env import import_timm

        import_timm()
    spec = load_model(args.model)
    n = args.eval_samples * args.batches
    _, data = split_data(spec, ExportOptions(calib=CalibSpec(source=args.calib), eval_samples=n), False)
    program = load_program(args.package)
    net = spec.module.eval()
    net64 = copy.deepcopy(net).double()
    torch.set_num_threads(1)

    def each(f: Any, x: np.ndarray) -> np.ndarray:
        return np.concatenate([f(x[i:i + 1]) for i in range(len(x))])

    def torch32(x: np.ndarray, mkldnn: bool = True) -> np.ndarray:
        torch.backends.mkldnn.enabled = mkldnn
        try:
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()
        finally:
            torch.backends.mkldnn.enabled = True

    worst: dict[str, tuple[float, str]] = {}
    for b in range(args.batches):
        x = data.x[b * args.eval_samples:(b + 1) * args.eval_samples]
        with torch.no_grad():
            ref64 = each(lambda t: net64(torch.from_numpy(t).double()).numpy(), x)
        ref32 = each(torch32, x)
        own = 1 - parity.cosine(ref32, ref64)
        orders = {"torch fp32, a sample at a time (the verdict's)": ref32, "torch fp32, batched": torch32(x),
                  "torch fp32, oneDNN off": each(lambda t: torch32(t, False), x),
                  "MIL evaluator": each(lambda t: run(program, {program.inputs[0]: t})[program.outputs[0]], x)}
        print(f"batch {b} (samples {b * args.eval_samples}..{(b + 1) * args.eval_samples - 1}):")
        for what, y in orders.items():
            rel = np.abs(y - ref64).max() / parity.value_range(ref64)
            times = (1 - parity.cosine(y, ref32)) / own if own > 0 else float("nan")
            print(f"  {what:48s} vs fp64: max|Δ|/range {rel:.4f} cos {parity.cosine(y, ref64):.5f};  "
                  f"vs the verdict's fp32: 1 - cos = {times:.2f}x its own")
        for i in range(len(x)):
            rows = op_errors(program, x[i:i + 1])
            for own_err, _, idx, op, name in rows:
                if own_err > worst.get(op, (-1.0, ""))[0]:
                    worst[op] = (own_err, f"#{idx} {name} (sample {b * args.eval_samples + i})")
            jumps, before = [], 0.0
            for _, drift, idx, op, name in rows:
                if drift > 3 * max(before, 1e-6):
                    jumps.append(f"{op} {name} {before:.1g}->{drift:.1g}")
                before = max(before, drift)
            if rows[-1][1] > 1e-3:
                print(f"  sample {b * args.eval_samples + i}: fp32 run {rows[-1][1]:.3g} of max |y| from fp64; "
                      f"drift x3 at: {', '.join(jumps) or '-'}")
    print("each op's own error in fp32 (max |Δ| / max |y| on exact inputs), worst per op type:")
    for op, (err, where) in sorted(worst.items(), key=lambda t: -t[1][0]):
        print(f"  {op:16s} {err:.2g}  at {where}")


if __name__ == "__main__":
    main()
