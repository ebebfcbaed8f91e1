"""Inputs -> one self-contained HTML page: inline CSS, inline SVG charts, no script, no external
resource (it opens from a CI artifact with no network), one column that fits a phone screen.

Each `_section_*` returns None when its data is absent, so a section appears only when there is
something to show; the charts a page holds are listed on <main data-charts="…">.
"""
from __future__ import annotations

import html
import math
from typing import Any, Callable, Iterable, Sequence

from edgeconv.report_html import charts
from edgeconv.report_html.gather import Inputs, LatencyRow

CSS = """
:root{--ok:#2e7d32;--bad:#c62828;--warn:#ef6c00;--muted:#5f6368;--line:#e3e3e3}
*{box-sizing:border-box}
body{margin:0;background:#f6f7f8;color:#1b1b1b;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:980px;margin:0 auto;padding:10px}
header,section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:10px 0}
h1{font-size:1.3rem;margin:0 0 .3em;word-break:break-word}
h2{font-size:1.1rem;margin:0 0 .5em}
h3{font-size:.98rem;margin:.9em 0 .4em}
p{margin:.35em 0}
.muted{color:var(--muted);font-size:.88rem}
.badges{display:flex;flex-wrap:wrap;gap:6px;margin:.5em 0}
.badge{display:inline-flex;flex-direction:column;padding:4px 10px;border-radius:8px;color:#fff;font-weight:600;font-size:.9rem}
.badge small{font-weight:400;font-size:.75rem;opacity:.95}
.pass{background:var(--ok)}.fail{background:var(--bad)}.unverified{background:#757575}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}.skip{color:var(--muted)}
.warn{border-left:4px solid var(--warn);padding:4px 8px;background:#fff8e1;margin:.5em 0}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:.95rem;padding:2px 6px}
nav a{color:#1a5fb4;text-decoration:none}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.4em 0}
table{border-collapse:collapse;font-size:.86rem;min-width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#fafafa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;min-width:12em}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:.4em 0;font-size:.9rem}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;word-break:break-word}
code{font-size:.85em;word-break:break-all}
figure.chart{margin:10px 0}
figure.chart svg{width:100%;max-width:720px;height:auto;display:block}
figcaption{color:var(--muted);font-size:.85rem}
details{margin:.4em 0}summary{cursor:pointer;color:#1a5fb4}
footer{color:var(--muted);font-size:.8rem;padding:8px 4px 24px}
"""


def e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _num(v: float | None, fmt: str = ".4g", none: str = "n/a") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, fmt)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """rows hold HTML already escaped; a cell starting with '\\x00num' is right-aligned."""
    out = [f'<div class="scroll"><table class="{cls}"><thead><tr>'
           + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for c in row:
            if c.startswith("\x00num"):
                cells.append(f'<td class="num">{c[4:]}</td>')
            elif c.startswith("\x00wrap"):
                cells.append(f'<td class="wrap">{c[5:]}</td>')
            else:
                cells.append(f"<td>{c}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table></div>"


def N(text: str) -> str:  # noqa: N802  a numeric cell
    return "\x00num" + text


def W(text: str) -> str:  # noqa: N802  a wrapping cell
    return "\x00wrap" + text


class Page:
    """Collects sections and the charts drawn for them."""

    def __init__(self) -> None:
        self.charts: list[str] = []

    def chart(self, name: str, draw: Callable[[], str], caption: str) -> str:
        svg = draw()
        self.charts.append(name)
        return (f'<figure class="chart" id="chart-{name}" data-chart="{name}">{svg}'
                f"<figcaption>{caption}</figcaption></figure>")


# --- sections ------------------------------------------------------------------------------------

def _badge(a: Any) -> str:
    p = a.parity
    state = "unverified" if p is None else ("pass" if p.passed else "fail")
    engine = p.runtime if p is not None else "no parity check ran"
    return f'<span class="badge {state}">{e(a.target)}: {state}<small>{e(engine)}</small></span>'


def _section_summary(inp: Inputs, page: Page) -> str | None:
    m = inp.manifest
    if m is None:
        return None
    o = m.options or {}
    quant, calib, qat = o.get("quant") or {}, o.get("calib") or {}, o.get("qat") or {}
    c = m.calibration or {}
    opts = [("targets", ", ".join(o.get("targets", ()))),
            ("int8 weights", f"{quant.get('weights', '?')}, calibration {quant.get('method', '?')}"),
            ("calibration", f"{c.get('samples', quant.get('samples', '?'))} samples from {c.get('source', calib.get('source', '?'))}"
             + ("" if c.get("real", True) else " — NOT a real calibration (random data)")),
            ("held out", f"{c.get('eval_samples', o.get('eval_samples', '?'))} samples from {c.get('eval_source', '?')}"),
            ("--max-drop", _num(o.get("max_drop"), "g", "not set")),
            ("QAT", f"{qat.get('epochs')} epochs" if qat.get("epochs") else "no"),
            ("reference accuracy", _num(m.reference_accuracy * 100 if m.reference_accuracy is not None else None,
                                        ".2f", "no labels") + (" % (fp32 torch)" if m.reference_accuracy is not None else ""))]
    host = m.host or {}
    host_rows = [("cpu", f"{host.get('cpu', '?')} ({host.get('machine', '?')})"), ("ISA", host.get("isa", "?"))]
    if host.get("u8s8_saturates"):
        host_rows.append(("u8s8 saturates", host["u8s8_saturates"]))
    tools = ", ".join(f"{k} {v}" for k, v in sorted((m.tool_versions or {}).items()))
    return (f'<header id="summary"><h1>{e(m.model)}</h1>'
            f'<p class="muted">model sha256 <code title="{e(m.model_sha256)}">{e(m.model_sha256[:16])}…</code> · '
            f"edgeconv {e(m.edgeconv_version)}</p>"
            f'<div class="badges">{"".join(_badge(a) for a in m.artifacts)}</div>'
            + _kv(opts) + "<h3>host</h3>" + _kv(host_rows)
            + f'<p class="muted">tools: {e(tools)}</p></header>')


def _kv(rows: Iterable[tuple[str, Any]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows) + "</dl>"


def _section_artifacts(inp: Inputs, page: Page) -> str | None:
    m = inp.manifest
    if m is None or not m.artifacts:
        return None
    rows = []
    for a in m.artifacts:
        p = a.parity
        verdict = ('<span class="skip">unverified</span>' if p is None else
                   '<span class="ok">pass</span>' if p.passed else '<span class="bad">FAIL</span>')
        acc = p.accuracy * 100 if p is not None and p.accuracy is not None else None
        file = f"<code>{e(a.path)}</code>" if a.path else f'<span class="bad">not exported: {e(a.failure)}</span>'
        rows.append([e(a.target), file, N(f"{a.size_bytes / 1024:.1f} KB"),
                     N(_num(acc, ".2f") + (" %" if acc is not None else "")), verdict,
                     e(p.runtime if p else "—"), f'<code title="{e(a.sha256)}">{e(a.sha256[:12])}</code>'])
    out = ['<section id="artifacts"><h2>Artifacts</h2>',
           _table(("target", "file", "size", "accuracy", "parity", "checked in", "sha256"), rows)]
    for a in m.artifacts:
        if a.parity is None or not a.parity.diffs:
            continue
        comp, notes = [], []
        for d in a.parity.diffs:
            agree = _num(d.top1_agreement * 100 if d.top1_agreement is not None else None, ".1f", "—")
            if d.top1_agreement_decisive is not None:
                agree += f" ({d.top1_agreement_decisive * 100:.1f} of {d.decisive_samples} decisive)"
            comp.append([e(d.reference), N(_num(d.max_steps, ".3g", "—")), N(_num(d.max_rel, ".1e", "—")),
                         N(_num(d.cosine, ".5f", "—")), N(agree),  # None: nothing compared (unverified, not exported)
                         '<span class="ok">ok</span>' if d.passed else '<span class="bad">FAIL</span>'])
            unit = f" (steps of the {d.step_unit})" if d.step_unit else ""
            notes.append(f"<li>vs {e(d.reference)}{e(unit)}: "
                         + (f'<span class="bad">{e(d.reason)}</span>; ' if d.reason else "")
                         + f"checked {e('; '.join(d.checked) or 'nothing stated')}"
                         + (f' <span class="bad">{e(d.warning)}</span>' if getattr(d, "warning", "") else "") + "</li>")
        out += [f"<h3>{e(a.target)} — parity in {e(a.parity.runtime)}</h3>",
                _table(("against", "max steps", "max |Δ|/range", "cosine", "top-1 agree %", ""), comp),
                f'<ul class="muted">{"".join(notes)}</ul>']
    for a in m.artifacts:
        if a.float_layers:
            out.append(f"<p><b>{e(a.target)}</b> keeps in float: {e(', '.join(a.float_layers))}</p>")
        hk = a.parity.host_kernels if a.parity else None
        if hk is not None and hk.deviates:
            out.append(f'<p class="warn"><b>{e(a.target)}</b> host kernels ({e(hk.engine)}): {e(hk.message)}</p>')
        if a.weights:
            per_ch = sum(w.num_scales > 1 for w in a.weights)
            dtypes = ", ".join(sorted({w.dtype for w in a.weights}))
            out.append(f'<p class="muted">{e(a.target)}: {len(a.weights)} weight tensors ({e(dtypes)}), '
                       f"{per_ch} per-channel{'; ' + e(a.scales_from) if a.scales_from else ''}</p>")
    return "".join(out) + "</section>"


def _section_delegates(inp: Inputs, page: Page) -> str | None:
    if not inp.strips:
        return None
    out = [('<section id="delegates"><h2>How each accelerator runs it</h2>'
            '<p class="muted">Every op of the file in execution order, per delegate: measured = what the runtime '
            "on this host took (XNNPACK), predicted = the delegate's support table (devices/delegates/*.toml, "
            "each rule with its source). A red op stays on the CPU; its tooltip names the rule.</p>")]
    for target in dict.fromkeys(s.target for s in inp.strips):
        strips = [s for s in inp.strips if s.target == target]
        out.append(f"<h3>{e(target)}</h3>")
        if any(s.ops for s in strips):
            out.append(page.chart(f"delegates-{target}", lambda strips=strips, t=target: charts.delegate_strips(strips, f"delegates-{t}"),
                                  f"{e(target)}: green on the delegate, red CPU fallback; one bar per op."))
        rows = []
        for s in strips:
            firsts = [f"{o.label} [{o.rule}]" for o in s.ops if not o.on_delegate][:3]
            rows.append([e(s.delegate), e(s.how), e(s.title), N(str(len(s.ops)) if s.ops else "—"), N(str(s.partitions)),
                         N(str(s.cpu_ops) if s.ops else "—"),
                         '<span class="ok">yes</span>' if s.ops and not s.cpu_ops else
                         ('<span class="bad">no</span>' if s.ops else '<span class="skip">—</span>'),
                         W(e("; ".join(firsts) + (" …" if s.cpu_ops > 3 else "") if firsts else s.note or ""))])
        out.append(_table(("delegate", "how", "what", "ops", "partitions", "CPU ops", "runs whole", "first CPU ops"), rows))
        notes = [s.note for s in strips if s.note and s.ops]
        if notes:
            out.append('<ul class="muted">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    return "".join(out) + "</section>"


def _section_sensitivity(inp: Inputs, page: Page) -> str | None:
    s = inp.sensitivity
    if s is None or not inp.layers:
        return None
    shown = min(30, len(inp.layers))
    more = f"; {len(inp.layers) - shown} more in analyze.json" if len(inp.layers) > shown else ""
    out = ['<section id="sensitivity"><h2>Per-layer int8 sensitivity</h2>',
           f"<p>All layers int8: {e(s.metric)} <b>{s.err_all_quantized:.4g}</b>"
           + (f", top-1 agreement with float {s.top1_agreement_all:.3f}" if s.top1_agreement_all is not None else "")
           + f" on {s.samples} samples. Most sensitive: <b>{e(inp.layers[0].label)}</b>.</p>",
           page.chart("sensitivity", lambda: charts.sensitivity(inp.layers, s.err_all_quantized),
                      f"Output error with only this layer in int8 (red: the most sensitive; purple: kept in float "
                      f"by --max-drop). Dashed: every layer int8. {shown} of {len(inp.layers)} layers{more}.")]
    fb = inp.fallback
    if fb:
        kept = ", ".join(m or n for n, m in zip(fb.get("float_nodes", ()), fb.get("float_modules", ()))) or "none needed"
        out.append(f"<p>--max-drop {fb.get('max_drop')} ({e(fb.get('metric'))}): float {_num(fb.get('float_score'))}, "
                   f"int8 {_num(fb.get('int8_score'))}, with float layers {_num(fb.get('final_score'))}; "
                   f"kept in float: <b>{e(kept)}</b></p>")
    rows = [[N(str(i)), e(r.label), e(r.op), N(f"{r.err_only_quantized:.4g}"), N(f"{r.gain_if_float:.3g}"),
             "float" if r.kept_float else "int8"] for i, r in enumerate(inp.layers[:10], 1)]
    out.append("<details><summary>top layers as numbers</summary>"
               + _table(("#", "layer", "op", "only-int8 error", "gain if float", "kept"), rows) + "</details>")
    return "".join(out) + "</section>"


def _section_divergence(inp: Inputs, page: Page) -> str | None:
    if not inp.drift:
        return None
    threshold = max(d.threshold for d in inp.drift)
    sensitive = inp.layers[0].label if inp.layers else None
    on_axis = sensitive is not None and any(sensitive in d.layers for d in inp.drift)
    lines = []
    for d in inp.drift:
        if d.first is None:
            worst = max(d.steps, default=0.0)
            lines.append(f"<li>{e(d.label)} (<code>{e(d.file)}</code>): {d.matched} int8 tensors compared; none drifts more than "
                         f"{d.threshold:g} steps (worst {worst:g})</li>")
        else:
            lines.append(f'<li>{e(d.label)} (<code>{e(d.file)}</code>): <span class="bad">first drift at {e(d.layers[d.first])}</span> '
                         f"({d.steps[d.first]:g} steps; {d.matched} tensors compared)</li>")
    note = ""
    if on_axis:
        note = (f" Shaded: <b>{e(sensitive)}</b>, the most int8-sensitive layer — where the artifacts follow "
                "the simulation there, the loss is int8 itself, not a converter.")
    elif sensitive is not None:
        note = f" The most int8-sensitive layer, <b>{e(sensitive)}</b>, has no int8 output compared here (fused)."
    return ('<section id="divergence"><h2>Cross-format divergence</h2>'
            + page.chart("divergence", lambda: charts.divergence(inp.drift, threshold, sensitive if on_axis else None),
                         "Largest difference from the torch quantized simulation, in int8 steps, per tensor along "
                         f"the network; circled: the first tensor past {threshold:g} steps.{note}")
            + f"<ul>{''.join(lines)}</ul></section>")


def _section_ranges(inp: Inputs, page: Page) -> str | None:
    if not inp.layers:
        return None
    worst = max(inp.layers, key=lambda r: r.weight_spread if math.isfinite(r.weight_spread) else 0.0)
    return ('<section id="ranges"><h2>Weight and activation ranges</h2>'
            + page.chart("ranges", lambda: charts.ranges(inp.layers),
                         "Left: largest over median per-output-channel weight range (per-tensor int8 leaves the "
                         "small channels few levels past ~10×, dotted). Right: each layer's int8 output range. "
                         "Layers in sensitivity order.")
            + f"<p>Widest weight spread: <b>{e(worst.label)}</b> {worst.weight_spread:.3g}× "
            f"(max |w| {worst.weight_max_abs:.3g}).</p></section>")


def _section_latency(inp: Inputs, page: Page) -> str | None:
    rows: Sequence[LatencyRow] = inp.latency
    if not rows:
        return None
    table = [[e(r.label), e(r.device), e(_how(r)), N(f"{r.p50_ms:.4g}"), N(_num(r.p90_ms, ".4g", "—")),
              N(str(len(r.samples)) if r.samples else "—"), e(r.runtime or "—")]
             + ([e(r.source)] if any(x.source for x in rows) else []) for r in rows]
    out = ['<section id="latency"><h2>Latency</h2>',
           page.chart("latency", lambda: charts.latency(rows),
                      "p50 (bar) and p90 (whisker) per artifact and device; colour says how the number was "
                      "obtained — a prediction is one number, with no p90."),
           _table(("artifact", "device", "how obtained", "p50 ms", "p90 ms", "runs", "runtime")
                  + (("from",) if any(x.source for x in rows) else ()), table)]
    bases = {r.how for r in rows if r.how != _how(r)}
    if bases:
        out.append('<ul class="muted">' + "".join(f"<li>{e(b)}</li>" for b in sorted(bases)) + "</ul>")
    if any(r.samples for r in rows):
        out.append(page.chart("distribution", lambda: charts.distribution(rows),
                              "Every timed run: box = quartiles, red = median."))
    for r in rows:
        if r.slowest:
            ops = [[e(op), e(name), N(f"{t:.4g}"), e(unit)] for op, name, t, unit in r.slowest]
            out.append(f"<details><summary>slowest ops: {e(r.label)} @ {e(r.device)}</summary>"
                       + _table(("op", "name", "time", "unit"), ops) + "</details>")
    return "".join(out) + "</section>"


def _how(r: LatencyRow) -> str:
    """The short form of how a number was obtained; the basis of a prediction is listed below the table."""
    return r.how.split(" (", 1)[0] if r.method == "predicted" else r.how


def _section_sparsity(inp: Inputs, page: Page) -> str | None:
    """The --sparsity table (`export --sparsity a,b,c [--prune-epochs N]`) as a trade-off chart."""
    p = getattr(inp.manifest, "pruning", None) if inp.manifest is not None else None
    if p is None or not p.levels:
        return None
    metric = p.levels[0].metric
    dense = p.levels[0].score + p.levels[0].drop
    rows = [[N(f"{lv.sparsity:.0%}"), e(lv.method), N(f"{100 * lv.score:.2f}"), N(f"{100 * lv.drop:.2f}"),
             N(f"{lv.zeros_1x1:.1%}"), N(f"{lv.predicted_speedup:.2f}×"), N(f"{lv.seconds:.1f}"),
             "exported" if lv.exported else ""] for lv in p.levels]
    return ('<section id="sparsity"><h2>Sparsity trade-off</h2>'
            + page.chart("sparsity", lambda: charts.sparsity(p.levels, metric, dense),
                         f"Held-out {e(metric)} of each pruned level against the speed-up XNNPACK's sparse path is "
                         "<b>predicted</b> to give on ARM — no ARM device measured it. Dashed: the dense model.")
            + _table(("sparsity", "method", f"{metric} %", "drop (points)", "1x1 zeros",
                      "speed-up (predicted)", "s", ""), rows)
            + f'<p>Exported: {p.chosen:.0%} — {e(p.why)}.</p><p class="muted">{e(p.speedup_basis)}</p></section>')


def _section_timeline(inp: Inputs, page: Page) -> str | None:
    if not inp.stages:
        return None
    notes = [[e(s.stage), N(f"{s.seconds:.3f}"), W(e("; ".join(s.notes) or "—"))] for s in inp.stages]
    return ('<section id="timeline"><h2>Export timeline</h2>'
            + page.chart("timeline", lambda: charts.timeline(inp.stages),
                         "Each stage of the export, in order, from the manifest's stage records.")
            + "<details><summary>stage notes</summary>" + _table(("stage", "s", "notes"), notes)
            + "</details></section>")


def gate_order(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Breaches first, then checks within budget, then uncompared ones; file order within each."""
    def rank(r: dict[str, Any]) -> int:
        return 0 if not r["passed"] else (2 if r.get("value") is None else 1)
    return sorted(results, key=rank)


def common_model(names: Iterable[str]) -> str:
    """The model every 'model / target / device' name shares ('' if they differ): said once, not per row."""
    models = {n.split(" / ", 1)[0] for n in names}
    return models.pop() if len(models) == 1 else ""


def _strip(name: str, model: str) -> str:
    return name[len(model) + 3:] if model and name.startswith(model + " / ") else name


def _section_gate(inp: Inputs, page: Page) -> str | None:
    doc = inp.gate
    if doc is None:
        return None
    results = gate_order(doc.get("results", []))
    bad = [r for r in results if not r["passed"]]
    verdict = (f'<span class="badge fail">FAILED: {len(bad)} of {len(results)} checks breached</span>' if bad else
               f'<span class="badge pass">passed: {len(results)} of {len(results)} checks within budget</span>')
    b = doc.get("budgets", {})
    shard = doc.get("shard", {})
    src = f"budgets <code>{e(b.get('path', '?'))}</code> (sha256 {e(str(b.get('sha256', ''))[:12])})"
    if inp.gate_files:
        src += f", merged from {len(inp.gate_files)} shard results: " + ", ".join(f"<code>{e(f)}</code>" for f in inp.gate_files)
    elif shard.get("count", 1) > 1:
        src += f", shard {shard.get('index')}/{shard.get('count')} ({len(shard.get('keys', []))} budgets)"
    model = common_model(r["name"] for r in results)
    out = [f'<section id="gate"><h2>Gate</h2><div class="badges">{verdict}</div>'
           + (f"<p>model <b>{e(model)}</b></p>" if model else "") + f'<p class="muted">{src}</p>']
    ratio = []
    for r in results:
        v, lim = r.get("value"), r["limit"]
        if v is None:
            continue
        if r["metric"].startswith("min_"):  # a floor (gate.budgets.LOWER_BOUNDS): limit / value, past 1 = breach
            q = (lim / v) if v > 0 else math.inf
        else:
            q = (v / lim) if lim > 0 else (0.0 if v <= 0 else math.inf)
        ratio.append((f"{_strip(r['name'], model)} · {r['metric']}", q, bool(r["passed"])))
    if ratio:
        out.append(page.chart("gate", lambda: charts.gate(ratio),
                              "Each check's value over its limit: past the line is a breach (red). "
                              "A regression check's value is % slower than the baseline, its limit the % allowed."))
    rows = []
    for r in results:
        mark = ('<span class="bad">BREACH</span>' if not r["passed"] else
                '<span class="skip">skip</span>' if r.get("value") is None else '<span class="ok">ok</span>')
        what = (f"<b>{e(_strip(r['name'], model))}</b> · {e(r['metric'])}"
                f'<br><span class="muted">{e(r.get("message", ""))}</span>')
        rows.append([mark, W(what), N(_num(r.get("value"))), N(f"{r['limit']:g}")])
    out.append(_table(("", "check (breaches first)", "value", "limit"), rows))
    base, measured = doc.get("baseline") or {}, doc.get("measured", {})
    cmp_rows = []
    for r in results:
        if r["metric"] != "regression_pct" or r.get("value") is None:
            continue
        now, then = measured.get(r["name"], {}).get("p50_ms"), base.get(r["name"], {}).get("p50_ms")
        if now is not None and then:
            cmp_rows.append((_strip(r["name"], model), float(now), float(then), bool(r["passed"])))
    if cmp_rows:
        out.append(page.chart("baseline", lambda: charts.baseline(cmp_rows),
                              "p50 of this run against the baseline's, like with like (a prediction is never "
                              "compared with a measurement)."))
    elif doc.get("baseline") is None:
        out.append('<p class="muted">No baseline compared (run with --baseline FILE).</p>')
    return "".join(out) + "</section>"


SECTIONS = (("summary", _section_summary), ("gate", _section_gate), ("artifacts", _section_artifacts),
            ("delegates", _section_delegates),
            ("sensitivity", _section_sensitivity), ("divergence", _section_divergence), ("ranges", _section_ranges),
            ("sparsity", _section_sparsity), ("latency", _section_latency), ("timeline", _section_timeline))
TITLES = {"gate": "gate", "artifacts": "artifacts", "delegates": "delegates", "sensitivity": "sensitivity",
          "divergence": "divergence", "ranges": "ranges", "sparsity": "sparsity", "latency": "latency",
          "timeline": "timeline"}


def render(inp: Inputs) -> str:
    page = Page()
    parts = [(name, fn(inp, page)) for name, fn in SECTIONS]
    present = [(name, body) for name, body in parts if body is not None]
    nav = ('<nav aria-label="sections">'
           + "".join(f'<a href="#{n}">{TITLES[n]}</a>' for n, _ in present if n in TITLES) + "</nav>")
    body = [text for _, text in present]
    if inp.manifest is None:  # a gate report: its own header
        body.insert(0, f'<header id="summary"><h1>{e(inp.title)}</h1></header>')
    body.insert(1, nav)
    from edgeconv import __version__

    foot = [f"edgeconv {e(__version__)} report; everything is inline, nothing is fetched."]
    if inp.read:
        foot.append("Read: " + ", ".join(f"<code>{e(p)}</code>" for p in inp.read) + ".")
    if inp.skipped:
        foot.append("Skipped (not an edgeconv result): " + ", ".join(f"<code>{e(p)}</code>" for p in inp.skipped) + ".")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>edgeconv report — {e(inp.title)}</title><style>{CSS}</style></head>"
            f'<body><main data-charts="{" ".join(page.charts)}">' + "".join(body)
            + f"<footer>{' '.join(foot)}</footer></main></body></html>\n")
