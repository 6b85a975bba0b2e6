"""Fixtures for converter tests: tiny synthetic SDPose checkpoints (random weights, public layout).

``tiny_checkpoint(scheme, detector=False, head_layout="instance")`` builds (once per session and per
arguments) a tiny synthetic checkpoint with ``convert.synthetic.make_synthetic`` (seed 0) and returns its
folder. The decoder is in the released layout (InstanceNorm + SiLU) unless ``head_layout="batchnorm"``. Treat the folders as
read-only: copy them (``shutil.copytree``) before modifying anything.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``tiny_checkpoint("wholebody"|"body", detector=False, head_layout="instance") -> Path``."""
    from convert.synthetic import make_synthetic

    cache: dict[tuple[str, bool, str], Path] = {}

    def make(scheme: str, detector: bool = False, head_layout: str = "instance") -> Path:
        key = (scheme, bool(detector), head_layout)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"ckpt_tiny_{scheme}_{head_layout}{'_det' if detector else ''}")
            cache[key] = make_synthetic(root / "ckpt", size="tiny", scheme=scheme, seed=0, detector=detector,
                                        head_layout=head_layout)
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
