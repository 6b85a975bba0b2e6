"""Fixtures for converter tests: tiny synthetic SDPose checkpoints (random weights, public layout).

``tiny_checkpoint(scheme, detector=False)`` builds (once per session and per arguments) a tiny synthetic
checkpoint with ``convert.synthetic.make_synthetic`` (seed 0) and returns its folder. Treat the folders as
read-only: copy them (``shutil.copytree``) before modifying anything.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``tiny_checkpoint("wholebody"|"body", detector=False) -> Path`` of a tiny checkpoint folder."""
    from convert.synthetic import make_synthetic

    cache: dict[tuple[str, bool], Path] = {}

    def make(scheme: str, detector: bool = False) -> Path:
        key = (scheme, bool(detector))
        if key not in cache:
            root = tmp_path_factory.mktemp(f"ckpt_tiny_{scheme}{'_det' if detector else ''}")
            cache[key] = make_synthetic(root / "ckpt", size="tiny", scheme=scheme, seed=0, detector=detector)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint_wholebody(tiny_checkpoint: Callable[..., Path]) -> Path:
    """Tiny synthetic SDPose-Wholebody checkpoint folder (133 keypoints, head reads up_blocks[2])."""
    return tiny_checkpoint("wholebody")


@pytest.fixture(scope="session")
def tiny_checkpoint_body(tiny_checkpoint: Callable[..., Path]) -> Path:
    """Tiny synthetic SDPose-Body checkpoint folder (17 keypoints, head reads up_blocks[3])."""
    return tiny_checkpoint("body")
