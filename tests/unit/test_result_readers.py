"""Every benchmark's documents are read through one registry, by name, without torch."""

from __future__ import annotations

import importlib

import pytest

from validation.results import READERS, ResultSchemaError, measurements_of

pytestmark = pytest.mark.unit

ENVIRON = {
    "hostnames": ["n1", "n2"],
    "world_size": 2,
    "backend": "gloo",
    "torch_version": "2.13.0",
    "python_version": "3.11.7",
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_each_registered_reader_exists_and_refuses_another_benchmarks_document(name):
    module_name, class_name = READERS[name].split(":")
    module = importlib.import_module(module_name)
    assert callable(module.measurements)
    other = next(n for n in READERS if n != name)
    doc = {"name": other, "schema_version": 1, "environ": ENVIRON, "metrics": {}}
    with pytest.raises(ResultSchemaError, match="result.name"):
        getattr(module, class_name).from_dict(doc)


def test_an_unknown_benchmark_is_a_schema_error_naming_it():
    with pytest.raises(ResultSchemaError, match="unknown benchmark 'nbody'"):
        measurements_of({"name": "nbody", "schema_version": 1})


def test_a_newer_schema_than_the_reader_knows_is_refused():
    doc = {"name": "storage", "schema_version": 99, "environ": ENVIRON, "metrics": {}}
    with pytest.raises(ResultSchemaError, match="schema_version: 99 is not supported"):
        measurements_of(doc)
