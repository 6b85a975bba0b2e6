"""``sdpose-edge devices``: OpenVINO's devices listed and every model of a folder compiled on each (CPU here;
GPU and NPU are not tested on this project's machines)."""
from __future__ import annotations

import json
from pathlib import Path

from edge_runtime.cli import main


def test_devices_lists_cpu_and_compiles_every_model(tmp_path: Path, fake_models_dir: Path) -> None:
    out = tmp_path / "devices.json"
    assert main(["devices", "--models", str(fake_models_dir), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "CPU" in report["devices"] and report["devices"]["CPU"]
    on_cpu = {t["model"]: t for t in report["compiles"] if t["device"] == "CPU"}
    assert set(on_cpu) == {"vae_encoder", "pose", "vae_pose"}
    assert all(t["ok"] and t["compile_s"] >= 0 and t["error"] is None for t in on_cpu.values())


def test_devices_reports_a_device_error(tmp_path: Path, fake_models_dir: Path) -> None:
    out = tmp_path / "devices.json"
    assert main(["devices", "--models", str(fake_models_dir), "--device", "NO_SUCH_DEVICE", "--device", "CPU",
                 "--json", str(out)]) == 0
    compiles = json.loads(out.read_text())["compiles"]
    bad = [t for t in compiles if t["device"] == "NO_SUCH_DEVICE"]
    assert len(bad) == 3 and not any(t["ok"] for t in bad)
    assert all("NO_SUCH_DEVICE" in t["error"] and t["compile_s"] is None for t in bad)
    assert all(t["ok"] for t in compiles if t["device"] == "CPU")


def test_devices_bad_folder_exit_code(tmp_path: Path) -> None:
    assert main(["devices", "--models", str(tmp_path / "missing")]) == 2
