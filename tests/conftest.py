"""Shared pytest configuration. Fixture modules register themselves in ``pytest_plugins``.

``tests/runtime`` needs only the runtime install plus pytest (``pip install '.[test]'``); ``tests/convert``
needs the converter (torch, diffusers, nncf ...) and is skipped without it (its conftest.py). The converter's
fixture plugins are registered only where torch is installed."""
import importlib.util
import os

# Keep OpenVINO/torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")

#: the converter's fixtures import torch: only where it is installed
HAVE_CONVERTER = importlib.util.find_spec("torch") is not None

pytest_plugins: list[str] = ["tests.fake_models"] + (
    ["tests.fixtures_convert", "tests.fixtures_export", "tests.fixtures_quantize"] if HAVE_CONVERTER else [])

#: fixtures whose tests are expensive: they are marked ``slow`` (run everywhere, deselect with -m "not slow")
SLOW_FIXTURES = ("converted_int8", "convert_bench")


def pytest_collection_modifyitems(config, items) -> None:
    import pytest

    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
