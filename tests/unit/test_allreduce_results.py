"""Result documents: the JSON that certification rules and reports read."""

import json

import pytest
import torch

from validation.results import (
    SCHEMA_VERSION,
    AllreduceMeasurement,
    AllreduceMetrics,
    AllreduceResult,
    Environ,
    ResultSchemaError,
    collect_environ,
)

pytestmark = pytest.mark.unit


def _result() -> AllreduceResult:
    row = AllreduceMeasurement(
        dtype="bfloat16",
        size_bytes=1048576,
        count=524288,
        time_us_min=90.5,
        time_us_median=100.0,
        time_us_max=130.25,
        algbw_gbps=10.48576,
        busbw_gbps=18.35008,
        wrong=0,
        repeat_time_us=[100.0, 90.5, 130.25],
    )
    unchecked = AllreduceMeasurement("float32", 8, 2, 20.0, 21.0, 22.0, 0.0004, 0.0007, None)
    environ = Environ(
        hostnames=["gpu001"] * 4 + ["gpu002"] * 4,
        world_size=8,
        backend="nccl",
        torch_version="2.13.0",
        python_version="3.11.7",
        nccl_version="2.21.5",
        cuda_runtime="12.4",
        cuda_driver="550.127.08",
        device="NVIDIA H100 80GB HBM3",
    )
    metrics = AllreduceMetrics(
        sizes=[row, unchecked],
        avg_busbw_gbps=9.175,
        bus_factor=1.75,
        settings={"iters": 20, "repeat": 3},
    )
    return AllreduceResult(environ=environ, metrics=metrics)


def test_json_round_trip_is_lossless() -> None:
    result = _result()
    assert AllreduceResult.from_json(result.to_json()) == result


def test_json_has_the_userbenchmark_envelope_and_environ_keys() -> None:
    doc = json.loads(_result().to_json())
    assert {"name", "schema_version", "environ", "metrics"} <= doc.keys()
    assert doc["name"] == "allreduce"
    assert doc["schema_version"] == SCHEMA_VERSION
    required = {
        "hostnames",
        "world_size",
        "backend",
        "torch_version",
        "nccl_version",
        "cuda_driver",
        "python_version",
    }
    assert required <= doc["environ"].keys()
    row = doc["metrics"]["sizes"][0]
    for key in ("size_bytes", "count", "time_us_median", "algbw_gbps", "busbw_gbps", "wrong"):
        assert key in row
    assert doc["metrics"]["wrong_total"] == 0


def test_unchecked_rows_stay_distinguishable_from_correct_ones() -> None:
    doc = json.loads(_result().to_json())
    assert doc["metrics"]["sizes"][1]["wrong"] is None
    assert AllreduceResult.from_json(_result().to_json()).metrics.sizes[1].wrong is None


def test_reader_rejects_a_newer_schema() -> None:
    doc = json.loads(_result().to_json())
    doc["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ResultSchemaError, match="schema_version"):
        AllreduceResult.from_dict(doc)


def test_reader_names_the_missing_key() -> None:
    doc = json.loads(_result().to_json())
    del doc["metrics"]["sizes"][0]["busbw_gbps"]
    with pytest.raises(ResultSchemaError, match=r"metrics\.sizes\[0\]\.busbw_gbps"):
        AllreduceResult.from_dict(doc)


def test_reader_rejects_another_benchmark() -> None:
    doc = json.loads(_result().to_json())
    doc["name"] = "resnet50"
    with pytest.raises(ResultSchemaError, match="allreduce"):
        AllreduceResult.from_dict(doc)


def test_collect_environ_describes_this_machine() -> None:
    environ = collect_environ(["a", "b"], "gloo")
    assert environ.world_size == 2
    assert environ.torch_version == torch.__version__
    assert environ.python_version.count(".") == 2
    if not torch.cuda.is_available():
        assert environ.nccl_version is None and environ.device == "cpu"
