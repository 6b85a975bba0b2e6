"""Fixtures for quantization / conversion tests: one tiny INT8 conversion shared by the session.

``converted_int8`` runs ``convert.convert_cmd.convert`` once on the tiny wholebody checkpoint (64x48 crops,
a random-weight yolo11n detector, the shipped default calibration set, subset 4, 2 held-out crops, one
latency run) keeping the FP32 export, and returns ``(models_dir, fp32_dir, report)``. Read-only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

#: crop (H, W) of the quantization tests: tiny, SDPose's 4:3 aspect
QUANT_INPUT_SIZE = (64, 48)
DEFAULT_CALIB = Path(__file__).resolve().parent.parent / "calib_data" / "default"


def tiny_convert_config(precision: str = "int8", **overrides: Any):
    """A ConvertConfig for CI: tiny subsets, 2 held-out crops, one f32 latency run, 160 px detector."""
    from convert.convert_cmd import load_config

    cfg = load_config(None, precision=precision, subset_size=4, input_size=QUANT_INPUT_SIZE, held_out=2,
                      latency_runs=1)
    cfg.detector_imgsz = 160
    cfg.latency_hints = ["f32"]
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="session")
def synthetic_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight yolo11n.pt (ultralytics yaml, no download)."""
    from convert.detector import make_synthetic_yolo

    return make_synthetic_yolo(tmp_path_factory.mktemp("yolo") / "yolo11n.pt")


@pytest.fixture(scope="session")
def converted_int8(tiny_checkpoint_wholebody: Path, synthetic_yolo: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """(INT8 model folder, kept FP32 export, report dict) of the tiny wholebody checkpoint."""
    from convert.convert_cmd import convert

    root = tmp_path_factory.mktemp("converted_int8")
    out, fp32 = root / "models", root / "fp32"
    report = convert(tiny_checkpoint_wholebody, out, tiny_convert_config("int8"), calib=DEFAULT_CALIB,
                     detector=synthetic_yolo, keep_fp32=fp32)
    return out, fp32, report
