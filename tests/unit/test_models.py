"""``python -m validation.models``: presets, real 2-rank DDP runs, the data path, the reader."""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch import device as torch_device
from torch import get_num_threads as torch_get_num_threads
from torch import set_num_threads as torch_set_num_threads

from tests.conftest import REPO
from validation.launch import HostSpec, LocalLauncher
from validation.models.presets import PRESETS, count_parameters
from validation.models.result import ModelsResult, measurements
from validation.results import ResultSchemaError

pytestmark = pytest.mark.unit

HOSTS = [HostSpec("node1"), HostSpec("node2")]
# One thread per rank: two ranks share two cores with whatever else runs here.
ENV = {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
FAST = ["--preset", "tiny", "--warmup", "1", "--steps", "2", "--timeout", "30"]


_FRESH = "KILN_TEST_FRESH_PROCESS"


def in_fresh_process(test):  # noqa: ANN001, ANN201
    """Run the test in a pytest process of its own. ansible-core, which other tests load
    into this process, replaces sys.intern with an object, and torch._dynamo (imported
    by transformers when a model is built) refuses anything but a function there."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if os.environ.get(_FRESH) == test.__name__:
            return test(*args, **kwargs)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"{__file__}::{test.__name__}"],
            env={**os.environ, _FRESH: test.__name__}, cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        return None

    return wrapper


def _launch(args: list[str], workdir: Path):
    launcher = LocalLauncher(wall_timeout_s=90, after_failure_s=20, workdir=workdir)
    return launcher.launch("validation.models", args, HOSTS, ENV)


def _workload(name: str):
    return next(w for ws in PRESETS.values() for w in ws if w.name == name)


@in_fresh_process
def test_resnet50_has_torchvision_parameter_count() -> None:
    resnet = _workload("resnet50")
    assert resnet.hf_class == "ResNetForImageClassification"
    assert resnet.input_shape == [3, 224, 224] and resnet.num_labels == 1000
    assert count_parameters(resnet) == 25_557_032


@in_fresh_process
def test_bert_large_has_about_336m_parameters_at_both_lengths() -> None:
    seq128, seq512 = _workload("bert-large-seq128"), _workload("bert-large-seq512")
    assert seq128.config == seq512.config and seq128.hf_class == "BertForPreTraining"
    assert (seq128.input_shape, seq512.input_shape) == ([128], [512])
    assert 333_000_000 < count_parameters(seq128) < 340_000_000


def test_package_and_result_reader_import_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, validation.models, validation.models.result, validation.models.config; "
        "validation.models.ModelsResult; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_two_ranks_train_tiny_resnet_and_bert_with_a_bucket_sweep(tmp_path: Path) -> None:
    launched = _launch([*FAST, "--bucket-sweep", "1,25"], tmp_path)
    assert launched.ok, launched.summary()
    assert launched.result is not None, "rank 0 wrote no JSON"
    result = ModelsResult.from_dict(launched.result)
    assert result.environ.hostnames == ["node1", "node2"]
    assert result.environ.backend == "gloo"
    metrics = result.metrics
    assert (metrics.preset, metrics.world_size) == ("tiny", 2)
    assert [r.model for r in metrics.runs] == ["resnet-tiny", "bert-tiny"]
    for run in metrics.runs:
        assert run.params > 0 and run.steps == 2 and run.warmup_steps == 1
        assert run.amp is False and run.data == "synthetic"
        assert [b.bucket_mb for b in run.buckets] == [1.0, 25.0]
        best = max(run.buckets, key=lambda b: b.samples_per_s)
        assert run.bucket_mb == best.bucket_mb and run.samples_per_s == best.samples_per_s
        assert run.samples_per_s > 0
        assert run.samples_per_s_per_rank == pytest.approx(run.samples_per_s / 2)
        for bucket in run.buckets:
            assert len(bucket.rank_samples_per_s) == 2
            # The total counts every rank's samples over the slowest rank's time.
            assert bucket.samples_per_s <= sum(bucket.rank_samples_per_s) * (1 + 1e-9)
            assert bucket.comm_fraction is not None and 0 <= bucket.comm_fraction < 1
        assert run.compute_s is not None and run.compute_s > 0
    stdout = launched.ranks[0].stdout_text()
    assert "resnet-tiny" in stdout and "bert-tiny" in stdout and "samples/s" in stdout
    assert "samples/s" not in launched.ranks[1].stdout_text()  # only rank 0 reports
    names = {m.name for m in measurements(result)}
    for model in ("resnet-tiny", "bert-tiny"):
        for quantity in ("samples_per_s", "samples_per_s_per_rank", "step_s", "comm_fraction"):
            assert f"models.{model}.{quantity}" in names


@in_fresh_process
def test_data_from_a_made_dataset_trains_in_process(
    tmp_path: Path, monkeypatch, capsys, request
) -> None:
    # One rank in this process: the 2-rank launches above and below already pay
    # for process start-up, and torch and transformers are loaded here anyway.
    from validation.models.cli import main
    from validation.models.data import make_loader
    from validation.ports import free_port

    data = tmp_path / "data"
    make = ["--make-dataset", str(data), "--preset", "tiny", "--samples", "64"]
    assert main([*make, "--shard-samples", "16"]) == 0
    assert "wrote" in capsys.readouterr().out
    meta = json.loads((data / "resnet-tiny" / "meta.json").read_text())
    assert meta["input_shape"] == [3, 32, 32] and len(meta["shards"]) == 4
    # Rank r of W reads shards r, r+W, ...
    loader = make_loader(data, _workload("bert-tiny"), 8, 1, 2, torch_device("cpu"), workers=0)
    assert [f.name for f in loader.dataset.files] == ["shard-00001.pt", "shard-00003.pt"]
    assert next(iter(loader))["input_ids"].shape == (8, 32)

    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**env, **ENV, "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    threads = torch_get_num_threads()
    torch_set_num_threads(1)  # as OMP_NUM_THREADS=1 does for the launched ranks
    request.addfinalizer(lambda: torch_set_num_threads(threads))
    with pytest.raises(SystemExit) as too_small:  # checked before joining a group
        main([*FAST, "--data", str(data), "--batch", "100"])
    assert too_small.value.code == 2
    assert "--data: resnet-tiny gives rank 0 of 1 64 samples" in capsys.readouterr().err
    out = tmp_path / "result.json"
    # 64 samples = 4 batches of 16 per epoch; 1 + 5 steps also start a second epoch.
    args = [*FAST, "--data", str(data), "--workers", "1", "--no-split", "--steps", "5"]
    assert main([*args, "--json", str(out)]) == 0
    result = ModelsResult.from_json(out.read_text())
    assert [r.model for r in result.metrics.runs] == ["resnet-tiny", "bert-tiny"]
    for run in result.metrics.runs:
        assert run.data == "files" and run.samples_per_s > 0 and run.data_wait_s >= 0
        assert run.compute_s is None and run.comm_fraction is None
    assert result.metrics.settings["workers"] == 1
    unmeasured = [m for m in measurements(result) if m.name.endswith("comm_fraction")]
    assert all(m.value is None and "--no-split" in (m.reason or "") for m in unmeasured)


def test_a_crashed_rank_is_named_and_the_run_ends(tmp_path: Path) -> None:
    # Rank 1 exits after its first warm-up step, so rank 0 is inside DDP's gradient
    # allreduce of step 2. A short timeout keeps its wait for the others' reports short.
    args = [*FAST, "--timeout", "5", "--warmup", "2", "--model", "resnet-tiny"]
    launched = _launch([*args, "--fault-exit-rank", "1"], tmp_path)
    assert launched.ranks[1].returncode == 13
    survivor = launched.ranks[0]
    assert survivor.finished and survivor.returncode == 3, launched.summary()
    error = survivor.last_error_line()
    assert "warm-up: step 2 of 2 failed" in error, error
    assert "no answer from rank 1 (host node2) [this is rank 0 (host node1) of 2]" in error
    assert launched.result is None


def test_help_documents_every_option() -> None:
    from validation.models.cli import build_parser

    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"
        assert all(flag in text for flag in action.option_strings)
    assert "testing fault handling only" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "0"], "--batch"),
        (["--warmup", "0"], "--warmup"),
        (["--preset", "tiny", "--model", "resnet50"], "--model"),
        (["--preset", "huge"], "--preset"),
        (["--bucket-sweep", "1,x"], "--bucket-sweep"),
        (["--bucket-mb", "0"], "--bucket-mb"),
        (["--bucket-mb", "5", "--bucket-sweep", "1,25"], "not allowed with"),
        (["--preset", "tiny", "--data", "/nonexistent/kiln"], "--data"),
        (["--make-dataset", "/tmp/x", "--samples", "0"], "--samples"),
    ],
)
def test_bad_options_exit_2_naming_the_option(argv: list[str], message: str, capsys) -> None:
    from validation.models.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _document() -> dict:
    bucket = {
        "bucket_mb": 25.0,
        "step_s": 0.1,
        "samples_per_s": 320.0,
        "samples_per_s_per_rank": 160.0,
        "rank_samples_per_s": [160.0, 161.0],
        "data_wait_s": 0.0,
        "comm_wait_s": 0.02,
        "comm_fraction": 0.2,
    }
    run = {
        "model": "resnet50",
        "hf_class": "ResNetForImageClassification",
        "params": 25557032,
        "input_shape": [3, 224, 224],
        "batch_per_rank": 16,
        "warmup_steps": 1,
        "steps": 2,
        "amp": True,
        "data": "synthetic",
        "compute_s": 0.08,
        "buckets": [bucket],
        **{k: v for k, v in bucket.items() if k != "rank_samples_per_s"},
    }
    environ = {"hostnames": ["a", "b"], "world_size": 2, "backend": "nccl"}
    environ |= {"torch_version": "2.13.0", "python_version": "3.11.7"}
    return {
        "name": "models",
        "schema_version": 1,
        "environ": environ,
        "metrics": {"preset": "full", "world_size": 2, "runs": [run], "settings": {}},
    }


def test_result_round_trips_and_lists_measurements() -> None:
    result = ModelsResult.from_dict(_document())
    assert ModelsResult.from_json(result.to_json()) == result
    values = {m.name: (m.value, m.unit) for m in measurements(result)}
    assert values["models.resnet50.samples_per_s"] == (320.0, "samples/s")
    assert values["models.resnet50.samples_per_s_per_rank"] == (160.0, "samples/s")
    assert values["models.resnet50.comm_fraction"] == (0.2, "")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("metrics", "runs", 0, "samples_per_s"), None, "metrics.runs[0].samples_per_s: missing"),
        (("metrics", "runs", 0, "params"), True, "metrics.runs[0].params: expected a number"),
        (
            ("metrics", "runs", 0, "buckets", 0, "step_s"),
            "fast",
            "metrics.runs[0].buckets[0].step_s: expected",
        ),
        (("metrics", "runs"), {}, "metrics.runs: expected list"),
        (("environ", "hostnames"), None, "environ.hostnames: missing"),
        (("name",), "allreduce", "result.name: expected 'models'"),
        (("schema_version",), 2, "result.schema_version: 2 is not supported"),
    ],
)
def test_reader_rejects_a_malformed_document_naming_the_key(path, value, message) -> None:
    doc = copy.deepcopy(_document())
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(ResultSchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ModelsResult.from_dict(doc)
