"""report.html: one self-contained page a person reads to see why a cluster passed or failed.

Everything is inline (CSS, plots as data: URIs) so the file can be mailed,
attached to a ticket or opened from an artifact store with no network. Every
string taken from the result is HTML-escaped: host names, reasons and
evidence come from machines under test and must never become markup.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

# Figure + FigureCanvasAgg instead of pyplot: no global figure registry to leak
# into, and no backend selection that could reach for a display.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from kiln.certification.verdict import CertificationResult, Culprit, RuleResult

NODE_BUSBW_MEASUREMENT = "allreduce.node_busbw_gbps"

#: Facts that differ between hosts by design; highlighting them would bury real drift.
PER_HOST_FACTS = frozenset({"hostname", "machine_id"})

_COLOURS = {"pass": "#1a7f37", "warn": "#b26b00", "fail": "#c62828", "error": "#6a1b9a"}
_OK_BAR, _SLOW_BAR = "#4c78a8", "#c62828"

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:80rem}
h1{margin:.2rem 0}h2{margin-top:2rem;border-bottom:1px solid #ccc}
.verdict{padding:1rem 1.5rem;border-radius:.5rem;color:#fff}
.verdict .word{font-size:3rem;font-weight:700;letter-spacing:.1rem}
.verdict .reason{font-size:1.2rem}
.meta{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;margin-top:.8rem}
.meta dt{font-weight:600}.meta dd{margin:0}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}
tr.fail td.status,td.fail{color:#c62828;font-weight:700}
tr.warn td.status{color:#b26b00;font-weight:700}
tr.pass td.status{color:#1a7f37}
tr.slow{background:#fdecea}
td.differs{background:#ffe08a;font-weight:600}
code{font-size:.85rem}
.note{color:#555}
"""


def _e(value: object) -> str:
    """HTML-escaped text of any value; None as an empty cell."""
    return "" if value is None else html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    """A value as a person reads it (floats to 4 significant digits)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return " ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _real(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


Cell = str | tuple[str, str]
"""Already-escaped cell HTML, or (td class, cell HTML)."""


def _td(cell: Cell) -> str:
    if isinstance(cell, tuple):
        return f'<td class="{cell[0]}">{cell[1]}</td>'
    return f"<td>{cell}</td>"


def _table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[Cell]]]) -> str:
    """An HTML table; each row is (tr class, cells). Headers are escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{cls}">' + "".join(_td(c) for c in cells) + "</tr>" for cls, cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- sections -------------------------------------------------------------------


def _verdict(result: CertificationResult) -> str:
    status = result.status if result.status in _COLOURS else "error"
    baseline = result.baseline or {}
    meta = [
        ("Cluster", result.cluster),
        ("Stack", result.stack),
        ("Profile", result.profile),
        ("Baseline", " ".join(_fmt(baseline.get(k)) for k in ("class", "path") if baseline.get(k))),
        ("Baseline digest", baseline.get("digest")),
        ("Provisioning hash", result.provisioning_hash),
        ("Started", result.started_at),
        ("Finished", result.finished_at or "not finished"),
        ("Hosts", f"{len(result.hosts)}: {' '.join(result.hosts)}" if result.hosts else ""),
        ("Compared with", result.compared_with),
    ]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta if v)
    return (
        f'<section class="verdict" style="background:{_COLOURS[status]}">'
        f'<div class="word">{_e(str(result.status).upper())}</div>'
        f'<div class="reason">{_e(result.reason)}</div></section>'
        f'<dl class="meta">{items}</dl>'
    )


def _all_culprits(result: CertificationResult) -> list[Culprit]:
    """The result's culprits plus any isolation found that the result does not repeat."""
    culprits = list(result.culprits)
    if result.isolation:
        culprits += [c for c in result.isolation.culprits if c not in culprits]
    return culprits


def _culprits(result: CertificationResult) -> str:
    culprits = _all_culprits(result)
    if not culprits:
        return ""
    rows = [
        (
            "fail",
            [
                _e(c.kind),
                f"<strong>{_e(' + '.join(c.hosts))}</strong>",
                _e(c.fault_code),
                _e(c.reason),
                _e(", ".join(c.evidence)),
            ],
        )
        for c in culprits
    ]
    return "<h2>Culprits</h2>" + _table(["Kind", "Hosts", "Fault code", "Reason", "Evidence"], rows)


def _value(rule: RuleResult) -> str:
    if rule.value is None:
        return '<span class="fail">missing</span>'
    return _e(f"{_fmt(rule.value)} {rule.unit}".strip())


def _rules(result: CertificationResult) -> str:
    if not result.rules:
        return '<h2>Rules</h2><p class="note">No rule was evaluated.</p>'
    rows = [
        (
            _e(r.status),
            [
                f"<code>{_e(r.rule)}</code>",
                _e(r.subject),
                ("status", _e(r.status.upper())),
                _value(r),
                _e(r.threshold),
                _e(r.fault_code),
                f"<code>{_e(r.evidence)}</code>" if r.evidence else "",
                _e(r.reason),
            ],
        )
        for r in result.rules
    ]
    headers = ["Rule", "Subject", "Status", "Value", "Threshold", "Fault code", "Evidence"]
    return "<h2>Rules</h2>" + _table([*headers, "Reason"], rows)


def _regressions(result: CertificationResult) -> str:
    if not result.regressions:
        return ""
    # The usual keys first, then whatever else a regression carries, in first-seen order.
    usual = ("name", "subject", "old", "new", "change_pct", "tolerance_pct")
    keys = [k for k in usual if any(k in r for r in result.regressions)]
    keys += list(dict.fromkeys(k for r in result.regressions for k in r if k not in keys))
    rows = [("warn", [_e(_fmt(r.get(k))) for k in keys]) for r in result.regressions]
    note = f'<p class="note">Compared with {_e(result.compared_with)}.</p>'
    return "<h2>Regressions</h2>" + (note if result.compared_with else "") + _table(keys, rows)


def _isolation(result: CertificationResult) -> str:
    iso = result.isolation
    if iso is None:
        return ""
    facts = [
        f"Trigger: {_e(iso.trigger)}",
        f"threshold {_e(_fmt(iso.threshold_gbps))} GB/s (a run below it is slow)",
        f"{_e(iso.rounds)} round(s)",
        "conclusive" if iso.conclusive else "<strong>not conclusive</strong>",
    ]
    rows = [
        (
            "slow" if r.slow else "",
            [
                _e(r.id),
                _e(r.round),
                _e(" + ".join(r.hosts)),
                _e(_fmt(r.busbw_gbps)),
                "<strong>slow</strong>" if r.slow else "",
                _e(r.purpose),
                _e(r.error),
            ],
        )
        for r in iso.runs
    ]
    headers = ["Id", "Round", "Hosts", "busbw GB/s", "Slow", "Purpose", "Error"]
    note = f'<p class="note">{_e(iso.note)}</p>' if iso.note else ""
    return f"<h2>Isolation</h2><p>{'; '.join(facts)}.</p>{note}" + _table(headers, rows)


def _phases(result: CertificationResult) -> str:
    if not result.phases:
        return ""
    rows = [
        (
            "fail" if p.status in ("failed", "error") else "",
            [
                _e(p.name),
                _e(p.status),
                _e(f"{p.wall_s:.1f} s"),
                _e(p.message),
                _e(", ".join(p.evidence)),
            ],
        )
        for p in result.phases
    ]
    return "<h2>Phases</h2>" + _table(["Phase", "Status", "Wall time", "Message", "Evidence"], rows)


def _facts(result: CertificationResult) -> str:
    if not result.facts:
        return ""
    hosts = [h for h in result.hosts if h in result.facts]
    hosts += [h for h in result.facts if h not in hosts]
    keys = list(dict.fromkeys(k for h in hosts for k in result.facts[h]))
    rows: list[tuple[str, Sequence[Cell]]] = []
    for key in keys:
        # A host without the fact shows (and counts) as an empty value: that is drift too.
        values = [_fmt(result.facts[h].get(key)) for h in hosts]
        counts = Counter(values).most_common()
        if key in PER_HOST_FACTS or len(counts) == 1:
            differs = [False] * len(values)
        elif counts[0][1] > counts[1][1]:
            differs = [v != counts[0][0] for v in values]
        else:
            # No single most common value: every cell differs from an equally common one.
            differs = [True] * len(values)
        cells: list[Cell] = [f"<code>{_e(key)}</code>"]
        cells += [
            ("differs", _e(v) or "—") if d else (_e(v) or "—")
            for v, d in zip(values, differs, strict=True)
        ]
        rows.append(("", cells))
    note = '<p class="note">Highlighted: differs from the most common value of the row.</p>'
    return "<h2>Preflight facts</h2>" + note + _table(["Fact", *hosts], rows)


# --- plots ----------------------------------------------------------------------


def _legend(ax: Any, **kwargs: Any) -> None:
    """A legend whose labels are plain text (see `_TEXT`)."""
    for text in ax.legend(fontsize="small", **kwargs).get_texts():
        text.set_parse_math(False)


#: Labels come from host names and sweep ids: `$` in one must not start mathtext,
#: which renders it wrongly at best and fails to parse at worst.
_TEXT = {"parse_math": False}


def _hosts_label(hosts: Sequence[str]) -> str:
    if len(hosts) <= 4:
        return "+".join(hosts)
    return f"{'+'.join(hosts[:2])}+… ({len(hosts)} hosts)"


def _size_label(size: float, _pos: object = None) -> str:
    for unit, scale in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size >= scale:
            return f"{size / scale:g}{unit}"
    return f"{size:g}"


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(buf)
    fig.clear()
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _new_figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(7, 3.5), dpi=100)
    return fig, fig.add_subplot()


def _sweep_plot(result: CertificationResult) -> tuple[str, str] | None:
    lines = []
    for sweep in result.sweeps:
        points = [
            (s, b)
            for s, b in zip(sweep.sizes_bytes, sweep.busbw_gbps, strict=False)
            if (_real(s) or 0) > 0 and _real(b) is not None
        ]
        if points:
            lines.append((f"{sweep.id} ({_hosts_label(sweep.hosts)}, {sweep.dtype})", points))
    if not lines:
        return None
    fig, ax = _new_figure()
    for label, points in lines:
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(_size_label))
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("busbw (GB/s)")
    ax.set_title("Allreduce bus bandwidth against message size")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    alt = "busbw against message size for sweeps: " + "; ".join(label for label, _ in lines)
    return alt, _png(fig)


def _isolation_plot(result: CertificationResult) -> tuple[str, str] | None:
    iso = result.isolation
    if iso is None or not iso.runs:
        return None
    fig, ax = _new_figure()
    labels = ["+".join(r.hosts) for r in iso.runs]
    # A failed run has no busbw: draw it at zero so it is seen, not dropped.
    heights = [_real(r.busbw_gbps) or 0.0 for r in iso.runs]
    colours = [_SLOW_BAR if r.slow else _OK_BAR for r in iso.runs]
    ax.bar(range(len(heights)), heights, color=colours)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize="small", **_TEXT)
    for x, run in enumerate(iso.runs):
        if run.busbw_gbps is None:
            ax.text(x, 0, "failed", ha="center", va="bottom", color=_SLOW_BAR, fontsize="small")
    ax.axhline(iso.threshold_gbps, color="#333", linestyle="--", linewidth=1)
    ax.set_ylabel("busbw (GB/s)")
    ax.set_title("Isolation runs")
    handles = [
        Patch(color=_OK_BAR, label="ok"),
        Patch(color=_SLOW_BAR, label="slow"),
        ax.lines[0],
    ]
    ax.lines[0].set_label(f"threshold {iso.threshold_gbps:g} GB/s")
    _legend(ax, handles=handles)
    slow = [("+".join(r.hosts)) for r in iso.runs if r.slow]
    alt = (
        f"busbw of {len(iso.runs)} isolation runs against the threshold of "
        f"{iso.threshold_gbps:g} GB/s; slow: {', '.join(slow) or 'none'}"
    )
    return alt, _png(fig)


def _node_plot(result: CertificationResult) -> tuple[str, str] | None:
    values: dict[str, float] = {}
    for m in result.measurements:
        value = _real(m.get("value"))
        if m.get("name") == NODE_BUSBW_MEASUREMENT and value is not None:
            values.setdefault(str(m.get("subject")), value)
    if not values:
        return None
    status = {r.subject: r.status for r in result.rules if r.measurement == NODE_BUSBW_MEASUREMENT}
    fig, ax = _new_figure()
    hosts = list(values)
    colours = [_COLOURS.get(status.get(h, ""), _OK_BAR) for h in hosts]
    ax.bar(range(len(hosts)), [values[h] for h in hosts], color=colours)
    ax.set_xticks(range(len(hosts)), hosts, rotation=30, ha="right", **_TEXT)
    ax.set_ylabel("busbw (GB/s)")
    ax.set_title("Bus bandwidth per node")
    alt = "busbw per node: " + ", ".join(f"{h} {values[h]:.4g} GB/s" for h in hosts)
    return alt, _png(fig)


def _plots(result: CertificationResult) -> str:
    images = [p for p in (_sweep_plot(result), _isolation_plot(result), _node_plot(result)) if p]
    if not images:
        return ""
    tags = "".join(
        f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>' for alt, data in images
    )
    return "<h2>Plots</h2>" + tags


def report_html(result: CertificationResult) -> str:
    """The whole of report.html for `result`."""
    title = f"Kiln certification {result.status.upper()}: {result.cluster}"
    sections = [
        _verdict(result),
        _culprits(result),
        _rules(result),
        _regressions(result),
        _isolation(result),
        _phases(result),
        _facts(result),
        _plots(result),
    ]
    # The CSP forbids anything but inline style and data: images, as a second line of
    # defence should some text ever slip through unescaped.
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>" + "".join(sections) + "</body></html>\n"
    )
