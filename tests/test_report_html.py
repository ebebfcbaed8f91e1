"""`edgeconv report` / `export --report` / `gate --html`: one self-contained HTML page, opened in the
real browser (Debian's headless Chromium, installed by .ci/services.sh): every chart present and
drawn, no console error, nothing fetched, no horizontal scrolling on a phone-width window; a planted
bad layer is first in the sensitivity chart and marked in the divergence chart; bad input is one
line, exit 2."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeconv.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--calib-samples", "32", "--eval-samples", "48"]


def cli(*args, env=None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("needs Debian's chromium (bash .ci/services.sh installs it)")


# A probe put in front of a copy of the page (the report itself has no script): records errors and
# each chart's drawn size after load, into a <pre> that --dump-dom prints.
PROBE = """<script>
window.__errs=[];addEventListener('error',function(e){__errs.push(String(e.message||(e.target&&(e.target.src||e.target.href))||'error'))},true);
(function(){var ce=console.error;console.error=function(){__errs.push([].join.call(arguments,' '));ce.apply(console,arguments)}})();
addEventListener('load',function(){var r=[].map.call(document.querySelectorAll('figure.chart'),function(f){var s=f.querySelector('svg'),b=s?s.getBoundingClientRect():{width:0,height:0};return [f.dataset.chart,Math.round(b.width),Math.round(b.height)]});
var m=document.querySelector('main');var p=document.createElement('pre');p.id='probe';p.textContent=JSON.stringify({charts:r,listed:m?m.dataset.charts:'',errors:__errs,scrollWidth:document.documentElement.scrollWidth,innerWidth:innerWidth});document.body.appendChild(p)});
</script>"""
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--disable-background-networking", "--no-first-run", "--enable-logging=stderr", "--v=0"]


def browse(html_path: Path, tmp: Path, width: int = 412) -> dict:
    """Open the page in headless Chromium (no network), return the probe's findings plus console lines."""
    page = tmp / f"probe-{html_path.stem}.html"
    page.write_text(html_path.read_text().replace("<head>", "<head>" + PROBE, 1))
    r = subprocess.run([chromium(), *OFFLINE, f"--window-size={width},900", "--virtual-time-budget=5000",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the page did not load in chromium: {r.stderr[-2000:]}"
    found = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    found["console"] = [l for l in r.stderr.splitlines() if "CONSOLE" in l]
    return found


def screenshot(html_path: Path, png: Path, width: int = 412, height: int = 3000) -> None:
    subprocess.run([chromium(), *OFFLINE, f"--window-size={width},{height}", f"--screenshot={png}",
                    html_path.as_uri()], capture_output=True, text=True, timeout=120, check=True)


def assert_renders(html_path: Path, tmp: Path, expected: set[str]) -> dict:
    found = browse(html_path, tmp)
    drawn = {name for name, w, h in found["charts"] if w > 100 and h > 50}
    assert set(found["listed"].split()) == expected, found
    assert drawn == expected, found  # every chart present and laid out at a visible size
    assert found["errors"] == [] and found["console"] == [], found
    assert found["scrollWidth"] <= found["innerWidth"], found  # a phone scrolls down, never sideways
    return found


def assert_self_contained(text: str) -> None:
    assert "<script" not in text.lower() and "<link" not in text.lower() and "<iframe" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the report references a URL"
    assert "@import" not in text and not re.search(r"url\(\s*['\"]?https?:", text)


# --------------------------------------------------------------------------- the demo, end to end

@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """A real export (with --analyze and --report), a divergence file and two latency reports."""
    d = tmp_path_factory.mktemp("report") / "demo"
    r = cli("export", "-t", "tflite-int8", "--analyze", "--report", "-o", d, *FAST)
    assert r.exit_code == 0, r.output
    assert (d / "report.html").is_file() and f"report: {d / 'report.html'}" in r.output
    tfl = d / "edgeconv-demo-tflite-int8.tflite"
    r = cli("divergence", tfl, "--calib-samples", "32", "--samples", "4", "-o", d / "divergence.json")
    assert r.exit_code in (0, 1), r.output  # 1: a tensor past the threshold (still a good report)
    for device, name in (("host", "profile-host.json"), ("pixel", "profile-pixel.json")):
        r = cli("profile", tfl, "--device", device, "--runs", "12", "--warmup", "2", "--save", d / name)
        assert r.exit_code == 0, r.output
    return d


def test_report_on_a_demo_export_has_every_section(demo_out):
    r = cli("report", demo_out)
    assert r.exit_code == 0, r.output
    page = demo_out / "report.html"
    text = page.read_text()
    assert_self_contained(text)
    for section in ("summary", "artifacts", "delegates", "sensitivity", "divergence", "ranges", "latency", "timeline"):
        assert f'id="{section}"' in text, section
    assert 'id="gate"' not in text  # no gate results in the folder: no gate section
    assert "tflite-int8: pass" in text and "ai-edge-litert" in text  # a badge naming the engine
    assert "measured on this host" in text and "predicted" in text  # how each latency was obtained
    listed = re.search(r'data-charts="([^"]*)"', text).group(1).split()
    assert listed == ["delegates-tflite-int8", "sensitivity", "divergence", "ranges", "latency", "distribution", "timeline"]
    assert text.count("<svg") == len(listed)


def test_demo_report_renders_in_chromium(demo_out, tmp_path):
    cli("report", demo_out)
    assert_renders(demo_out / "report.html", tmp_path,
                   {"delegates-tflite-int8", "sensitivity", "divergence", "ranges", "latency", "distribution", "timeline"})
    png = tmp_path / "demo.png"
    screenshot(demo_out / "report.html", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_the_probe_catches_a_console_error(demo_out, tmp_path):
    """Negative control: the browser check does fail on a page with an error."""
    broken = tmp_path / "broken.html"
    broken.write_text((demo_out / "report.html").read_text().replace(
        "</main>", "</main><script>console.error('planted'); undefined_fn();</script>"))
    found = browse(broken, tmp_path)
    assert any("planted" in e for e in found["errors"]) and any("undefined_fn" in e for e in found["errors"])


def test_report_reads_explicit_files_kept_elsewhere(demo_out, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(demo_out / "edgeconv.json", bare / "edgeconv.json")
    r = cli("report", bare)
    assert r.exit_code == 0, r.output
    text = (bare / "report.html").read_text()
    assert 'id="artifacts"' in text and 'id="sensitivity"' not in text and 'id="latency"' not in text
    r = cli("report", bare, "--include", demo_out / "profile-host.json", "-o", tmp_path / "x.html")
    assert r.exit_code == 0, r.output
    assert 'id="latency"' in (tmp_path / "x.html").read_text()


# --------------------------------------------------------------------------- a planted bad layer

@pytest.fixture(scope="module")
def planted_out(tmp_path_factory):
    d = tmp_path_factory.mktemp("planted")
    r = cli("export", "--model", "zoo_planted:planted_spec", "-t", "tflite-int8", "--analyze", "-o", d, *FAST)
    assert r.exit_code in (0, 1), r.output  # 1: parity failed; the manifest is written either way
    r = cli("divergence", d / "planted-tflite-int8.tflite", "--model", "zoo_planted:planted_spec",
            "--calib-samples", "32", "--samples", "4", "-o", d / "divergence.json")
    assert r.exit_code in (0, 1), r.output
    r = cli("report", d)
    assert r.exit_code == 0, r.output
    return d


def _svg(text: str, chart: str) -> str:
    m = re.search(rf'<figure class="chart" id="chart-{chart}".*?</figure>', text, re.S)
    assert m, chart
    return m.group(0)


def test_planted_layer_is_first_in_sensitivity_and_marked_in_divergence(planted_out):
    text = (planted_out / "report.html").read_text()
    parity = json.loads((planted_out / "edgeconv.json").read_text())["artifacts"][0]["parity"]
    assert f"tflite-int8: {'pass' if parity['passed'] else 'fail'}" in text  # its badge says what the manifest says
    sens = _svg(text, "sensitivity")
    ticks = [(float(y), label) for y, label in re.findall(r'<text[^>]* y="([-\d.]+)"[^>]*>([^<]*)</text>', sens)
             if label in ("c1", "c2", "c3", "fc")]
    assert len(ticks) == 4 and min(ticks)[1] == "c2", ticks  # the top bar of the ranked chart
    div = _svg(text, "divergence")
    assert "most int8-sensitive: c2" in div  # the band over c2 along depth, named in the legend
    assert "Most sensitive: <b>c2</b>" in text
    ranges = _svg(text, "ranges")
    assert ">c2<" in ranges


def test_planted_report_renders_in_chromium(planted_out, tmp_path):
    assert_renders(planted_out / "report.html", tmp_path,
                   {"delegates-tflite-int8", "sensitivity", "divergence", "ranges", "timeline"})


# --------------------------------------------------------------------------- the gate report

def _gate_doc(breach: bool = True) -> dict:
    from edgeconv.gate.budgets import Measured, parse_budgets
    from edgeconv.gate.rules import evaluate
    from edgeconv.gate.shard import WHOLE, results_doc

    b = parse_budgets(f"""
[[budget]]
model = "m:a"
target = "tflite-int8"
device = "host"
p50_ms = {0.5 if breach else 5.0}
size_kb = 64
[[budget]]
model = "m:a"
target = "tflite-int8"
device = "pixel"
p50_ms = 2.0
""", "b.toml")
    m = {"m:a / tflite-int8 / host": Measured("m:a", "tflite-int8", "host", "ab" * 32, 30_000, p50_ms=1.0, p90_ms=1.3,
                                             method="measured-host", basis="measured on this host", parity_failures=0),
         "m:a / tflite-int8 / pixel": Measured("m:a", "tflite-int8", "pixel", "ab" * 32, 30_000, p50_ms=1.5,
                                              method="predicted", basis="predicted (uncalibrated)", parity_failures=0)}
    base = {k: v for k, v in m.items()}
    results = evaluate(b, m, base)
    return results_doc(b, WHOLE, b, results, m, base, "cd" * 32)


def test_gate_report_breaches_first_and_renders(tmp_path):
    from edgeconv.report_html import write_gate_report

    w = write_gate_report(_gate_doc(), tmp_path / "gate.html")
    text = w.path.read_text()
    assert_self_contained(text)
    assert "FAILED: 1 of 6 checks breached" in text
    rows = re.findall(r"<tr><td>(<span class=\"(?:bad|ok|skip)\">[^<]*</span>)", text)
    assert rows[0].endswith(">BREACH</span>") and all("BREACH" not in r for r in rows[1:])
    assert w.charts == ("gate", "baseline", "latency")
    assert_renders(w.path, tmp_path, set(w.charts))


def test_gate_html_from_the_cli_on_bad_options_writes_nothing(tmp_path):
    r = cli("gate", tmp_path / "missing.toml", "--html", tmp_path / "g.html")
    assert r.exit_code == 2 and not (tmp_path / "g.html").exists()


# --------------------------------------------------------------------------- bad input

def _one_line(r, *words):
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeconv: error: "), r.stderr
    assert "Traceback" not in r.output
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_bad_input_is_one_line_exit_2(tmp_path, demo_out):
    _one_line(cli("report", tmp_path / "nope"), "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line(cli("report", tmp_path / "empty"), "holds no edgeconv.json")
    (tmp_path / "file.txt").write_text("x")
    _one_line(cli("report", tmp_path / "file.txt"), "is not a folder")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "edgeconv.json").write_text("{not json")
    _one_line(cli("report", bad), "edgeconv.json", "not readable JSON")
    (bad / "edgeconv.json").write_text('{"model": "x"}')
    _one_line(cli("report", bad), "not an edgeconv manifest")
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(demo_out / "edgeconv.json", half / "edgeconv.json")
    (half / "analyze.json").write_text('{"sensitivity": {"model": "x"}}')
    _one_line(cli("report", half), "analyze.json", "incomplete")
    (half / "analyze.json").write_text("[1, 2")
    _one_line(cli("report", half), "analyze.json", "not readable JSON")
    (half / "analyze.json").unlink()
    lat = json.loads((demo_out / "profile-host.json").read_text())
    lat["p50_ms"] = "fast"
    (half / "profile-x.json").write_text(json.dumps(lat))
    _one_line(cli("report", half), "profile-x.json", "incomplete")
    (half / "profile-x.json").write_text('{"edgeconv_gate_results": 1, "results": []}')
    _one_line(cli("report", half), "profile-x.json", "incomplete")
    (half / "profile-x.json").unlink()
    _one_line(cli("report", half, "--include", tmp_path / "missing.json"), "missing.json", "does not exist")
    _one_line(cli("report", half, "-o", tmp_path / "no-such-dir" / "r.html"), "does not exist")


def test_help_stays_fast_and_does_not_import_matplotlib():
    code = ("import sys, time; t = time.perf_counter(); from edgeconv.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported by --help'\n"
            "print(time.perf_counter() - t, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert float(r.stderr.strip().splitlines()[-1]) < 1.0
    assert "report" in r.stdout
