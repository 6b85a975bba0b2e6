"""Shared pytest configuration. Fixture modules register themselves in ``pytest_plugins``."""
import os

# Keep OpenVINO/torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")

pytest_plugins: list[str] = ["tests.fake_models", "tests.fixtures_convert", "tests.fixtures_export",
                             "tests.fixtures_quantize"]
