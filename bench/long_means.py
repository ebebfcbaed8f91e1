"""What writing a long int8 mean in two costs in accuracy (`calib.rewrites.long_means_in_two`).

XNNPACK's x86 int8 MEAN (ai-edge-litert 2.3.0) saturates over more than 8192 contiguous values on
CPUs without AVX-512; edgeconv writes such a mean (a GroupNorm(1)'s, over C·H·W) as a spatial mean,
then a mean over C, which adds one int8 rounding of the partial means. Per net and input size, with
the split and without (CONTIGUOUS_MEAN_LIMIT = None): edgeconv's int8 simulation (per-channel
weights, min-max, 32 real photo crops) against fp32 on 16 held-out crops — rel-L2, cosine, top-1
agreement — and how many means were split. With --export NETS, those nets are also exported to
tflite-int8 with the CLI both ways, and the verdict recorded: which engine judged the file, how far
XNNPACK on this host is from the reference kernels (`host_kernels`), each layer in isolation. With
--count, every runnable catalog family is captured at its catalog input and at 224² and rewritten as
the quantizer does, counting the reductions split (which families the rewrite touches).

    python bench/long_means.py [--nets poolformerv2_s12@64,...] [--export lowformer_b0@224,...] [--count]
        → bench/results/long_means.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NETS = ("poolformerv2_s12@64", "poolformer_s12@64", "poolformerv2_s12@224")
CALIB, EVAL = 32, 16


def _counting(rewrites, split: list) -> None:
    """Wrap long_means_in_two as REWRITES runs it, recording the nodes it splits into `split`."""
    original = rewrites.long_means_in_two

    def counting(gm):
        done = original(gm)
        split.extend(done)
        return done

    rewrites.REWRITES = tuple(counting if r is original else r for r in rewrites.REWRITES)


def measure(name: str, size: int, limit: int | None) -> dict:
    from bench.timm_nets import timm_spec
    from bench.vit_readout import sim_and_fp32
    from edgeconv.calib import rewrites
    from examples.zoo.images import batch

    spec = timm_spec(name, size)
    (before, rewrites.CONTIGUOUS_MEAN_LIMIT), kept = (rewrites.CONTIGUOUS_MEAN_LIMIT, limit), rewrites.REWRITES
    split: list = []
    _counting(rewrites, split)
    try:
        x = batch(CALIB + EVAL, size, size, spec.mean, spec.std, seed=0).astype(np.float32)
        out, ref = sim_and_fp32(spec, x, CALIB)
    finally:
        rewrites.CONTIGUOUS_MEAN_LIMIT, rewrites.REWRITES = before, kept
    cos = float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref)))
    return {"means_split": len(split), "sim_rel_l2_vs_fp32": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
            "sim_cosine_vs_fp32": cos, "sim_top1_vs_fp32": float((out.argmax(1) == ref.argmax(1)).mean())}


def count(sizes: tuple[int, ...] = (224,)) -> dict:
    """Per runnable catalog family, the reductions split at its catalog input and at `sizes`."""
    import torch

    from bench.timm_catalog import catalog
    from bench.timm_nets import timm_spec
    from edgeconv.calib import rewrites

    split: list = []
    before = rewrites.REWRITES
    _counting(rewrites, split)
    out = {}
    try:
        for e in (e for e in catalog(log=lambda *_: None) if e.model and not e.skipped):
            for size in sorted({e.size, *sizes}):
                split.clear()
                try:
                    spec = timm_spec(e.model, size)
                    gm = torch.export.export(spec.module.eval(), spec.example_inputs, strict=False).module()
                    rewrites.transform(gm, frozen=True)
                    got: int | str = len(split)
                except Exception as err:  # noqa: BLE001 — a net that does not run at this size: said, not counted
                    got = f"not run at {size}²: {type(err).__name__}"
                out.setdefault(e.module, {"model": e.model})[f"{size}"] = got
                print(e.module, size, got, flush=True)
    finally:
        rewrites.REWRITES = before
    return out


def export(name: str, size: int, limit: int | None, work: Path) -> dict:
    """tflite-int8 of the catalog stand-in through the CLI (calibration and parity on real photo
    crops), with the given limit; the verdict's engine, XNNPACK's deviation and the layer check."""
    from click.testing import CliRunner

    from edgeconv.calib import rewrites
    from edgeconv.cli import main
    from examples.zoo.images import write_folder

    calib = work / "calib"
    if not calib.is_dir():
        write_folder(calib, CALIB + EVAL, side=size)
    out = work / f"{name}-{size}-{limit}"
    before, rewrites.CONTIGUOUS_MEAN_LIMIT = rewrites.CONTIGUOUS_MEAN_LIMIT, limit
    try:
        res = CliRunner().invoke(main, ["export", "--model", f"bench.timm_nets:{name}@{size}", "-t", "tflite-int8",
                                        "--calib", str(calib), "--calib-samples", str(CALIB), "--eval-samples",
                                        str(EVAL), "-o", str(out)])
    finally:
        rewrites.CONTIGUOUS_MEAN_LIMIT = before
    parity = json.loads((out / "edgeconv.json").read_text())["artifacts"][0]["parity"]
    sim = next(d for d in parity["diffs"] if d["reference"] == "torch-quant-sim")
    hk = parity.get("host_kernels") or {}
    return {"exit": res.exit_code, "judged_by": parity["runtime"], "sim_max_steps": sim.get("max_steps"),
            "layers": {k: parity["layers"].get(k) for k in ("layers", "worst_steps", "passed")},
            "xnnpack_off_reference_steps": hk.get("max_steps"), "host_kernels_warning": hk.get("message")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help="timm names, each @input size")
    ap.add_argument("--export", default="", help="nets (name@size) to export to tflite-int8 both ways")
    ap.add_argument("--count", action="store_true", help="count the reductions split in every catalog family")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeconv-long-means"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "long_means.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from edgeconv.calib import rewrites
    from edgeconv.host import host_info

    torch.set_num_threads(1)
    host = host_info()
    res = {"command": "python bench/long_means.py " + " ".join(sys.argv[1:]),
           "host": f"{host.get('cpu', platform.machine())} ({host.get('isa', '?')})",
           "calibration": f"{CALIB} real photo crops, min-max", "held_out": EVAL,
           "limit": rewrites.CONTIGUOUS_MEAN_LIMIT, "nets": {}}
    for item in filter(None, args.nets.split(",")):
        name, size = item.split("@")
        res["nets"][item] = {"split": measure(name, int(size), rewrites.CONTIGUOUS_MEAN_LIMIT),
                             "whole": measure(name, int(size), None)}
        print(item, json.dumps(res["nets"][item]), flush=True)
    for item in filter(None, args.export.split(",")):
        name, size = item.split("@")
        res.setdefault("exports", {})[item] = {
            "split": export(name, int(size), rewrites.CONTIGUOUS_MEAN_LIMIT, args.work),
            "whole": export(name, int(size), None, args.work)}
        print(item, json.dumps(res["exports"][item]), flush=True)
    if args.count:
        counts = res["catalog_splits"] = count()
        res["catalog_touched"] = {k: {s: v for s, v in c.items() if isinstance(v, int) and v}
                                  for k, c in counts.items() if any(isinstance(v, int) and v for v in c.values())}
    args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
