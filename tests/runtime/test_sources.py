"""Frame sources: image folders/globs with a corrupt file, video files (also truncated), spec parsing."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import InputError
from edge_runtime.media.sources import (ImageFilesSource, LiveSource, ReconnectPolicy, VideoFileSource, is_live_spec,
                                  open_source)


def write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = np.full((40, 50, 3), 20 * i, np.uint8)
        path = folder / f"img_{i:02d}.png"
        cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def write_video(path: Path, n: int, size=(96, 64), fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        img = np.full((size[1], size[0], 3), 0, np.uint8)
        cv2.putText(img, str(i), (10, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        img[:, :, 2] = np.uint8(8 * i)
        writer.write(img)
    writer.release()
    return path


def test_folder_sorted_with_corrupt_image(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "img_01.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path / "imgs"))
    assert isinstance(source, ImageFilesSource) and source.total == 4 and source.default_mode == "file"
    frames = list(source)
    assert [f.name for f in frames] == ["img_00.png", "img_01.png", "img_02.png", "img_03.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.ok for f in frames] == [True, False, True, True]
    assert "img_01.png" in frames[1].error and frames[1].timestamp_ms is None
    assert frames[2].image.shape == (40, 50, 3) and int(frames[2].image[0, 0, 0]) == 40


def test_glob_and_single_image(tmp_path: Path) -> None:
    write_images(tmp_path, 3)
    frames = list(open_source(str(tmp_path / "img_0[12].png")))
    assert [f.name for f in frames] == ["img_01.png", "img_02.png"]
    single = open_source(str(tmp_path / "img_00.png"))
    assert [f.name for f in single] == ["img_00.png"]


def test_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="no file, folder or glob match"):
        open_source(str(tmp_path / "*.jpg"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is no video")
    with pytest.raises(InputError, match="bad.mp4"):
        open_source(str(bad))


def test_live_specs() -> None:
    assert is_live_spec("0") and is_live_spec("rtsp://cam/stream") and is_live_spec("http://x/y.mjpg")
    assert not is_live_spec("video.mp4")
    assert isinstance(open_source("rtsp://127.0.0.1:9/none"), LiveSource)
    assert list(ReconnectPolicy(max_retries=5, initial_s=0.5, max_s=2.0).delays()) == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert list(ReconnectPolicy(max_retries=0).delays()) == []


def test_video_file_frames_and_timestamps(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "v.mp4", 8)))
    assert isinstance(source, VideoFileSource) and source.total == 8 and source.fps == pytest.approx(10.0)
    frames = list(source)
    assert [f.index for f in frames] == list(range(8))
    assert [f.name for f in frames][:2] == ["v.mp4#0", "v.mp4#1"]
    assert [round(f.timestamp_ms) for f in frames] == [100 * i for i in range(8)]
    reds = [int(np.median(f.image[:, :, 2])) for f in frames]
    assert all(abs(r - 8 * i) <= 4 for i, r in enumerate(reds))


def test_truncated_video_stops_cleanly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # MJPG-in-AVI: the header announces 30 frames; cut the file in the middle of the frame data
    path = tmp_path / "t.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    source = VideoFileSource(path)
    assert source.total == 30
    with caplog.at_level("WARNING"):
        frames = list(source)
    assert 0 < len(frames) < 30
    assert all(f.ok for f in frames) and [f.index for f in frames] == list(range(len(frames)))
    assert "truncated" in caplog.text and f"stopped at frame {len(frames)} of the 30" in caplog.text


def test_truncated_mp4_is_a_clear_error(tmp_path: Path) -> None:
    # cv2.VideoWriter puts the mp4 index (moov) at the end: cutting the file makes it unreadable
    path = write_video(tmp_path / "t.mp4", 30, size=(320, 240))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InputError, match="t.mp4: cannot open as a video"):
        open_source(str(path))


def test_close_stops_iteration(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "v.mp4", 10)))
    seen = []
    for frame in source:
        seen.append(frame.index)
        if frame.index == 2:
            source.close()
    assert seen == [0, 1, 2]


def test_unreachable_rtsp_gives_up_after_bounded_retries() -> None:
    source = open_source("rtsp://127.0.0.1:9/none", policy=ReconnectPolicy(max_retries=1, initial_s=0.01))
    with pytest.raises(InputError, match="gave up after 1 retries"):
        list(source)
