"""Fixtures for export/parity tests: model folders exported from the tiny synthetic checkpoints.

``exported_models(scheme, precision="fp32", input_size=(256, 192), fused=True, head_layout="instance",
vae_token_downsample=1) -> Path``
exports (once per session and per arguments) the tiny checkpoint of ``scheme`` (decoder in ``head_layout``) with ``convert.export.export_models`` and
returns the model folder. Treat the folders as read-only.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

#: crop (H, W) used by the tiny export tests: small enough to stay fast, SDPose's 4:3 aspect
TINY_INPUT_SIZE = (256, 192)


@pytest.fixture(scope="session")
def exported_models(tiny_checkpoint: Callable[..., Path],
                    tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``exported_models(scheme, precision, input_size, fused) -> Path`` of an exported model folder."""
    from convert.export import export_models

    cache: dict[tuple, Path] = {}

    def make(scheme: str, precision: str = "fp32", input_size: tuple[int, int] = TINY_INPUT_SIZE,
             fused: bool = True, head_layout: str = "instance", vae_token_downsample: int = 1) -> Path:
        key = (scheme, precision, tuple(input_size), bool(fused), head_layout, vae_token_downsample)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"models_{scheme}_{head_layout}_{precision}_{input_size[0]}x{input_size[1]}")
            export_models(tiny_checkpoint(scheme, head_layout=head_layout), out, precision=precision,
                          input_size=input_size, fused=fused, vae_token_downsample=vae_token_downsample)
            cache[key] = out
        return cache[key]

    return make
