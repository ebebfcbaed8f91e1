"""Charts as inline SVG strings, drawn with matplotlib's object API (no pyplot: no global figure
state) and its SVG backend. matplotlib is imported inside `_figure`, so importing this module (and
`edgeconv --help`) costs nothing.

Every chart takes plain data (rows of numbers and names, gathered by `gather`) and returns the
`<svg>` element, its ids prefixed with the chart's name so several charts live in one page, its
size left to the page's CSS (the viewBox keeps the aspect ratio: it scales down to a phone).
Text stays text (`svg.fonttype: none`): small files, sharp at any zoom, and searchable.
"""
from __future__ import annotations

import contextlib
import io
import math
import re
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    from edgeconv.report_html.gather import (
        DelegateStrip,
        DriftLine,
        LatencyRow,
        LayerRow,
        StageRow,
    )

OK, BAD, WARN, BLUE, FLOAT, GREY = "#2e7d32", "#c62828", "#ef6c00", "#1f77b4", "#7b1fa2", "#9e9e9e"
WIDTH_IN = 5.0  # ~480 CSS px at 100 %: about a phone screen, so fonts stay readable scaled down
_RC = {"svg.fonttype": "none", "svg.hashsalt": "edgeconv", "font.size": 9.5, "axes.titlesize": 10.5,
       "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
       "axes.axisbelow": True, "font.family": ["DejaVu Sans", "sans-serif"]}


@contextlib.contextmanager
def _figure(height_in: float, ncols: int = 1, **kw: Any) -> Iterator[tuple[Any, Any]]:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN, max(1.6, height_in)), layout="constrained")
        axes = fig.subplots(1, ncols, **kw)
        yield fig, axes


def _svg(fig: Any, name: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE: inline SVG needs neither
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    prefix = f"{name}-"
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    text = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#{prefix}{m.group(1)}"', text)
    # the page sizes the chart; the viewBox keeps its proportions
    text = re.sub(r'^<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1', text, count=1)
    return text.replace("<svg", f'<svg role="img" aria-label="{name} chart" class="chart-svg"', 1).strip()


def _short(name: str, n: int = 34) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


# --- sensitivity --------------------------------------------------------------------------------

def sensitivity(layers: Sequence["LayerRow"], err_all: float, top: int = 30) -> str:
    """Ranked horizontal bars: the output error with only this layer in int8; layers kept in float
    by --max-drop in another colour and labelled."""
    rows = list(layers)[:top]
    with _figure(0.6 + 0.24 * len(rows)) as (fig, ax):
        y = list(range(len(rows)))[::-1]
        vals = [max(r.err_only_quantized, 0.0) for r in rows]
        colors = [FLOAT if r.kept_float else (BAD if i == 0 else BLUE) for i, r in enumerate(rows)]
        ax.barh(y, vals, color=colors, height=0.7)
        ax.set_yticks(y, [_short(r.label) + ("  (kept float)" if r.kept_float else "") for r in rows])
        ax.axvline(err_all, color=GREY, linestyle="--", linewidth=1, label=f"every layer int8: {err_all:.3g}")
        ax.legend(loc="lower right", fontsize=8, frameon=True, framealpha=0.9)
        ax.set_xlabel("relative output error with only this layer in int8")
        ax.set_title("int8 sensitivity, most sensitive first")
        ax.grid(axis="y", visible=False)
        ax.set_ylim(-0.6, len(rows) - 0.2)
        return _svg(fig, "sensitivity")


# --- weight and activation ranges ---------------------------------------------------------------

def ranges(layers: Sequence["LayerRow"], top: int = 30) -> str:
    """Left: per-channel weight range spread (max / median over output channels of max|w|, log
    scale); right: the layer's int8 output activation range."""
    rows = list(layers)[:top]
    with _figure(0.8 + 0.24 * len(rows), ncols=2, sharey=True) as (fig, (left, right)):
        y = list(range(len(rows)))[::-1]
        spread = [r.weight_spread if r.weight_spread and math.isfinite(r.weight_spread) else 1.0 for r in rows]
        left.barh(y, spread, color=[BAD if s >= 100 else (WARN if s >= 10 else BLUE) for s in spread], height=0.7)
        left.set_xscale("log")
        left.axvline(10, color=WARN, linestyle=":", linewidth=1)
        left.set_yticks(y, [_short(r.label, 24) for r in rows])
        left.set_xlabel("max / median channel (×)")
        left.set_title("weight spread")
        lo = [r.act_min if math.isfinite(r.act_min) else 0.0 for r in rows]
        hi = [r.act_max if math.isfinite(r.act_max) else 0.0 for r in rows]
        right.barh(y, [h - low for low, h in zip(lo, hi)], left=lo, color=BLUE, alpha=0.75, height=0.7)
        widths = sorted(h - low for low, h in zip(lo, hi))
        if widths and widths[-1] > 100 * max(widths[len(widths) // 2], 1e-9):  # one range dwarfs the rest
            right.set_xscale("symlog", linthresh=1.0)
        right.axvline(0, color="#555", linewidth=0.8)
        right.set_xlabel("[min, max]")
        right.set_title("output activation range")
        for ax in (left, right):
            ax.grid(axis="y", visible=False)
        return _svg(fig, "ranges")


# --- cross-format divergence --------------------------------------------------------------------

def divergence(lines: Sequence["DriftLine"], threshold: float, sensitive: str | None) -> str:
    """Max int8 steps off the torch simulation, tensor by tensor along the network's depth, one
    line per artifact; the first tensor past the threshold circled per line (and named in the
    legend); the most int8-sensitive layer (from the sensitivity analysis) shaded."""
    order: list[str] = []
    for line in lines:
        for layer in line.layers:
            if layer not in order:
                order.append(layer)
    pos = {name: i for i, name in enumerate(order)}
    with _figure(3.4 + 0.18 * len(lines)) as (fig, ax):
        markers = "osD^v<>"
        top = threshold
        for k, line in enumerate(lines):
            xs = [pos[layer] for layer in line.layers]
            first = "" if line.first is None else f" — first drift: {_short(line.layers[line.first], 22)}"
            ax.plot(xs, line.steps, marker=markers[k % len(markers)], markersize=3.5, linewidth=1.3,
                    label=_short(line.label, 30) + first)
            top = max(top, max(line.steps, default=0.0))
            if line.first is not None:
                ax.plot([pos[line.layers[line.first]]], [line.steps[line.first]], marker="o", markersize=11,
                        markerfacecolor="none", markeredgecolor=BAD, markeredgewidth=1.8, linestyle="none")
        ax.axhline(threshold, color=WARN, linestyle="--", linewidth=1, label=f"threshold: {threshold:g} steps")
        if sensitive is not None and sensitive in pos:
            x = pos[sensitive]
            ax.axvspan(x - 0.45, x + 0.45, color=FLOAT, alpha=0.18, linewidth=0,
                       label=f"most int8-sensitive: {_short(sensitive, 24)}")
        ax.set_ylim(0, top * 1.15 + 0.5)
        step = max(1, math.ceil(len(order) / 14))  # at most ~14 labels: readable on a phone
        ticks = list(range(0, len(order), step))
        ax.set_xticks(ticks, [_short(order[i], 20) for i in ticks], rotation=40, ha="right", fontsize=7.5)
        ax.set_ylabel("max |Δ| (int8 steps)")
        ax.set_title("steps off the torch simulation, along depth")
        fig.legend(loc="outside lower center", fontsize=7.5, frameon=False, ncol=1)
        return _svg(fig, "divergence")


# --- latency -------------------------------------------------------------------------------------

HOW_STYLE = {"measured-device": (OK, ""), "measured-host": (BLUE, ""), "predicted": (GREY, "//")}


def latency(rows: Sequence["LatencyRow"]) -> str:
    """p50 bars with a p90 tick per artifact × device, coloured by how the number was obtained."""
    from matplotlib.patches import Patch

    with _figure(0.9 + 0.34 * len(rows)) as (fig, ax):
        y = list(range(len(rows)))[::-1]
        for yi, r in zip(y, rows):
            color, hatch = HOW_STYLE.get(r.method, (WARN, ""))
            ax.barh(yi, r.p50_ms, color=color, hatch=hatch, edgecolor="white" if not hatch else "#555",
                    height=0.6, alpha=0.9)
            if r.p90_ms is not None:
                ax.plot([r.p50_ms, r.p90_ms], [yi, yi], color="#222", linewidth=1.2)
                ax.plot([r.p90_ms], [yi], marker="|", color="#222", markersize=10)
            label = f"{r.p50_ms:.3g}" + (f" / {r.p90_ms:.3g}" if r.p90_ms is not None else "") + " ms"
            ax.text(max(r.p90_ms or 0.0, r.p50_ms), yi, "  " + label, va="center", fontsize=8)
        ax.set_yticks(y, [_short(f"{r.label} @ {r.device}", 30) for r in rows])
        right = max((max(r.p50_ms, r.p90_ms or 0.0) for r in rows), default=1.0)
        ax.set_xlim(0, right * 1.45)
        ax.set_xlabel("ms (bar: p50, whisker: p90)")
        ax.set_title("latency per artifact and device")
        ax.grid(axis="y", visible=False)
        present = sorted({r.method for r in rows})
        names = {"measured-device": "measured on device", "measured-host": "measured on this host",
                 "predicted": "predicted (no spread)"}
        fig.legend(handles=[Patch(facecolor=HOW_STYLE.get(m, (WARN, ""))[0], hatch=HOW_STYLE.get(m, (WARN, ""))[1],
                                 edgecolor="#555", label=names.get(m, m)) for m in present],
                   loc="outside lower center", ncol=len(present), fontsize=8, frameon=False)
        return _svg(fig, "latency")


def distribution(rows: Sequence["LatencyRow"]) -> str:
    """Run-to-run distribution of the measured runs: one box (and its runs as dots) per row."""
    rows = [r for r in rows if r.samples]
    with _figure(0.9 + 0.34 * len(rows)) as (fig, ax):
        y = list(range(len(rows)))[::-1]
        ax.boxplot([list(r.samples) for r in rows], positions=y, orientation="horizontal", widths=0.5,
                   showfliers=False, medianprops={"color": BAD})
        for yi, r in zip(y, rows):
            n = len(r.samples)
            jitter = [yi + 0.18 * ((i * 7919 % 13) / 12.0 - 0.5) for i in range(n)]  # fixed jitter: reproducible
            ax.plot(list(r.samples), jitter, linestyle="none", marker=".", markersize=3, color=BLUE, alpha=0.5)
        ax.set_yticks(y, [_short(f"{r.label} @ {r.device}", 30) for r in rows])
        every = [v for r in rows for v in r.samples if v > 0]
        if every and max(every) > 20 * min(every):  # an outlier would squash every box: log scale
            ax.set_xscale("log")
        ax.set_xlabel("ms per run")
        ax.set_title("run-to-run distribution (measured runs)")
        ax.grid(axis="y", visible=False)
        return _svg(fig, "distribution")


# --- export timeline ------------------------------------------------------------------------------

def timeline(stages: Sequence["StageRow"]) -> str:
    """Stage durations laid end to end (a Gantt bar per stage), coloured by kind."""
    from matplotlib.patches import Patch

    colors = {"prepare": GREY, "pass": BLUE, "export": OK, "parity": WARN, "other": FLOAT}
    with _figure(0.9 + 0.22 * len(stages)) as (fig, ax):
        y = list(range(len(stages)))[::-1]
        start = 0.0
        for yi, s in zip(y, stages):
            ax.barh(yi, max(s.seconds, 0.0), left=start, color=colors.get(s.kind, FLOAT), height=0.7)
            ax.text(start + max(s.seconds, 0.0), yi, f" {s.seconds:.2f} s", va="center", fontsize=7.5)
            start += max(s.seconds, 0.0)
        ax.set_yticks(y, [_short(s.stage, 26) for s in stages])
        ax.set_xlim(0, start * 1.2 or 1.0)
        ax.set_xlabel(f"seconds (total {start:.1f} s)")
        ax.set_title("export timeline")
        ax.grid(axis="y", visible=False)
        kinds = [k for k in colors if any(s.kind == k for s in stages)]
        ax.legend(handles=[Patch(color=colors[k], label=k) for k in kinds], loc="upper right", fontsize=8,
                  frameon=False)
        return _svg(fig, "timeline")


# --- sparsity trade-off ----------------------------------------------------------------------------

def sparsity(levels: Sequence[Any], metric: str, dense: float) -> str:
    """Task metric of each pruned level against the PREDICTED speed-up of XNNPACK's sparse path on
    ARM (PruneLevel rows): one point per level, the exported one ringed, the dense model dashed."""
    with _figure(2.8) as (fig, ax):
        xs = [lv.predicted_speedup for lv in levels]
        ys = [100 * lv.score for lv in levels]
        ax.plot(xs, ys, color=GREY, linewidth=1, zorder=1)
        ax.scatter(xs, ys, c=[OK if lv.exported else BLUE for lv in levels], s=36, zorder=2)
        for lv, x, y in zip(levels, xs, ys):
            ax.annotate(f"{lv.sparsity:.0%}" + (" (exported)" if lv.exported else ""), (x, y),
                        textcoords="offset points", xytext=(6, 4), fontsize=8)
            if lv.exported:
                ax.scatter([x], [y], s=140, facecolors="none", edgecolors=OK, linewidths=1.5, zorder=3)
        ax.axhline(100 * dense, color="#222", linestyle="--", linewidth=1)
        ax.text(min(xs), 100 * dense, " dense model", fontsize=8, va="bottom")
        lo, hi = min(xs), max(xs)
        ax.set_xlim(lo - 0.1 - 0.1 * (hi - lo), hi + 0.3 + 0.15 * (hi - lo))
        low = min(ys + [100 * dense])
        ax.set_ylim(max(0.0, low - 0.15 * (100 * dense - low) - 1), 100 * dense + 0.1 * (100 * dense - low) + 1)
        ax.set_xlabel("XNNPACK sparse path speed-up on ARM (predicted)")
        ax.set_ylabel(f"{metric} (%), held-out")
        ax.set_title(f"{metric} vs PREDICTED speed-up, per sparsity level")
        return _svg(fig, "sparsity")


# --- gate ----------------------------------------------------------------------------------------

def gate(rows: Sequence[tuple[str, float, bool]]) -> str:
    """Each check's value as a share of its limit (1 = at the limit), breaches first and red.
    rows: (label, value / limit, passed)."""
    cap = 3.0
    with _figure(0.9 + 0.26 * len(rows)) as (fig, ax):
        y = list(range(len(rows)))[::-1]
        vals = [min(max(v, 0.0), cap) for _, v, _ in rows]  # faster than the baseline (< 0): no bar, the label says
        ax.barh(y, vals, color=[OK if ok else BAD for _, _, ok in rows], height=0.65)
        for yi, x, (_, v, _) in zip(y, vals, rows):
            ax.text(x, yi, f" {v:.2f}×" if v <= cap else f" {v:.3g}× ▶", va="center", fontsize=7.5)
        ax.axvline(1.0, color="#222", linewidth=1.2)
        ax.text(1.0, len(rows) - 0.3, " limit", fontsize=8, va="bottom")
        ax.set_yticks(y, [_short(label, 40) for label, _, _ in rows], fontsize=7.5)
        ax.set_xlim(0, max(1.3, min(max(vals, default=1.0), cap) * 1.25))
        ax.set_xlabel("value / limit")
        ax.set_title("budgets: breaches first")
        ax.grid(axis="y", visible=False)
        return _svg(fig, "gate")


def baseline(rows: Sequence[tuple[str, float, float, bool]]) -> str:
    """p50 now against the baseline's p50, per budget. rows: (label, now_ms, base_ms, passed)."""
    with _figure(0.9 + 0.4 * len(rows)) as (fig, ax):
        y = list(range(len(rows)))[::-1]
        ax.barh([v + 0.18 for v in y], [b for _, _, b, _ in rows], height=0.34, color=GREY, label="baseline p50")
        ax.barh([v - 0.18 for v in y], [n for _, n, _, _ in rows], height=0.34,
                color=[OK if ok else BAD for *_, ok in rows], label="this run p50")
        for yi, (_, now, base, _) in zip(y, rows):
            ax.text(max(now, base), yi, f"  {(now / base - 1) * 100:+.1f} %" if base else "", va="center", fontsize=8)
        ax.set_yticks(y, [_short(label, 30) for label, *_ in rows])
        ax.set_xlim(0, max((max(n, b) for _, n, b, _ in rows), default=1.0) * 1.35)
        ax.set_xlabel("ms")
        ax.set_title("p50 against the baseline")
        ax.grid(axis="y", visible=False)
        fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
        return _svg(fig, "baseline")


def delegate_strips(strips: Sequence[DelegateStrip], name: str) -> str:
    """One artifact, one row per delegate: every op in execution order, green where the delegate
    runs it, red where it stays on the CPU. Drawn by hand, not with matplotlib, so that each op is
    one <rect> whose <title> (the browser's tooltip) names the op and, for a CPU op, the rule."""
    from html import escape

    label_w, strip_w, row_h, gap, top = 150.0, 470.0, 18.0, 10.0, 4.0
    rows = [s for s in strips if s.ops]
    height = top + len(rows) * (row_h + gap) + 22
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 720 {height:.0f}" role="img" '
            f'aria-label="{escape(name)} chart" class="chart-svg" font-family="DejaVu Sans, sans-serif" font-size="11">')]
    for r, s in enumerate(rows):
        y = top + r * (row_h + gap)
        out.append(f'<text x="0" y="{y + 13:.1f}">{escape(s.delegate)} <tspan fill="#5f6368">({escape(s.how)})</tspan></text>')
        w = strip_w / len(s.ops)
        for i, op in enumerate(s.ops):
            tip = f"{op.label}: " + (f"{s.delegate}" if op.on_delegate else f"CPU [{op.rule}] {op.why}")
            out.append(f'<rect x="{label_w + i * w:.2f}" y="{y:.1f}" width="{max(w, 0.6):.2f}" height="{row_h:.0f}" '
                       f'fill="{OK if op.on_delegate else BAD}" class="{"dlg" if op.on_delegate else "cpu"}">'
                       f"<title>{escape(tip)}</title></rect>")
        out.append(f'<text x="{label_w + strip_w + 6:.0f}" y="{y + 13:.1f}">{s.partitions} part., {s.cpu_ops} CPU</text>')
    y = top + len(rows) * (row_h + gap) + 10
    out.append(f'<rect x="{label_w}" y="{y - 9:.0f}" width="10" height="10" fill="{OK}"/>'
               f'<text x="{label_w + 14}" y="{y:.0f}">on the delegate</text>'
               f'<rect x="{label_w + 130}" y="{y - 9:.0f}" width="10" height="10" fill="{BAD}"/>'
               f'<text x="{label_w + 144}" y="{y:.0f}">CPU fallback (hover: the rule)</text>'
               f'<text x="{label_w + strip_w + 6:.0f}" y="{y:.0f}" fill="#5f6368">ops in order →</text>')
    return "".join(out) + "</svg>"
