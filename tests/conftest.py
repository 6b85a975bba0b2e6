"""Shared pytest configuration. Fixture modules register themselves in ``pytest_plugins``."""
import os

# Keep OpenVINO/torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")

pytest_plugins: list[str] = ["tests.fake_models", "tests.fixtures_convert", "tests.fixtures_export",
                             "tests.fixtures_quantize"]

#: fixtures whose tests are expensive: they are marked ``slow`` (run everywhere, deselect with -m "not slow")
SLOW_FIXTURES = ("converted_int8", "convert_bench")


def pytest_collection_modifyitems(config, items) -> None:
    import pytest

    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
