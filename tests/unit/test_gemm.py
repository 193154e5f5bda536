"""``python -m validation.gemm``: peak table, FLOP accounting, the document and a CPU run."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from validation.gemm import DTYPES, GemmResult, lookup, matmul_flops, measurements, peak_tflops
from validation.gemm.cli import main
from validation.gemm.measure import _matmul_mode, _peak, cpu_threads
from validation.gemm.report import preamble_lines, summary_lines, table_lines
from validation.launch import HostSpec, LocalLauncher
from validation.results import ResultSchemaError

pytestmark = pytest.mark.unit

QUIET = {"PYTHONWARNINGS": "ignore"}


@pytest.mark.parametrize(
    ("device_name", "model", "bf16", "tf32"),
    [
        ("NVIDIA A100-SXM4-80GB", "A100 SXM4", 312.0, 156.0),
        ("NVIDIA A100-SXM4-40GB", "A100 SXM4", 312.0, 156.0),
        ("NVIDIA A100 80GB PCIe", "A100 PCIe", 312.0, 156.0),
        ("NVIDIA H100 80GB HBM3", "H100 SXM5", 989.4, 494.7),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.5, 378.0),
        ("NVIDIA H200", "H200 SXM", 989.4, 494.7),
        ("NVIDIA L40S", "L40S", 362.05, 183.0),
        ("nvidia  h100 80gb hbm3 ", "H100 SXM5", 989.4, 494.7),
    ],
)
def test_peaks_match_real_device_names(device_name, model, bf16, tf32) -> None:
    entry = lookup(device_name)
    assert entry is not None and entry.model == model
    assert entry.source
    assert peak_tflops(device_name, "bf16") == bf16
    assert peak_tflops(device_name, "fp16") == bf16
    assert peak_tflops(device_name, "tf32") == tf32
    assert set(entry.tflops) == set(DTYPES)


def test_h100_and_a100_fp32_are_the_datasheet_figures() -> None:
    assert peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 66.9
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5


@pytest.mark.parametrize(
    "device_name",
    [
        "NVIDIA H200 NVL",  # lower clocks than the SXM part
        "NVIDIA H100 NVL",
        "NVIDIA H800",
        "NVIDIA L40",
        "NVIDIA GeForce RTX 4090",
        "Tesla V100-SXM2-32GB",
        "cpu",
        "",
    ],
)
def test_unknown_models_have_no_peak(device_name: str) -> None:
    assert lookup(device_name) is None
    assert peak_tflops(device_name, "bf16") is None


def test_peak_lookup_rejects_unknown_dtypes() -> None:
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        peak_tflops("NVIDIA H200", "int8")


def test_flops_are_two_per_multiply_add() -> None:
    assert matmul_flops(2, 3, 4) == 48
    assert matmul_flops(8192, 8192, 8192) == 2 * 8192**3
    # One 8192³ bf16 matmul at the H100 SXM dense peak takes about 1.1 ms.
    seconds = matmul_flops(8192, 8192, 8192) / (peak_tflops("NVIDIA H100 80GB HBM3", "bf16") * 1e12)
    assert seconds == pytest.approx(1.111e-3, rel=1e-3)


# -- a real run on CPU ---------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> tuple[dict, object]:
    launcher = LocalLauncher(wall_timeout_s=60, workdir=tmp_path_factory.mktemp("gemm"))
    args = ["--size", "256", "--dtype", "fp32,bf16", "-w", "1", "-n", "2", "--repeat", "2"]
    launched = launcher.launch(
        "validation.gemm", [*args, "--timeout", "20"], [HostSpec("node1"), HostSpec("node2")], QUIET
    )
    assert launched.ok, launched.summary()
    assert launched.result is not None, "rank 0 wrote no JSON"
    return launched.result, launched


def test_two_cpu_ranks_write_a_document_that_parses(cpu_run) -> None:
    doc, launched = cpu_run
    result = GemmResult.from_dict(doc)
    assert GemmResult.from_json(result.to_json()) == result
    assert doc["metrics"]["flops_per_matmul"] == 2 * 256**3
    m = result.metrics
    assert (m.m, m.n, m.k, m.dtypes) == (256, 256, 256, ["fp32", "bf16"])
    assert m.settings["device"] == "cpu" and m.settings["threads_per_rank"] >= 1
    assert result.environ.hostnames == ["node1", "node2"]
    assert [(g.rank, g.host, g.gpu_index, g.device) for g in m.gpus] == [
        (0, "node1", None, "cpu"),
        (1, "node2", None, "cpu"),
    ]
    for gpu in m.gpus:
        assert [r.dtype for r in gpu.results] == ["fp32", "bf16"]
        for run in gpu.results:
            assert run.tflops is not None and run.tflops > 0
            assert run.time_ms_min <= run.time_ms_median <= run.time_ms_max
            assert run.peak_tflops is None and run.fraction_of_peak is None
            assert "no peak for CPUs" in run.reason
    # Only rank 0 prints the table, one line per rank and dtype.
    stdout = launched.ranks[0].stdout_text()
    assert "GFLOPS" in stdout and "slowest device per host" in stdout
    assert launched.ranks[1].stdout_text() == ""


def test_cpu_run_measurements_are_per_host_with_no_peak(cpu_run) -> None:
    doc, _ = cpu_run
    found = {(m.name, m.subject): m for m in measurements(GemmResult.from_dict(doc))}
    assert set(found) == {
        (f"gemm.{q}.{d}", h)
        for q in ("tflops", "fraction_of_peak")
        for d in ("fp32", "bf16")
        for h in ("node1", "node2")
    }
    for (name, _), m in found.items():
        if name.startswith("gemm.tflops."):
            assert m.value > 0 and m.unit == "TFLOPS" and m.reason is None
        else:
            assert m.value is None and "no peak for CPUs" in m.reason


# -- measurements from synthetic documents ---------------------------------------


def _gpu(rank, host, index, tflops, device="NVIDIA H100 80GB HBM3", peak=989.4, reason=None):
    fraction = tflops / peak if peak and tflops is not None else None
    return {
        "rank": rank,
        "host": host,
        "gpu_index": index,
        "device": device,
        "peak_model": "H100 SXM5" if peak else None,
        "gpus_on_host": 2,
        "results": [
            {
                "dtype": "bf16",
                "tflops": tflops,
                "time_ms_median": 1.0,
                "time_ms_min": 1.0,
                "time_ms_max": 1.0,
                "peak_tflops": peak,
                "fraction_of_peak": fraction,
                "reason": reason,
            }
        ],
    }


def _doc(*gpus) -> dict:
    return {
        "name": "gemm",
        "schema_version": 1,
        "environ": {
            "hostnames": [g["host"] for g in gpus],
            "world_size": len(gpus),
            "backend": "nccl",
            "torch_version": "2.13.0",
            "python_version": "3.11.7",
        },
        "metrics": {"m": 8192, "n": 8192, "k": 8192, "dtypes": ["bf16"], "gpus": list(gpus)},
    }


def test_the_slowest_gpu_of_each_host_is_its_measurement() -> None:
    doc = _doc(_gpu(0, "a", 0, 700.0), _gpu(1, "a", 1, 500.0), _gpu(2, "b", 0, 690.0))
    found = {(m.name, m.subject): m.value for m in measurements(GemmResult.from_dict(doc))}
    assert found[("gemm.tflops.bf16", "a")] == 500.0
    assert found[("gemm.fraction_of_peak.bf16", "a")] == pytest.approx(500.0 / 989.4)
    assert found[("gemm.tflops.bf16", "b")] == 690.0


def test_an_unknown_model_gives_tflops_but_no_fraction_with_the_reason() -> None:
    why = "no peak known for 'NVIDIA H200 NVL'"
    doc = _doc(_gpu(0, "a", 0, 700.0, "NVIDIA H200 NVL", None, why))
    tflops, fraction = measurements(GemmResult.from_dict(doc))
    assert tflops.value == 700.0 and tflops.subject == "a"
    assert fraction.value is None and fraction.reason == f"GPU 0 (rank 0) on a: {why}"


def test_a_gpu_that_could_not_run_makes_its_host_unmeasured() -> None:
    doc = _doc(_gpu(0, "a", 0, 700.0), _gpu(1, "a", 1, None, reason="bf16 matmul failed: OOM"))
    tflops, fraction = measurements(GemmResult.from_dict(doc))
    assert tflops.value is None and "GPU 1 (rank 1) on a: bf16 matmul failed" in tflops.reason
    assert fraction.value is None


def test_the_report_names_each_hosts_slowest_gpu_and_unmeasured_gpus() -> None:
    doc = _doc(_gpu(0, "a", 0, 700.0), _gpu(1, "a", 1, 500.0), _gpu(2, "b", 0, 690.0))
    result = GemmResult.from_dict(doc)
    text = "\n".join(preamble_lines(result) + table_lines(result) + summary_lines(result))
    assert "M = N = K = 8192" in text and "TFLOPS" in text and "GFLOPS" not in text
    assert "a bf16: 500.0 TFLOPS on GPU 1 (rank 1) on a, 50.5 % of 989.4 (H100 SXM5)" in text
    # Host b has two GPUs but only one rank ran there.
    assert "WARNING: b has 2 GPUs but only 1 ranks ran there" in text
    assert "WARNING: a has" not in text


def test_peaks_and_math_modes_on_a_cuda_device_object() -> None:
    # torch.device("cuda") is only a name: no GPU is needed to check the decisions.
    cuda = torch.device("cuda", 0)
    assert _peak(cuda, "NVIDIA H200", "bf16") == (989.4, None)
    peak, reason = _peak(cuda, "NVIDIA H200 NVL", "tf32")
    assert peak is None and "no peak known for 'NVIDIA H200 NVL'" in reason
    assert "never guessed" in reason
    assert _peak(torch.device("cpu"), "cpu", "fp32")[0] is None
    before = torch.backends.cuda.matmul.allow_tf32
    with _matmul_mode("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 is True
    with _matmul_mode("fp32"):
        assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_cpu_ranks_share_the_cores() -> None:
    cores = os.cpu_count() or 1
    assert cpu_threads(1) == cores
    assert cpu_threads(10**6) == 1


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d.pop("metrics"), "result.metrics: missing"),
        (lambda d: d.update(name="allreduce"), "result.name: expected 'gemm'"),
        (lambda d: d.update(schema_version=2), "result.schema_version: 2 is not supported"),
        (lambda d: d["metrics"].pop("m"), "metrics.m: missing"),
        (lambda d: d["metrics"].update(gpus=[]), "metrics.gpus: empty"),
        (lambda d: d["metrics"].update(dtypes=[1]), "metrics.dtypes: expected a list of strings"),
        (lambda d: d["metrics"]["gpus"][0].pop("host"), "metrics.gpus[0].host: missing"),
        (
            lambda d: d["metrics"]["gpus"][0].update(rank=True),
            "metrics.gpus[0].rank: expected a number, got a boolean",
        ),
        (
            lambda d: d["metrics"]["gpus"][0]["results"][0].update(tflops="fast"),
            "metrics.gpus[0].results[0].tflops: expected",
        ),
        (
            lambda d: d["metrics"]["gpus"][0]["results"][0].pop("dtype"),
            "metrics.gpus[0].results[0].dtype: missing",
        ),
        (lambda d: d["environ"].pop("backend"), "environ.backend: missing"),
    ],
)
def test_reader_rejects_malformed_documents_naming_the_key(mutate, key: str) -> None:
    doc = copy.deepcopy(_doc(_gpu(0, "a", 0, 700.0)))
    mutate(doc)
    with pytest.raises(ResultSchemaError, match=key.replace("[", r"\[").replace("]", r"\]")):
        GemmResult.from_dict(doc)


def test_reader_rejects_non_objects_and_non_json() -> None:
    with pytest.raises(ResultSchemaError, match="result: expected a JSON object"):
        GemmResult.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(ResultSchemaError, match="result: not JSON"):
        GemmResult.from_json("{")


# -- command line ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "0"], "--size must be at least 1"),
        (["--size", "big"], "invalid int value"),
        (["--dtype", "int8"], "--dtype: unknown ['int8']"),
        (["--iters", "0"], "--iters must be at least 1"),
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--warmup-iters", "-1"], "--warmup-iters must be at least 0"),
        (["--timeout", "0"], "--timeout must be positive"),
        (["--device", "tpu"], "invalid choice"),
        (["--device", "cpu", "--dtype", "tf32"], "--dtype tf32 needs a GPU"),
    ],
)
def test_bad_options_exit_2_before_joining_a_group(argv, message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cuda needs CUDA" in capsys.readouterr().err


def test_reading_results_does_not_import_torch() -> None:
    code = (
        "import sys, validation.gemm, validation.gemm.result, validation.gemm.peaks\n"
        "import validation.gemm.report\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert run.stdout.strip() == "[]", run.stdout
    assert Path(REPO, "validation", "gemm", "__main__.py").is_file()
