"""Predicted vs published placement: ONNX Runtime's QNN execution provider on the published nets we can build.

    pip install --no-deps qai-hub-models==0.65.0 timm==1.0.31     # perf.yaml files; timm via bench/timm_env.py
    python bench/placement_agreement.py [--nets resnet18,resnet50] [--work DIR --reuse]

qai-hub-models' perf.yaml records, per net, device and runtime, how many layers ran on the NPU, GPU
and CPU. Its `onnx` runtime is ONNX Runtime with the QNN execution provider: the delegate our
`qnn-ep` table (devices/delegates/qnn-ep.toml) describes. (Its `tflite` runtime goes through
Qualcomm's QNN TFLite delegate, which publishes no op table: no comparison is made for it.)

The published files themselves are not available offline. For each published conv net that timm
builds with the same architecture (torchvision's in qai-hub-models; timm's equivalent named below,
random-init, at the published input size) this exports `-t onnx-int8 -t onnx` with edgeconv (real
photos for calibration) and applies the qnn-ep table to each; the count of ops it leaves to the CPU
is compared with the published CPU+GPU layer count of the same net (w8a8 for onnx-int8, float for
onnx), on every published device. ONNX nodes and QNN layers are counted differently, so a count
matches where both are equal (in practice: both zero); "runs whole" agreement is reported too.

Writes bench/results/placement_agreement.json.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fit_costmodel import perf_root

RESULTS = ROOT / "bench" / "results" / "placement_agreement.json"
# published id -> (timm name, input size, what differs from the published torchvision net)
NETS = {
    "resnet18": ("resnet18", 224, ""),
    "resnet50": ("resnet50", 224, ""),
    "resnext50": ("resnext50_32x4d", 224, ""),
    "wideresnet50": ("wide_resnet50_2", 224, ""),
    "mobilenet_v2": ("mobilenetv2_100", 224, ""),
    "mobilenet_v3_large": ("mobilenetv3_large_100", 224, "timm's head keeps its conv_head before the classifier"),
    "mobilenet_v3_small": ("mobilenetv3_small_100", 224, "timm's head keeps its conv_head before the classifier"),
    "mnasnet05": ("mnasnet_050", 224, ""),
    "efficientnet_b0": ("efficientnet_b0", 224, ""),
    "regnet_y_800mf": ("regnety_008", 224, ""),
    "regnet": ("regnetx_032", 224, ""),
    "densenet121": ("densenet121", 224, ""),
    "convnext_tiny": ("convnext_tiny", 224, "timm's LayerNorm2d on NCHW vs torchvision's permute + LayerNorm"),
    "inception_v3": ("inception_v3", 224, ""),
}
# published precision -> our target
TARGETS = {"w8a8": "onnx-int8", "float": "onnx"}


def published(model: str) -> dict[str, dict[str, int]]:
    """{precision: {device: CPU+GPU layers}} of the onnx runtime runs with the NPU as primary unit."""
    import yaml

    doc = yaml.safe_load((perf_root() / model / "perf.yaml").read_text())
    out: dict[str, dict[str, int]] = {}
    for prec, pv in (doc.get("precisions") or {}).items():
        if prec not in TARGETS:
            continue
        for comp in pv.get("components", {}).values():
            for device, runtimes in (comp.get("performance_metrics") or {}).items():
                r = (runtimes or {}).get("onnx")
                if not isinstance(r, dict) or r.get("primary_compute_unit") != "NPU" or not r.get("layer_counts"):
                    continue
                lc = r["layer_counts"]
                out.setdefault(prec, {})[device] = int(lc.get("cpu", 0)) + int(lc.get("gpu", 0))
    return out


def export(name: str, out: Path, args) -> tuple[dict[str, Path], str]:
    if not (args.reuse and (out / "edgeconv.json").exists()):
        timm_name = NETS[name][0]  # bench.timm_nets builds at 224, the published size of every net here
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        cmd = [sys.executable, "-m", "edgeconv", "export", "--model", f"bench.timm_nets:{timm_name}",
               "-t", "onnx-int8", "-t", "onnx", "--calib", str(args.calib), "--calib-samples", str(args.calib_samples),
               "--eval-samples", str(args.eval_samples), "--out", str(out)]
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
        if not (out / "edgeconv.json").exists():
            return {}, ([ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()] or ["no output"])[-1][:300]
    m = json.loads((out / "edgeconv.json").read_text())
    return {a["target"]: out / a["path"] for a in m["artifacts"] if (out / a["path"]).is_file()}, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="", help="comma-separated published ids (default: all in NETS)")
    ap.add_argument("--calib", type=Path, default=Path("/work/photos"), help="a folder of real photos")
    ap.add_argument("--calib-samples", type=int, default=8)
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--timeout", type=int, default=1200)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeconv-placement"))
    ap.add_argument("--reuse", action="store_true", help="analyse the exports already in --work")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    nets = [n for n in args.nets.split(",") if n] or list(NETS)
    unknown = [n for n in nets if n not in NETS]
    if unknown:
        ap.error(f"unknown net(s) {', '.join(unknown)}; choose from {', '.join(NETS)}")
    from edgeconv.devices import delegates

    rows: dict = {}
    t0 = time.perf_counter()
    for name in nets:
        t1 = time.perf_counter()
        files, err = export(name, args.work / name, args)
        pub = published(name)
        row: dict = {"timm": NETS[name][0], "size": NETS[name][1], "differs": NETS[name][2], "error": err,
                     "export_s": round(time.perf_counter() - t1, 1), "compared": {}}
        for prec, target in TARGETS.items():
            if prec not in pub or target not in files:
                continue
            v = delegates.check(files[target], "qnn-ep")
            devices = pub[prec]
            counts = collections.Counter(devices.values())
            row["compared"][prec] = {
                "target": target, "predicted_cpu_ops": v.cpu_ops, "predicted_partitions": len(v.partitions),
                "predicted_ops": v.ops, "fallback_rules": sorted({f.rule for f in v.fallbacks}),
                "published_off_npu_layers": dict(sorted(devices.items())),
                "count_matches_devices": sum(c == v.cpu_ops for c in devices.values()), "devices": len(devices),
                "count_matches_most_devices": counts.most_common(1)[0][0] == v.cpu_ops,
                "whole_agrees_devices": sum((c == 0) == v.whole for c in devices.values())}
        rows[name] = row
        got = "; ".join(f"{p}: ours {c['predicted_cpu_ops']} CPU, published {sorted(set(c['published_off_npu_layers'].values()))}"
                        for p, c in row["compared"].items())
        print(f"{name}: {row['export_s']} s, {got or 'ERROR ' + err}", flush=True)
    pairs = [c for r in rows.values() for c in r["compared"].values()]
    summary = {"nets_compared": len([r for r in rows.values() if r["compared"]]), "net_precision_pairs": len(pairs),
               "count_matches_pairs": sum(c["count_matches_most_devices"] for c in pairs),
               "device_runs": sum(c["devices"] for c in pairs),
               "count_matches_device_runs": sum(c["count_matches_devices"] for c in pairs),
               "whole_agrees_device_runs": sum(c["whole_agrees_devices"] for c in pairs),
               "published_partitioned_pairs": sum(any(v for v in c["published_off_npu_layers"].values()) for c in pairs)}
    data = {"generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python bench/placement_agreement.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "published": "qai-hub-models==0.65.0 perf.yaml, runtime onnx (ONNX Runtime + QNN EP), primary unit NPU",
            "ours": "edgeconv export -t onnx-int8 -t onnx of timm's equivalent (random init), qnn-ep.toml predicted",
            "not_reproducible_here": "published nets outside NETS: torchvision-only architectures (googlenet, squeezenet1_1, "
                                     "shufflenet_v2), the larger ones left out for time (resnet101, resnext101, "
                                     "efficientnet_b4, efficientnet_v2_s, convnext_base), and every non-classifier",
            "summary": summary, "seconds": round(time.perf_counter() - t0, 1), "nets": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
