"""SIGINT / SIGTERM in the middle of a run: capture stops, in-flight frames are drained, every output is closed
(valid JSONL with consecutive frames, summary.json, playable overlay video)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def long_video(path: Path, n: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (160, 120))
    for i in range(n):
        img = np.full((120, 160, 3), 30, np.uint8)
        cv2.circle(img, (40 + (i % 60), 60), 6, (255, 255, 255), -1)
        writer.write(img)
    writer.release()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_leaves_valid_outputs(tmp_path: Path, make_fake_models, signum: int) -> None:
    models = make_fake_models(slow_ops=200)  # same outputs, ~25 ms per pose request
    n = 400
    video = long_video(tmp_path / "long.mp4", n)
    dets = {str(i): [[10, 10, 100, 110, 0.9], [60, 5, 150, 115, 0.8]] for i in range(n)}
    (tmp_path / "d.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--models", str(models), "--source", str(video),
           "--detections", str(tmp_path / "d.json"), "--output", str(out), "--save-video", "--no-cache",
           "--num-requests", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = out / "predictions.jsonl"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before the signal: {proc.communicate()[1][-2000:]}"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"signal {int(signum)}" in stderr
    lines = jsonl.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    assert jsonl.read_text().endswith("\n")
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert 3 <= len(records) < n
    assert all(len(r["persons"]) == 2 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["frames_out"] == len(records)
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert cap.isOpened()
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == len(records)


def test_a_second_signal_ends_the_run_at_once_with_outputs_closed(tmp_path: Path, make_fake_models) -> None:
    models = make_fake_models(slow_ops=1500)  # same outputs, ~0.3 s per pose request
    n = 200
    video = long_video(tmp_path / "long.mp4", n)
    # 6 persons per frame and 6 frames in flight: draining after the first signal takes ~36 x 0.3 s / 2
    dets = {str(i): [[10 + 20 * j, 10, 60 + 20 * j, 110, 0.9] for j in range(6)] for i in range(n)}
    (tmp_path / "d.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--models", str(models), "--source", str(video),
           "--detections", str(tmp_path / "d.json"), "--output", str(out), "--no-cache", "--num-requests", "2"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = out / "predictions.jsonl"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if jsonl.is_file() and jsonl.read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before the signal: {proc.communicate()[1][-2000:]}"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "again" in stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]  # complete lines only
    assert [r["frame"] for r in records] == list(range(len(records)))
    summary = json.loads((out / "summary.json").read_text())  # written on the way out, atomically
    assert "KeyboardInterrupt" in summary["error"] and summary["frames_out"] == len(records)
