"""Report writers: every file parses with the tool that will read it, and says what the result says."""

from __future__ import annotations

import base64
import json
import os
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kiln.certification import report
from kiln.certification.report import (
    REPORT_FILES,
    junit_xml,
    prometheus_text,
    scaling_lines,
    write_atomic,
    write_reports,
)
from kiln.certification.report_html import report_html
from kiln.certification.verdict import (
    CertificationResult,
    Culprit,
    GroupRun,
    Isolation,
    PhaseRecord,
    RuleResult,
    Sweep,
)

pytestmark = pytest.mark.unit

HOSTILE = "<script>alert(1)</script>"
FINISHED = "2024-06-01T12:30:00Z"
FINISHED_TS = datetime(2024, 6, 1, 12, 30, tzinfo=UTC).timestamp()
SIZES = [2**k for k in range(20, 31, 2)]


def failing_result() -> CertificationResult:
    """A 4-node run where gpu003 is slow with every partner."""
    hosts = ["gpu001", "gpu002", "gpu003", "gpu004"]
    culprit = Culprit(
        kind="node",
        hosts=("gpu003",),
        fault_code="KILN-ISO-001",
        reason=f"gpu003 slow with every partner {HOSTILE}",
        evidence=("iso-1-1", "iso-2-1"),
    )
    runs = [
        GroupRun("iso-1-0", ("gpu001", "gpu002"), 1, 180.5, False, "half"),
        GroupRun("iso-1-1", ("gpu003", "gpu004"), 1, 41.2, True, "half"),
        GroupRun("iso-2-1", ("gpu003", "gpu001"), 2, 40.0, True, "confirm"),
        GroupRun("iso-2-2", ("gpu004", "gpu002"), 2, None, True, "confirm", error="NCCL timeout"),
    ]
    rules = [
        RuleResult(
            "allreduce.busbw",
            "cluster",
            "fail",
            "allreduce.busbw_gbps",
            62.0,
            "GB/s",
            ">= 120 fail, >= 150 warn",
            120.0,
            150.0,
            "KILN-AR-001",
            "allreduce/cluster.json",
            f"busbw 62 GB/s is below 120 {HOSTILE}",
        ),
        RuleResult(
            "allreduce.node_busbw",
            "gpu001",
            "pass",
            "allreduce.node_busbw_gbps",
            180.0,
            "GB/s",
            ">= 120 fail",
            120.0,
            None,
            None,
            None,
            "ok",
        ),
        RuleResult(
            "allreduce.node_busbw",
            "gpu002",
            "warn",
            "allreduce.node_busbw_gbps",
            140.0,
            "GB/s",
            ">= 120 fail, >= 150 warn",
            120.0,
            150.0,
            "KILN-AR-002",
            None,
            "busbw 140 below warn 150",
        ),
        RuleResult(
            "allreduce.node_busbw",
            "gpu003",
            "fail",
            "allreduce.node_busbw_gbps",
            41.0,
            "GB/s",
            ">= 120 fail",
            120.0,
            None,
            "KILN-AR-003",
            "allreduce/gpu003.json",
            "gpu003 slow",
        ),
        RuleResult(
            "preflight.rdma",
            "gpu004",
            "fail",
            "preflight.rdma_devices",
            None,
            "",
            "present",
            None,
            None,
            "KILN-PF-004",
            None,
            "measurement missing",
        ),
    ]
    measurements = [
        {"name": "allreduce.busbw_gbps", "subject": "cluster", "value": 62.0, "unit": "GB/s"},
        {"name": "allreduce.busbw_gbps", "subject": "gpu001+gpu002", "value": None, "unit": "GB/s"},
    ] + [
        {"name": "allreduce.node_busbw_gbps", "subject": h, "value": v, "unit": "GB/s"}
        for h, v in zip(hosts, [180.0, 140.0, 41.0, 175.0], strict=True)
    ]
    fact = {"kernel": "6.8.0-48-generic", "gpus": 8, "nccl": "2.21.5", "hostname": None}
    facts = {h: {**fact, "hostname": h} for h in hosts}
    facts["gpu003"]["kernel"] = "6.5.0-1-generic"
    return CertificationResult(
        stack="prod",
        cluster="hgx-a",
        profile="full",
        provisioning_hash="sha256:abc123",
        baseline={"class": "hgx-h100", "path": "baselines/hgx-h100.yaml", "digest": "d1g3st"},
        started_at="2024-06-01T12:00:00Z",
        finished_at=FINISHED,
        status="fail",
        reason=f"allreduce.busbw on cluster: 62 GB/s < 120 {HOSTILE}",
        hosts=hosts,
        phases=[
            PhaseRecord("preflight", "ok", 12.3),
            PhaseRecord("allreduce", "failed", 301.0, "busbw below baseline"),
            PhaseRecord("isolation", "ok", 640.5, evidence=["isolation/runs.json"]),
        ],
        measurements=measurements,
        rules=rules,
        culprits=[culprit],
        isolation=Isolation(
            trigger="allreduce.busbw cluster",
            threshold_gbps=120.0,
            runs=runs,
            culprits=[culprit],
            rounds=2,
        ),
        sweeps=[
            Sweep("cluster", tuple(hosts), "bfloat16", SIZES, [20.0, 40.0, 55.0, 60.0, 61.0, 62.0]),
            Sweep(
                "iso-1-0", ("gpu001", "gpu002"), "bfloat16", SIZES, [30, 80, 150, 170, 178, 180.5]
            ),
        ],
        facts=facts,
        regressions=[
            {
                "name": "allreduce.busbw_gbps",
                "subject": "cluster",
                "old": 160.0,
                "new": 62.0,
                "change_pct": -61.25,
                "tolerance_pct": 5.0,
                "note": HOSTILE,
            },
        ],
        compared_with="runs/2024-05-01/result.json",
    )


def partial_result() -> CertificationResult:
    """A run that stopped in preflight: no rules, no measurements, not finished."""
    return CertificationResult(
        stack="dev",
        cluster="lab",
        profile="quick",
        provisioning_hash=None,
        baseline={},
        started_at="2024-06-01T12:00:00Z",
        status="error",
        reason="preflight: ssh to node2 failed: Connection refused",
        hosts=["node1", "node2"],
        phases=[PhaseRecord("preflight", "error", 3.2, "ssh to node2 failed")],
    )


def scaling_entry(workload: str = "resnet-tiny") -> dict:
    """A weak-scaling ladder as `CertificationResult.scaling` holds it (LadderFit.to_dict())."""
    return {
        "workload": workload,
        "mode": "weak",
        "law": "gustafson",
        "reference_n": 1,
        "rungs": [
            {
                "n": 1,
                "throughput": 100.0,
                "speedup": 1.0,
                "efficiency": 1.0,
                "fitted_throughput": 101.2,
            },
            {
                "n": 2,
                "throughput": 190.0,
                "speedup": 1.9,
                "efficiency": 0.95,
                "fitted_throughput": 183.2,
            },
            {
                "n": 4,
                "throughput": 340.0,
                "speedup": 3.4,
                "efficiency": 0.85,
                "fitted_throughput": 347.2,
            },
        ],
        "skipped": [],
        "serial_fraction": 0.19,
        "t1": 101.2,
        "ceiling": None,
        "r_squared": 0.9966,
        "rms_relative_residual": 0.025,
        "clamped": False,
        "break_n": 4,
        "break_reason": "efficiency at N=4 is 0.850, below 0.9",
        "threshold": 0.9,
        "max_drop": None,
        "reason": None,
        "notes": [],
    }


def strong_entry() -> dict:
    """A strong-scaling ladder fitted by validation.scaling itself, without an N=1 rung."""
    from validation.scaling import Ladder, fit_ladder

    fit = fit_ladder(Ladder.from_points({2: 180.0, 4: 330.0, 8: 560.0, 16: None}, mode="strong"))
    return {"workload": "bert-small", **fit.to_dict()}


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


# --- kiln.prom ----------------------------------------------------------------


def test_prom_reports_the_verdict_rules_culprits_and_bandwidth() -> None:
    result = failing_result()
    metrics = families(prometheus_text(result, now=1.0))

    (status,) = metrics["kiln_certification_status"]
    assert status.value == 2
    assert status.labels == {"cluster": "hgx-a", "stack": "prod", "profile": "full"}
    assert metrics["kiln_certification_passed"][0].value == 0
    # The finish time, not `now`: a stale certification must look stale.
    assert metrics["kiln_certification_timestamp_seconds"][0].value == FINISHED_TS

    rules = {
        (s.labels["rule"], s.labels["subject"]): s
        for s in metrics["kiln_certification_rule_status"]
    }
    assert len(rules) == len(result.rules)
    assert rules["allreduce.busbw", "cluster"].value == 2
    assert rules["allreduce.busbw", "cluster"].labels["fault_code"] == "KILN-AR-001"
    assert rules["allreduce.node_busbw", "gpu002"].value == 1
    assert rules["allreduce.node_busbw", "gpu001"].value == 0
    assert rules["allreduce.node_busbw", "gpu001"].labels["fault_code"] == ""

    culprits = metrics["kiln_certification_culprit"]
    assert [(s.labels["host"], s.labels["kind"], s.value) for s in culprits] == [
        ("gpu003", "node", 1)
    ]

    busbw = {s.labels["subject"]: s.value for s in metrics["kiln_certification_busbw_gbps"]}
    # None values (a missing measurement, a failed run) are skipped rather than written as 0.
    assert busbw == {
        "cluster": 62.0,
        "gpu001+gpu002": 180.5,
        "gpu003+gpu004": 41.2,
        "gpu003+gpu001": 40.0,
    }


def test_prom_for_a_passing_run_and_an_unfinished_one() -> None:
    passing = failing_result()
    passing.status = "warn"
    metrics = families(prometheus_text(passing))
    assert metrics["kiln_certification_status"][0].value == 1
    assert metrics["kiln_certification_passed"][0].value == 1

    metrics = families(prometheus_text(partial_result(), now=1717243200.5))
    assert metrics["kiln_certification_status"][0].value == 3
    assert metrics["kiln_certification_passed"][0].value == 0
    assert metrics["kiln_certification_timestamp_seconds"][0].value == 1717243200.5
    assert metrics["kiln_certification_rule_status"] == []


def test_prom_label_values_round_trip_through_the_parser() -> None:
    nasty = 'we"ird\\host\nname'
    result = failing_result()
    result.cluster = nasty
    result.culprits = [Culprit("link", (nasty, "gpu004"), 'KILN-"X"', "slow link")]
    text = prometheus_text(result, now=0)
    metrics = families(text)
    assert metrics["kiln_certification_status"][0].labels["cluster"] == nasty
    hosts = {s.labels["host"] for s in metrics["kiln_certification_culprit"]}
    assert hosts == {nasty, "gpu004"}
    assert metrics["kiln_certification_culprit"][0].labels["fault_code"] == 'KILN-"X"'


def test_prom_never_writes_the_same_series_twice() -> None:
    result = failing_result()
    result.isolation.runs.append(
        GroupRun("iso-3-0", ("gpu003", "gpu004"), 3, 39.0, True, "confirm")
    )
    text = prometheus_text(result, now=0)
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series))


# --- junit.xml ----------------------------------------------------------------


def test_junit_has_a_case_per_rule_and_failures_carry_the_fault_code() -> None:
    result = failing_result()
    root = ET.fromstring(junit_xml(result))
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite.get("name") == "kiln-certify"
    cases = suite.findall("testcase")
    assert len(cases) == len(result.rules) == int(suite.get("tests"))
    assert int(suite.get("failures")) == len(result.failed_rules) == 3
    assert int(suite.get("errors")) == 0

    by_id = {(c.get("classname"), c.get("name")): c for c in cases}
    failure = by_id["allreduce.busbw", "cluster"].find("failure")
    assert failure.get("type") == "KILN-AR-001"
    assert HOSTILE in failure.get("message")  # escaped by the writer, intact after parsing
    assert "62.0 GB/s" in failure.text and ">= 120 fail" in failure.text
    assert "allreduce/cluster.json" in failure.text
    missing = by_id["preflight.rdma", "gpu004"].find("failure")
    assert missing.get("type") == "KILN-PF-004" and "value: missing" in missing.text

    warned = by_id["allreduce.node_busbw", "gpu002"]
    assert warned.find("failure") is None
    assert warned.find("system-out").text.startswith("WARN: KILN-AR-002")
    passed = by_id["allreduce.node_busbw", "gpu001"]
    assert list(passed) == []


def test_junit_shows_an_errored_run() -> None:
    result = partial_result()
    root = ET.fromstring(junit_xml(result))
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    (case,) = suite.findall("testcase")
    assert (case.get("classname"), case.get("name")) == ("kiln-certify", "run")
    assert case.find("error").get("message") == result.reason
    assert int(suite.get("errors")) == 1 and int(suite.get("tests")) == 1


def test_junit_survives_control_characters_in_reasons() -> None:
    result = failing_result()
    result.rules[0] = RuleResult("r", "cluster", "fail", "m", None, reason="bad\x1b[31m\x00byte")
    root = ET.fromstring(junit_xml(result))
    assert "bad" in root.find(".//failure").get("message")


# --- report.html --------------------------------------------------------------


class _Collector(HTMLParser):
    """Records tags and attributes; the strict parse would raise on malformed input."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "img":
            self.images.append(dict(attrs))


def parse_html(text: str) -> _Collector:
    parser = _Collector()
    parser.feed(text)
    parser.close()
    return parser


def test_html_shows_verdict_culprit_and_plots() -> None:
    result = failing_result()
    page = report_html(result)
    parsed = parse_html(page)

    assert ">FAIL<" in page
    assert "allreduce.busbw on cluster: 62 GB/s &lt; 120" in page
    assert "gpu003" in page and "KILN-ISO-001" in page
    assert "KILN-AR-001" in page and "6.5.0-1-generic" in page
    assert "-61.25" in page and "runs/2024-05-01/result.json" in page  # regression table
    assert "NCCL timeout" in page and "isolation/runs.json" in page
    # One image per plot whose data exists: sweeps, isolation runs, per-node busbw.
    assert len(parsed.images) == 3
    for img in parsed.images:
        assert img["alt"]
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) < 200_000
    assert "gpu003+gpu004" in parsed.images[1]["alt"]


def test_html_escapes_everything_and_is_self_contained() -> None:
    result = failing_result()
    result.facts["gpu001"]["kernel"] = HOSTILE
    result.hosts.append('"><img src=x onerror=alert(1)>')
    # `$` would start matplotlib mathtext; an unbalanced one must not break the plots.
    odd = "gpu$\\frac{$9"
    result.sweeps.append(Sweep("odd", (odd,), "float32", SIZES[:2], [1.0, 2.0]))
    result.isolation.runs.append(GroupRun("iso-3-0", (odd, "gpu001"), 3, 90.0, True))
    result.measurements.append({"name": "allreduce.node_busbw_gbps", "subject": odd, "value": 9.0})
    page = report_html(result)
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = parse_html(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert all(name not in {"onerror", "onload"} for name, _ in parsed.attrs)
    assert not re.search(r'(src|href)\s*=\s*"?(https?:|//)', page, re.I)
    assert len(parsed.images) == 3
    assert all(img["src"].startswith("data:") for img in parsed.images)


def test_html_highlights_the_odd_fact_out() -> None:
    page = report_html(failing_result())
    assert '<td class="differs">6.5.0-1-generic</td>' in page
    assert '<td class="differs">6.8.0-48-generic</td>' not in page
    # Host names differ by design and are not flagged.
    assert '<td class="differs">gpu001</td>' not in page


def test_html_for_a_partial_run_has_no_plots() -> None:
    page = report_html(partial_result())
    parsed = parse_html(page)
    assert ">ERROR<" in page and "Connection refused" in page
    assert parsed.images == []
    assert "preflight" in page


def _section(page: str, heading: str) -> str:
    """The HTML from `<h2>heading</h2>` up to the next h2 (or the end of the body)."""
    start = page.index(f"<h2>{heading}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start : end if end != -1 else page.index("</body>")]


def _png_of(img: dict[str, str | None]) -> bytes:
    src = img["src"] or ""
    assert src.startswith("data:image/png;base64,")
    return base64.b64decode(src.split(",", 1)[1], validate=True)


def test_html_shows_training_scaling_per_workload() -> None:
    result = failing_result()
    result.scaling = [scaling_entry(), strong_entry()]
    page = report_html(result)
    parsed = parse_html(page)
    section = _section(page, "Training scaling")

    # The three busbw plots plus one per workload, each a real PNG with a telling alt.
    assert len(parsed.images) == 5
    scaling_images = [img for img in parsed.images if "throughput of" in (img["alt"] or "")]
    assert len(scaling_images) == 2
    assert "resnet-tiny" in scaling_images[0]["alt"]
    assert "Gustafson" in scaling_images[0]["alt"]
    assert "bert-small" in scaling_images[1]["alt"] and "Amdahl" in scaling_images[1]["alt"]
    for img in scaling_images:
        png = _png_of(img)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) < 200_000

    assert "<h3>resnet-tiny</h3>" in section and "<h3>bert-small</h3>" in section
    # Efficiencies as percentages; the break rung is flagged, with its reason.
    for pct in ("100.0 %", "95.0 %", "85.0 %"):
        assert f'<td class="num">{pct}</td>' in section
    assert '<tr class="slow"><td class="num">4</td>' in section
    assert "breaks at N=4" in section and "efficiency at N=4 is 0.850, below 0.9" in section
    assert "serial fraction 0.19" in section and "r² 0.9966" in section
    # Strong scaling: the ceiling, the reference rung, the skipped rung and the fit's notes.
    fit = strong_entry()
    assert f"speedup ceiling {fit['ceiling']:.4g}×" in section
    assert "efficiency relative to N=2" in section
    assert "not measured" in section
    assert "no N=1 rung" in section
    # A result read back from result.json (lists, not tuples) renders the same page.
    again = CertificationResult.from_dict(json.loads(report.result_json(result)))
    assert report_html(again) == page


def test_html_scaling_without_a_fit_still_shows_the_rungs() -> None:
    result = partial_result()
    entry = scaling_entry()
    entry.update(
        rungs=entry["rungs"][:1],
        serial_fraction=None,
        t1=None,
        r_squared=None,
        rms_relative_residual=None,
        break_n=None,
        break_reason=None,
        reason="fitting the serial fraction needs at least 2 measured rungs, got 1",
    )
    result.scaling = [entry]
    page = report_html(result)
    section = _section(page, "Training scaling")
    assert "serial fraction not fitted: fitting the serial fraction needs" in section
    assert "no break" in section
    (img,) = parse_html(page).images
    assert "fitted" not in (img["alt"] or "")
    assert _png_of(img).startswith(b"\x89PNG")


def test_html_has_no_scaling_section_without_scaling() -> None:
    page = report_html(failing_result())
    assert "Training scaling" not in page
    assert "throughput of" not in page
    assert len(parse_html(page).images) == 3


def test_html_escapes_a_hostile_workload_name() -> None:
    result = failing_result()
    entry = scaling_entry(HOSTILE)
    entry["notes"] = [f"note {HOSTILE}"]
    entry["break_reason"] = f"why {HOSTILE}"
    dollar = scaling_entry("gpt$\\frac{$x")  # `$` must not start matplotlib mathtext
    result.scaling = [entry, dollar]
    page = report_html(result)
    assert HOSTILE not in page
    section = _section(page, "Training scaling")
    assert "<h3>&lt;script&gt;alert(1)&lt;/script&gt;</h3>" in section
    assert "note &lt;script&gt;" in section and "why &lt;script&gt;" in section
    parsed = parse_html(page)
    assert "script" not in parsed.tags
    assert len(parsed.images) == 5
    assert any(HOSTILE in (img["alt"] or "") for img in parsed.images)  # intact once parsed


def test_html_lists_every_measurement_grouped_by_name() -> None:
    result = failing_result()
    hosts = result.hosts
    result.measurements += [
        {"name": "gemm.tflops.bf16", "subject": h, "value": v, "unit": "TFLOP/s"}
        for h, v in zip(hosts, [700.0, 710.0, 500.0, 705.0], strict=True)
    ]
    result.measurements += [
        {"name": "storage.read_gbps.ckpt", "subject": h, "value": 5.0, "unit": "GB/s"}
        for h in hosts
    ]
    result.measurements.append(
        {"name": "models.resnet50.samples_per_s", "subject": "cluster", "value": 1234.5}
    )
    result.measurements.append({"name": HOSTILE, "subject": HOSTILE, "value": HOSTILE})
    page = report_html(result)
    assert HOSTILE not in page
    section = _section(page, "Measurements")
    # One row per subject; the name once, spanning its rows.
    assert '<td rowspan="4"><code>gemm.tflops.bf16</code></td>' in section
    assert '<td rowspan="4"><code>storage.read_gbps.ckpt</code></td>' in section
    assert "<code>models.resnet50.samples_per_s</code>" in section
    assert section.count("TFLOP/s") == 4
    # Each value against its group's median (702.5 here), so the slow host stands out.
    assert '<td class="num">-28.8 %</td>' in section
    assert '<span class="fail">missing</span>' in section  # the None measurement
    assert "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in section
    rows = re.findall(r"<tr[ >]", section)
    assert len(rows) == 1 + len(result.measurements)  # header + one per measurement


def test_scaling_lines_for_a_text_summary() -> None:
    result = partial_result()
    assert scaling_lines(result) == []
    result.scaling = [scaling_entry(), strong_entry()]
    tiny, bert = scaling_lines(result)
    assert tiny == (
        "resnet-tiny (weak): efficiency 85.0 % at N=4; "
        "breaks at N=4: efficiency at N=4 is 0.850, below 0.9"
    )
    fit = strong_entry()
    top = fit["rungs"][-1]
    assert bert.startswith(
        f"bert-small (strong): efficiency {top['efficiency'] * 100:.1f} % at N=8 (vs N=2)"
    )


# --- files ----------------------------------------------------------------------


def test_write_reports_writes_all_files_and_json_round_trips(tmp_path: Path) -> None:
    result = failing_result()
    paths = write_reports(result, tmp_path / "report")
    assert list(paths) == list(REPORT_FILES)
    assert sorted(os.listdir(tmp_path / "report")) == sorted(REPORT_FILES)
    doc = json.loads(paths["result.json"].read_text())
    assert CertificationResult.from_dict(doc).to_dict() == result.to_dict()
    assert families(paths["kiln.prom"].read_text())["kiln_certification_status"][0].value == 2
    assert ET.parse(paths["junit.xml"]).getroot() is not None
    # node_exporter and dashboards read these as other users.
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in paths.values())


def test_partial_result_still_yields_every_file(tmp_path: Path) -> None:
    result = partial_result()
    paths = write_reports(result, tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(REPORT_FILES)
    assert json.loads(paths["result.json"].read_text())["status"] == "error"
    error = ET.parse(paths["junit.xml"]).getroot().find(".//testcase/error")
    assert error is not None and "Connection refused" in error.get("message")
    assert "ERROR" in paths["report.html"].read_text()
    assert families(paths["kiln.prom"].read_text())["kiln_certification_status"][0].value == 3


def test_write_atomic_keeps_the_old_file_on_bad_data(tmp_path: Path) -> None:
    target = tmp_path / "kiln.prom"
    write_atomic(target, "old\n")
    with pytest.raises(TypeError):
        write_atomic(target, {"not": "text"})  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["kiln.prom"]


def test_write_atomic_cleans_up_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "result.json"
    write_atomic(target, b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", broken_replace)
    with pytest.raises(report.ReportNotWritten, match="result.json: disk full"):
        write_reports(failing_result(), tmp_path)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["result.json"]


def _full_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """The disk fills up after `writes` temporary files were written."""
    real = report.os.fdopen
    count = [0]

    def fdopen(fd: int, *args: object, **kwargs: object):  # noqa: ANN202
        count[0] += 1
        if count[0] > writes:
            os.close(fd)
            raise OSError(28, "No space left on device")
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(report.os, "fdopen", fdopen)


@pytest.mark.parametrize("writes", [0, 1, 3])
def test_a_disk_that_fills_up_replaces_no_report_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes: int
) -> None:
    """All four files or none: a full disk mid-way leaves the earlier run's four as they were
    (never a new result.json beside an old report.html), and no temporary file."""
    write_reports(partial_result(), tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in REPORT_FILES}
    _full_after(monkeypatch, writes)
    with pytest.raises(report.ReportNotWritten, match="No space left on device") as caught:
        write_reports(failing_result(), tmp_path)
    assert str(tmp_path) in str(caught.value) and "unchanged" in str(caught.value)
    assert {name: (tmp_path / name).read_bytes() for name in REPORT_FILES} == before
    assert sorted(os.listdir(tmp_path)) == sorted(REPORT_FILES)


def test_write_atomic_on_a_full_disk_keeps_the_old_file_and_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "evidence" / "preflight.json"
    write_atomic(target, "old\n")
    _full_after(monkeypatch, 0)
    with pytest.raises(report.ReportNotWritten, match=r"preflight\.json: No space left"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert os.listdir(target.parent) == ["preflight.json"]


def test_check_writable_refuses_a_full_disk_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "certifications" / "run-1"
    report.check_writable(out)  # a directory that does not exist yet: its parent is probed
    assert os.listdir(tmp_path) == []
    _full_after(monkeypatch, 0)
    with pytest.raises(report.ReportNotWritten, match="No space left on device"):
        report.check_writable(out)
    assert os.listdir(tmp_path) == []
