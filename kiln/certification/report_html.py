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
from validation.scaling import amdahl_speedup, gustafson_speedup

NODE_BUSBW_MEASUREMENT = "allreduce.node_busbw_gbps"

#: Facts that differ between hosts by design; highlighting them would bury real drift.
PER_HOST_FACTS = frozenset({"hostname", "machine_id"})

_COLOURS = {"pass": "#1a7f37", "warn": "#b26b00", "fail": "#c62828", "error": "#6a1b9a"}
_OK_BAR, _SLOW_BAR = "#4c78a8", "#c62828"
_IDEAL, _FITTED = "#888888", "#b26b00"

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
td.num{text-align:right;font-variant-numeric:tabular-nums}
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


Cell = str | tuple[str, str] | tuple[str, str, int]
"""Already-escaped cell HTML, or (td class, cell HTML), or (td class, cell HTML, rowspan)."""


def _td(cell: Cell) -> str:
    if isinstance(cell, tuple):
        cls = f' class="{cell[0]}"' if cell[0] else ""
        span = f' rowspan="{int(cell[2])}"' if len(cell) == 3 and cell[2] > 1 else ""
        return f"<td{cls}{span}>{cell[1]}</td>"
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


def _grouped_measurements(result: CertificationResult) -> dict[str, list[dict[str, Any]]]:
    """Measurements by name, names and subjects in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in result.measurements:
        if isinstance(m, dict):
            groups.setdefault(str(m.get("name")), []).append(m)
    return groups


def _vs_median(value: float | None, median: float | None) -> str:
    if value is None or not median:
        return ""
    return f"{(value - median) / abs(median) * 100:+.1f} %"


def _measurements(result: CertificationResult) -> str:
    """Every measurement, whatever its name: one row per subject, grouped by name.

    Per-host values of one measurement (gemm.tflops.bf16 on each node …) sit
    together, each against the group's median, so the odd host out shows.
    """
    groups = _grouped_measurements(result)
    if not groups:
        return ""
    rows: list[tuple[str, Sequence[Cell]]] = []
    for name, members in groups.items():
        numbers = [v for v in (_real(m.get("value")) for m in members) if v is not None]
        median = _median(numbers) if len(numbers) > 1 else None
        for i, m in enumerate(members):
            value = _real(m.get("value"))
            raw = m.get("value")
            shown = '<span class="fail">missing</span>' if raw is None else _e(_fmt(raw))
            cells: list[Cell] = []
            if i == 0:
                cells.append(("", f"<code>{_e(name)}</code>", len(members)))
            cells += [
                _e(m.get("subject")),
                ("num", shown),
                _e(m.get("unit")),
                ("num", _e(_vs_median(value, median))),
                f"<code>{_e(m.get('evidence'))}</code>" if m.get("evidence") else "",
            ]
            rows.append(("", cells))
    headers = ["Measurement", "Subject", "Value", "Unit", "vs median", "Evidence"]
    return "<h2>Measurements</h2>" + _table(headers, rows)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


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


# --- training scaling -------------------------------------------------------------


def _rung_points(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The rungs of a scaling entry that have a usable N and throughput, in increasing N."""
    rungs = entry.get("rungs")
    points = []
    # Tuples in a result built in process (LadderFit.to_dict keeps them), lists once read back.
    for rung in rungs if isinstance(rungs, list | tuple) else ():
        if not isinstance(rung, dict):
            continue
        n, throughput = _real(rung.get("n")), _real(rung.get("throughput"))
        if n is not None and n >= 1 and throughput is not None and throughput > 0:
            points.append({**rung, "n": n, "throughput": throughput})
    return sorted(points, key=lambda r: r["n"])


def _reference(entry: dict[str, Any], rungs: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(N, throughput) of the rung efficiencies are relative to: `reference_n`, else the first."""
    if not rungs:
        return None
    ref_n = _real(entry.get("reference_n"))
    ref = next((r for r in rungs if r["n"] == ref_n), rungs[0])
    return ref["n"], ref["throughput"]


def _law(entry: dict[str, Any]) -> tuple[str, Any] | None:
    """(name, speedup function) of the entry's fitted law; None when nothing was fitted."""
    if _real(entry.get("serial_fraction")) is None or _real(entry.get("t1")) is None:
        return None
    if entry.get("law") == "amdahl" or (entry.get("law") is None and entry.get("mode") == "strong"):
        return "Amdahl", amdahl_speedup
    return "Gustafson", gustafson_speedup


def _spaced(lo: float, hi: float, count: int = 64) -> list[float]:
    """`count` points from lo to hi, evenly spaced on a log axis."""
    if hi <= lo:
        return [lo]
    ratio = hi / lo
    return [lo * ratio ** (i / (count - 1)) for i in range(count)]


def _scaling_plot(entry: dict[str, Any]) -> tuple[str, str] | None:
    rungs = _rung_points(entry)
    reference = _reference(entry, rungs)
    if reference is None:
        return None
    workload = str(entry.get("workload") or "workload")
    ns = [r["n"] for r in rungs]
    xs = _spaced(min(ns), max(ns))
    ref_n, ref_t = reference
    fig, ax = _new_figure()
    ax.plot(xs, [x * ref_t / ref_n for x in xs], color=_IDEAL, linestyle="--", label="ideal")
    threshold = _real(entry.get("threshold"))
    if threshold is not None:
        ax.plot(
            xs,
            [threshold * x * ref_t / ref_n for x in xs],
            color=_IDEAL,
            linestyle=":",
            linewidth=1,
            label=f"{threshold:.0%} efficiency",
        )
    law = _law(entry)
    s, t1 = _real(entry.get("serial_fraction")), _real(entry.get("t1"))
    if law is not None and s is not None and t1 is not None:
        name, speedup = law
        ax.plot(xs, [t1 * speedup(s, x) for x in xs], color=_FITTED, label=f"{name}, s = {s:.3g}")
    ax.plot(ns, [r["throughput"] for r in rungs], "o", color=_OK_BAR, label="measured")
    break_n = _real(entry.get("break_n"))
    broken = [r for r in rungs if r["n"] == break_n]
    if broken:
        ax.plot(
            [broken[0]["n"]],
            [broken[0]["throughput"]],
            "o",
            color=_SLOW_BAR,
            markersize=9,
            label=f"break at N={broken[0]['n']:g}",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [f"{n:g}" for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("N")
    ax.set_ylabel(f"throughput ({entry.get('unit') or 'samples/s'})", **_TEXT)
    ax.set_title(f"{workload}: {entry.get('mode') or ''} scaling".strip(), **_TEXT)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    alt = f"throughput of {workload} against N, measured at N=" + ", ".join(f"{n:g}" for n in ns)
    alt += f", against ideal scaling from N={ref_n:g}"
    if law is not None and s is not None:
        alt += f" and the fitted {law[0]} law (serial fraction {s:.3g})"
    return alt, _png(fig)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f} %"


def _scaling_table(entry: dict[str, Any]) -> str:
    rungs = _rung_points(entry)
    skipped = entry.get("skipped")
    missing = [
        n for n in (_real(n) for n in (skipped if isinstance(skipped, list | tuple) else ())) if n
    ]
    break_n = _real(entry.get("break_n"))
    rows: list[tuple[float, tuple[str, Sequence[Cell]]]] = []
    for r in rungs:
        cells: list[Cell] = [
            ("num", _e(f"{r['n']:g}")),
            ("num", _e(_fmt(r["throughput"]))),
            ("num", _e(_fmt(_real(r.get("speedup"))))),
            ("num", _e(_pct(_real(r.get("efficiency"))))),
            ("num", _e(_fmt(_real(r.get("fitted_throughput"))))),
        ]
        rows.append((r["n"], ("slow" if r["n"] == break_n else "", cells)))
    for n in missing:
        rows.append((n, ("", [("num", _e(f"{n:g}")), "not measured", "", "", ""])))
    rows.sort(key=lambda row: row[0])
    unit = entry.get("unit") or "samples/s"
    headers = ["N", f"Throughput ({unit})", "Speedup", "Efficiency", "Fitted throughput"]
    return _table(headers, [row for _, row in rows])


def _scaling_facts(entry: dict[str, Any]) -> str:
    mode, law = entry.get("mode"), entry.get("law")
    facts = [f"{_e(mode or 'unknown')} scaling" + (f" ({_e(law)})" if law else "")]
    ref_n = _real(entry.get("reference_n"))
    if ref_n is not None:
        facts.append(f"efficiency relative to N={_e(f'{ref_n:g}')}")
    s = _real(entry.get("serial_fraction"))
    if s is None:
        reason = entry.get("reason")
        facts.append("serial fraction not fitted" + (f": {_e(reason)}" if reason else ""))
    else:
        clamped = " (clamped)" if entry.get("clamped") else ""
        facts.append(f"serial fraction {_e(f'{s:.4g}')}{clamped}")
        t1 = _real(entry.get("t1"))
        if t1 is not None:
            facts.append(f"fitted T(1) {_e(_fmt(t1))}")
        if mode == "strong":
            ceiling = _real(entry.get("ceiling"))
            facts.append(
                f"speedup ceiling {_e(f'{ceiling:.4g}')}×" if ceiling else "no speedup ceiling"
            )
    r2 = _real(entry.get("r_squared"))
    if r2 is not None:
        facts.append(f"r² {_e(f'{r2:.4f}')}")
    rms = _real(entry.get("rms_relative_residual"))
    if rms is not None:
        facts.append(f"RMS relative residual {_e(_pct(rms))}")
    break_n = _real(entry.get("break_n"))
    if break_n is not None:
        why = entry.get("break_reason")
        facts.append(
            f'<strong class="fail">breaks at N={_e(f"{break_n:g}")}</strong>'
            + (f": {_e(why)}" if why else "")
        )
    else:
        limits = []
        threshold, max_drop = _real(entry.get("threshold")), _real(entry.get("max_drop"))
        if threshold is not None:
            limits.append(f"efficiency ≥ {_e(f'{threshold:g}')}")
        if max_drop is not None:
            limits.append(f"drop ≤ {_e(f'{max_drop:g}')} per rung")
        facts.append("no break" + (f" ({_e(', '.join(limits))})" if limits else ""))
    text = f"<p>{'; '.join(facts)}.</p>"
    notes = entry.get("notes")
    if isinstance(notes, list | tuple) and notes:
        text += '<ul class="note">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    return text


def _scaling(result: CertificationResult) -> str:
    """Training scaling: per workload, throughput against N with the ideal and fitted laws."""
    entries = [e for e in result.scaling if isinstance(e, dict)]
    if not entries:
        return ""
    parts = ["<h2>Training scaling</h2>"]
    for entry in entries:
        parts.append(f"<h3>{_e(entry.get('workload') or 'workload')}</h3>")
        plot = _scaling_plot(entry)
        if plot is not None:
            alt, data = plot
            parts.append(f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>')
        parts.append(_scaling_table(entry))
        parts.append(_scaling_facts(entry))
    return "".join(parts)


def report_html(result: CertificationResult) -> str:
    """The whole of report.html for `result`."""
    title = f"Kiln certification {result.status.upper()}: {result.cluster}"
    sections = [
        _verdict(result),
        _culprits(result),
        _rules(result),
        _regressions(result),
        _isolation(result),
        _scaling(result),
        _measurements(result),
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
