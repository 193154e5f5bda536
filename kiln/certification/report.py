"""Write a certification run's reports: result.json, report.html, junit.xml, kiln.prom.

All four are views of one `CertificationResult`; `result.json` is the record
and the others are derived from it, for people (report.html), CI systems
(junit.xml) and Prometheus via node_exporter's textfile collector (kiln.prom).
Each file is replaced atomically, because those readers poll the directory
and must never see half a file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from kiln import redact
from kiln.certification.report_html import report_html
from kiln.certification.verdict import CertificationResult, RuleResult, finite_number
from kiln.errors import UsageError

REPORT_FILES = ("result.json", "report.html", "junit.xml", "kiln.prom")

#: kiln_certification_status values; the same order as the verdict's severity.
STATUS_CODES: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2, "error": 3}
RULE_STATUS_CODES: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}

#: The measurement the cluster-wide (and per-group) bus bandwidth is recorded under.
BUSBW_MEASUREMENT = "allreduce.busbw_gbps"

#: JUnit suite name and the classname of the synthetic "run" test case.
SUITE = "kiln-certify"


class ReportNotWritten(UsageError):
    """A report file could not be written (a full disk, a read-only or missing directory):
    the run cannot be recorded, so it stops (exit 2, "could not run"); the files already
    there keep their previous content."""

    reason: str = ""
    """What the operating system said (e.g. "No space left on device")."""


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new, never half.

    The temporary file lives in the same directory because `os.replace` is only
    atomic within one file system. On any error the temporary file is removed
    and `path` keeps its previous content; an OSError (ENOSPC, EROFS, EACCES …)
    comes back as ReportNotWritten naming the file.
    """
    path = Path(path)
    tmp = _staged(path, data, mode)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        _discard([tmp])
        raise _not_written(path, exc) from None
    except BaseException:
        _discard([tmp])
        raise


def _payload(data: str | bytes) -> bytes:
    if isinstance(data, str):
        # Reports quote hosts' output and error messages: no secret of this run stays in.
        return redact.redact(data).encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"write_atomic: data must be str or bytes, not {type(data).__name__}")


def _staged(path: Path, data: str | bytes, mode: int) -> Path:
    """`data` in a synced temporary file beside `path` (not yet renamed over it)."""
    payload = _payload(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _not_written(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            # mkstemp creates 0600; the collector and dashboards run as other users.
            os.fchmod(fh.fileno(), mode)
            # Without fsync a crash after the rename can leave an empty file behind.
            os.fsync(fh.fileno())
    except OSError as exc:
        _discard([Path(tmp)])
        raise _not_written(path, exc) from None
    except BaseException:
        _discard([Path(tmp)])
        raise
    return Path(tmp)


def _discard(paths: Iterable[Path]) -> None:
    for tmp in paths:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _not_written(path: Path, exc: OSError) -> ReportNotWritten:
    why = exc.strerror or str(exc)
    error = ReportNotWritten(
        f"cannot write {path}: {why}; the files already in {path.parent} are unchanged"
    )
    error.reason = why
    return error


def check_writable(directory: Path) -> None:
    """Fail now, before any host is reached, when `directory` cannot take report files
    (a full disk, a read-only mount): a small file is written in it, or in its nearest
    existing parent, synced and removed. Nothing is created; ReportNotWritten otherwise."""
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        probe = _staged(existing / ".kiln-write-probe", b"\0" * 4096, 0o600)
    except ReportNotWritten as exc:
        raise ReportNotWritten(
            f"cannot write the report in {directory}: {exc.reason} (tried in {existing}); "
            "nothing was run and the files already there are unchanged"
        ) from None
    _discard([probe])


def write_reports(result: CertificationResult, out_dir: Path) -> dict[str, Path]:
    """Write the four report files into `out_dir` (created if needed); name -> path.

    Works for partial results (a run that stopped early) too: whatever was
    measured is written. All four are written to temporary files first and
    renamed only once every one is on disk, result.json first (the record; the
    others are derived views of it): a full disk replaces none of them, so the
    directory never holds a new result.json beside an old report.html.
    """
    out_dir = Path(out_dir)
    paths = {name: out_dir / name for name in REPORT_FILES}
    contents = {
        "result.json": result_json(result),
        "kiln.prom": prometheus_text(result),
        "junit.xml": junit_xml(result),
        "report.html": report_html(result),
    }
    staged: dict[str, Path] = {}
    try:
        for name in REPORT_FILES:
            staged[name] = _staged(paths[name], contents[name], 0o644)
        for name in REPORT_FILES:
            try:
                os.replace(staged[name], paths[name])
            except OSError as exc:
                raise _not_written(paths[name], exc) from None
            del staged[name]
    finally:
        _discard(staged.values())
    return paths


def result_json(result: CertificationResult) -> str:
    """The text of result.json."""
    return json.dumps(result.to_dict(), indent=2, sort_keys=False) + "\n"


# --- kiln.prom ----------------------------------------------------------------


def _label_value(value: object) -> str:
    """Escape a label value as the text exposition format requires (\\, ", newline)."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _number(value: object) -> float | None:
    """`value` as a float when it is a real number (bools and strings are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _timestamp(iso: str | None) -> float | None:
    """Unix seconds of an ISO 8601 time (naive times are UTC); None when absent or unreadable."""
    if not iso:
        return None
    try:
        parsed = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _family(
    name: str, help_text: str, samples: Iterable[tuple[dict[str, object], float]]
) -> list[str]:
    """HELP, TYPE and sample lines of one gauge; repeated label sets keep the first sample.

    Prometheus rejects a scrape holding the same series twice, so a repeated
    isolation run over the same hosts must not produce a second line.
    """
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    seen: set[tuple[tuple[str, str], ...]] = set()
    for labels, value in samples:
        key = tuple((k, _label_value(v)) for k, v in labels.items())
        if key in seen:
            continue
        seen.add(key)
        rendered = ",".join(f'{k}="{v}"' for k, v in key)
        lines.append(f"{name}{{{rendered}}} {_sample_value(value)}")
    return lines


def _busbw_samples(result: CertificationResult) -> list[tuple[dict[str, object], float]]:
    samples: list[tuple[dict[str, object], float]] = []
    for m in result.measurements:
        value = _number(m.get("value"))
        if m.get("name") == BUSBW_MEASUREMENT and value is not None:
            samples.append(
                ({"cluster": result.cluster, "subject": m.get("subject") or "cluster"}, value)
            )
    if result.isolation:
        for run in result.isolation.runs:
            value = _number(run.busbw_gbps)
            if value is not None:
                samples.append(({"cluster": result.cluster, "subject": "+".join(run.hosts)}, value))
    return samples


def prometheus_text(result: CertificationResult, now: float | None = None) -> str:
    """kiln.prom: the verdict as gauges, for node_exporter's textfile collector.

    The timestamp gauge is the run's finish time (or `now` when it has none),
    so that an alert can catch a certification that has gone stale.
    """
    run = {"cluster": result.cluster, "stack": result.stack, "profile": result.profile}
    finished = _timestamp(result.finished_at)
    if finished is None:
        finished = time.time() if now is None else now
    culprit_samples = [
        ({"cluster": result.cluster, "host": host, "kind": c.kind, "fault_code": c.fault_code}, 1.0)
        for c in result.culprits
        for host in c.hosts
    ]
    families = [
        _family(
            "kiln_certification_status",
            "Certification verdict: 0 pass, 1 warn, 2 fail, 3 error.",
            [(run, float(STATUS_CODES.get(result.status, 3)))],
        ),
        _family(
            "kiln_certification_passed",
            "1 when the cluster is certified (pass or warn), else 0.",
            [(run, 1.0 if result.status in ("pass", "warn") else 0.0)],
        ),
        _family(
            "kiln_certification_timestamp_seconds",
            "Unix time the certification run finished.",
            [(run, finished)],
        ),
        _family(
            "kiln_certification_rule_status",
            "Status of one baseline rule on one subject: 0 pass, 1 warn, 2 fail.",
            [
                (_rule_labels(result.cluster, r), float(RULE_STATUS_CODES[r.status]))
                for r in result.rules
            ],
        ),
        _family(
            "kiln_certification_busbw_gbps",
            "Allreduce bus bandwidth in GB/s, cluster-wide and per isolation group.",
            _busbw_samples(result),
        ),
        _family(
            "kiln_certification_culprit",
            "1 for each host a culprit names (a slow node, a slow link, or a suspect).",
            culprit_samples,
        ),
    ]
    return "\n".join(line for family in families for line in family) + "\n"


def _rule_labels(cluster: str, rule: RuleResult) -> dict[str, object]:
    return {
        "cluster": cluster,
        "rule": rule.rule,
        "subject": rule.subject,
        "fault_code": rule.fault_code or "",
    }


# --- text summary -------------------------------------------------------------


def scaling_lines(result: CertificationResult) -> list[str]:
    """One line per training-scaling workload: efficiency at the largest N, and the break.

    For a console summary next to the verdict, e.g.
    ``resnet50 (weak): efficiency 85.0 % at N=4; breaks at N=4: efficiency at N=4 is …``
    (with ``(vs N=2)`` after the N when the ladder had no N=1 rung).
    """
    lines = []
    for entry in result.scaling:
        if not isinstance(entry, dict):
            continue
        name = entry.get("workload") or "workload"
        mode = f" ({entry['mode']})" if entry.get("mode") else ""
        rungs = [
            r
            for r in entry.get("rungs") or []
            if isinstance(r, dict) and finite_number(r.get("n")) is not None
        ]
        top = max(rungs, key=lambda r: r["n"], default=None)
        efficiency = finite_number(top.get("efficiency")) if top else None
        if top is None or efficiency is None:
            text = "no measured rung"
        else:
            text = f"efficiency {efficiency * 100:.1f} % at N={top['n']}"
            if entry.get("reference_n") not in (None, 1):
                text += f" (vs N={entry['reference_n']})"
        if entry.get("break_n") is not None:
            why = f": {entry['break_reason']}" if entry.get("break_reason") else ""
            text += f"; breaks at N={entry['break_n']}{why}"
        elif top is not None:
            text += "; no break"
        lines.append(f"{name}{mode}: {text}")
    return lines


# --- junit.xml ----------------------------------------------------------------

# Characters XML 1.0 cannot hold even escaped; ElementTree writes them anyway and the
# result then fails to parse, so a stray control byte in a log line must go first.
_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: object) -> str:
    return _XML_INVALID.sub("\ufffd", "" if value is None else str(value))


def _rule_details(rule: RuleResult) -> str:
    value = "missing" if rule.value is None else f"{rule.value} {rule.unit}".rstrip()
    lines = [
        f"reason: {rule.reason}",
        f"measurement: {rule.measurement}",
        f"value: {value}",
        f"threshold: {rule.threshold}",
    ]
    if rule.evidence:
        lines.append(f"evidence: {rule.evidence}")
    return "\n".join(lines)


def junit_xml(result: CertificationResult) -> str:
    """junit.xml: one test case per rule result, so CI shows each rule as a test.

    A run that errored gets one more case (`kiln-certify` / `run`) carrying the
    error, and so does a failed verdict that no failed rule explains (a CI view
    of all-green rules must not hide a failed certification).
    """
    suite = ET.Element("testsuite", name=SUITE)
    failures = errors = 0
    for rule in result.rules:
        case = ET.SubElement(suite, "testcase", classname=_xml_text(rule.rule))
        case.set("name", _xml_text(rule.subject))
        if rule.status == "fail":
            failures += 1
            failure = ET.SubElement(case, "failure", message=_xml_text(rule.reason or "failed"))
            if rule.fault_code:
                failure.set("type", _xml_text(rule.fault_code))
            failure.text = _xml_text(_rule_details(rule))
        elif rule.status == "warn":
            out = ET.SubElement(case, "system-out")
            code = f"{rule.fault_code} " if rule.fault_code else ""
            out.text = _xml_text(f"WARN: {code}{rule.reason}\n{_rule_details(rule)}")
    unexplained_fail = result.status == "fail" and not result.failed_rules
    if result.status == "error" or unexplained_fail:
        case = ET.SubElement(suite, "testcase", classname=SUITE, name="run")
        if result.status == "error":
            errors += 1
            node = ET.SubElement(case, "error", message=_xml_text(result.reason), type="error")
        else:
            failures += 1
            node = ET.SubElement(case, "failure", message=_xml_text(result.reason), type="fail")
        node.text = _xml_text(_run_details(result))
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", "0")
    suite.set("time", f"{sum(p.wall_s for p in result.phases):.3f}")
    if result.started_at:
        suite.set("timestamp", _xml_text(result.started_at))
    root = ET.Element("testsuites", name=SUITE)
    root.append(suite)
    for key in ("tests", "failures", "errors"):
        root.set(key, suite.get(key, "0"))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _run_details(result: CertificationResult) -> str:
    lines = [f"reason: {result.reason}", f"cluster: {result.cluster}", f"stack: {result.stack}"]
    for phase in result.phases:
        message = f": {phase.message}" if phase.message else ""
        lines.append(f"phase {phase.name}: {phase.status} ({phase.wall_s:.1f} s){message}")
    return "\n".join(lines)
