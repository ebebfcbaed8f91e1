"""report.html: its size and the time to write it, for the embedded demo and a 224×224 MobileNetV2
(53 conv/linear layers, random weights), each folder filled the way a user fills it (export
--analyze, divergence -o, profile --save), plus the planted-bad-layer net and a gate run with one
breach (two shards, merged).

    python bench/report_bench.py                          → bench/results/report.json
    python bench/report_bench.py --screenshots docs/img   → also the PNGs in docs/img/
    python bench/report_bench.py --only demo              → re-measure one model, keep the others

Times: `write_s`, in process (gather + matplotlib + render + write; the first call includes
matplotlib's import, the second does not), and `cli_s`, the wall time of `edgeconv report` as a
user runs it (Python start-up and every import included). Screenshots come from Debian's headless
Chromium (`bash .ci/services.sh` installs it) with every host name unresolvable.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "HF_HUB_OFFLINE": "1"}

MNV2 = "examples.mobilenet_v2:mobilenet_v2"
GATE = """
[gate]
runs = 30
warmup = 3
calib_samples = 32
eval_samples = 64
out_dir = "{out}"

[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "host"
p50_ms = {p50}
p90_ms = 50
size_kb = 64
accuracy_drop = 1.0

[[budget]]
model = "edgeconv.demo:demo"
target = "onnx-int8"
device = "host"
p50_ms = 50
size_kb = 64

[[budget]]
model = "edgeconv.demo:demo"
target = "tflite-int8"
device = "pixel"
p50_ms = 5
"""


def edgeconv(*args: object, ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([PY, "-m", "edgeconv", *map(str, args)], env=ENV, cwd=ROOT, capture_output=True, text=True)
    if r.returncode not in ok:
        raise SystemExit(f"edgeconv {' '.join(map(str, args))} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def fill(name: str, out: Path) -> dict:
    """Export and the side files, as a user would run them; the seconds each took."""
    t = {}
    if name == "demo":
        t["export_s"] = edgeconv("export", "-t", "tflite-int8", "-t", "onnx-int8", "--analyze", "-o", out)
        arts = [out / "edgeconv-demo-tflite-int8.tflite", out / "edgeconv-demo-onnx-int8.onnx"]
        t["divergence_s"] = edgeconv("divergence", *arts, "-o", out / "divergence.json", ok=(0, 1))
        for a, dev in ((arts[0], "host"), (arts[1], "host"), (arts[0], "pixel")):
            edgeconv("profile", a, "--device", dev, "--runs", "50", "--save", out / f"profile-{a.suffix[1:]}-{dev}.json")
    elif name == "mobilenet-v2-224":
        t["export_s"] = edgeconv("export", "--model", MNV2, "-t", "tflite-int8", "--calib", "random", "--calib-samples",
                                 "16", "--eval-samples", "16", "--analyze", "-o", out, ok=(0, 1))
        art = out / "mobilenet-v2-224-tflite-int8.tflite"
        t["divergence_s"] = edgeconv("divergence", art, "--model", MNV2, "--calib", "random", "--calib-samples", "16",
                                     "--samples", "2", "-o", out / "divergence.json", ok=(0, 1))
        edgeconv("profile", art, "--device", "host", "--runs", "20", "--save", out / "profile-host.json")
        edgeconv("profile", art, "--device", "pixel", "--save", out / "profile-pixel.json")
    elif name == "planted":
        t["export_s"] = edgeconv("export", "--model", "zoo_planted:planted_spec", "-t", "tflite-int8", "-t", "onnx-int8",
                                 "--analyze", "--calib-samples", "64", "--eval-samples", "64", "-o", out, ok=(1,))
        arts = [out / "planted-tflite-int8.tflite", out / "planted-onnx-int8.onnx"]
        t["divergence_s"] = edgeconv("divergence", *arts, "--model", "zoo_planted:planted_spec", "--calib-samples", "64",
                                     "-o", out / "divergence.json", ok=(0, 1))
    return {k: round(v, 1) for k, v in t.items()}


def gate(work: Path) -> Path:
    """A baseline run, then two shards with one tight p50 budget, merged into gate.html."""
    toml = work / "gate.toml"
    toml.write_text(GATE.format(out=work / "gate-out", p50=50))
    edgeconv("gate", toml, "--write-baseline", work / "base.json")
    toml.write_text(GATE.format(out=work / "gate-out", p50=0.001))  # the one breach: p50 of the host row
    for i in (1, 2):
        edgeconv("gate", toml, "--shard", f"{i}/2", "--baseline", work / "base.json", "--save", work / f"s{i}.json",
                 ok=(0, 1))
    html = work / "gate.html"
    edgeconv("gate", "merge", work / "s1.json", work / "s2.json", "--html", html, ok=(1,))
    return html


def measure(folder: Path) -> dict:
    from edgeconv.report_html import write_report

    first = write_report(folder)
    second = write_report(folder)
    cli = edgeconv("report", folder)
    return {"size_bytes": second.size_bytes, "size_kb": round(second.size_bytes / 1024, 1), "charts": list(second.charts),
            "write_s_first": round(first.seconds, 2), "write_s": round(second.seconds, 2), "cli_s": round(cli, 2)}


def shoot(html: Path, png: Path, width: int) -> None:
    """Full-page screenshot: a tall window, then the empty page background below the footer cut off."""
    from PIL import Image, ImageChops

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Debian's chromium for screenshots: bash .ci/services.sh")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={width},9000", f"--screenshot={png}",
                    html.as_uri()], check=True, capture_output=True, timeout=120)
    im = Image.open(png).convert("RGB")
    bg = Image.new("RGB", im.size, im.getpixel((im.width - 1, im.height - 1)))
    box = ImageChops.difference(im, bg).getbbox()
    if box:
        im = im.crop((0, 0, width, min(im.height, box[3] + 16)))
    im.save(png, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--screenshots", type=Path, default=None, help="Write PNGs of the reports into this folder.")
    ap.add_argument("--only", choices=("demo", "mobilenet-v2-224", "planted"), default=None,
                    help="Re-measure one model; the others' entries in the results file are kept.")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    dest = ROOT / "bench" / "results" / "report.json"
    results: dict = {"host": __import__("platform").machine(), "cpus": os.cpu_count(), "models": {}}
    if args.only and dest.is_file():
        results = {**json.loads(dest.read_text()), "host": results["host"], "cpus": results["cpus"]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in (args.only,) if args.only else ("demo", "mobilenet-v2-224", "planted"):
            out = work / name
            prep = fill(name, out)
            results["models"][name] = {**measure(out), "prepare": prep}
            print(name, results["models"][name], flush=True)
        if args.only:
            dest.write_text(json.dumps(results, indent=2) + "\n")
            return
        html = gate(work)
        results["gate"] = {"size_kb": round(html.stat().st_size / 1024, 1)}
        if args.screenshots:
            d = args.screenshots
            d.mkdir(parents=True, exist_ok=True)
            shoot(work / "demo" / "report.html", d / "report-demo.png", 412)
            shoot(work / "demo" / "report.html", d / "report-demo-desktop.png", 1100)
            shoot(work / "planted" / "report.html", d / "report-planted.png", 412)
            shoot(html, d / "report-gate.png", 412)
    dest.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
