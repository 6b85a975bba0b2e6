"""Calibration set builder (calib_data.builder, `sdpose-convert calib`) and reader, plus the shipped default set."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from calib_data.builder import (BuildParams, build_calibration_set, default_calibration_dir,
                                load_calibration_set)
from edge_runtime.errors import InputError
from edge_runtime.model.geometry import udp_warp_matrix, warp_crop

SIZE = (48, 64)  # crop (w, h): small and 3:4 like 768x1024


def _scene(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    """A structured BGR test image: smooth gradient background + a few coloured blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 60 + 40 * seed)], -1).astype(np.uint8)
    for _ in range(6):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        img[y:y + 20, x:x + 12] = rng.integers(0, 256, 3)
    return img


@pytest.fixture()
def inputs(tmp_path):
    """photos/ (3 images + an exact copy of one), walk.avi (12 frames: 6 static then 6 moving), dets.json."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.png"), _scene(i))
    cv2.imwrite(str(photos / "p0_copy.png"), _scene(0))
    (photos / "notes.txt").write_text("not an image")
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    assert writer.isOpened()
    for t in range(12):
        frame = np.full((120, 160, 3), 40, np.uint8)
        x = 20 if t < 6 else 20 + 9 * (t - 5)
        frame[20:100, x:x + 30] = (30 + 15 * t, 200, 255 - 15 * t)
        writer.write(frame)
    writer.release()
    box = [[10, 10, 90, 110]]
    dets = {
        "p0.png": box, "photos/p1.png": [[20, 5, 100, 115, 0.9], [100, 10, 150, 100]], "p2.png": box,
        "p0_copy.png": box,
        "walk.avi": {str(t): [[15, 15, 60 + 9 * max(0, t - 5), 105]] for t in range(12)},
    }
    dets_path = tmp_path / "dets.json"
    dets_path.write_text(json.dumps(dets))
    return {"photos": photos, "video": video, "dets": dets_path, "root": tmp_path}


def _params(**kw) -> BuildParams:
    base = dict(input_size=SIZE, max_crops=50, frames_per_video=12, max_frames=5, seed=3)
    base.update(kw)
    return BuildParams(**base)


def test_build_manifest_crops_and_dedup(inputs, tmp_path):
    out = tmp_path / "set"
    manifest_path = build_calibration_set(out, images=[inputs["photos"]], videos=[inputs["video"]],
                                          detections=inputs["dets"], params=_params())
    m = json.loads(manifest_path.read_text())
    assert m["seed"] == 3 and m["params"]["input_width"] == 48 and m["params"]["input_height"] == 64
    assert m["person_boxes"]["detections"] == "dets.json"
    counts = m["counts"]
    # p0_copy duplicates p0 exactly; the 6 static video frames collapse to one
    assert counts["duplicates_skipped"] >= 1 + 5
    sources = {c["source"] for c in m["crops"]}
    assert "photos/p0.png" in sources and "photos/p0_copy.png" not in sources
    assert [s["name"] for s in m["sources"]] == ["photos/p0.png", "photos/p0_copy.png", "photos/p1.png",
                                                 "photos/p2.png", "walk.avi"]
    assert m["sources"][-1]["frames_read"] == 12
    video_frames = sorted(c["frame"] for c in m["crops"] if c["source"] == "walk.avi")
    assert video_frames[0] == 0 and all(f >= 6 for f in video_frames[1:])
    assert len([c for c in m["crops"] if c["source"] == "photos/p1.png"]) == 2
    calib = load_calibration_set(out)
    calib.verify()
    for rec, crop in zip(calib.crop_records, calib.crops()):
        assert set(rec) >= {"file", "source", "frame", "box", "sha256", "box_source", "dhash"}
        assert crop.shape == (64, 48, 3)
        assert rec["box_source"] == "detections"
    # the stored crop is the runtime's own UDP crop of the recorded box
    rec = next(r for r in calib.crop_records if r["source"] == "photos/p2.png")
    expected = warp_crop(_scene(2), udp_warp_matrix(rec["box"], SIZE, 1.25), SIZE)
    got = cv2.imread(str(out / rec["file"]))
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 3.0  # JPEG q95
    assert len(m["frames"]) <= 5 and all(f["sha256"] for f in m["frames"])
    frames = list(calib.frames())
    assert len(frames) == len(m["frames"]) and all(f.ndim == 3 for f in frames)


def test_reproducible_and_seeded_subset(inputs, tmp_path):
    kw = dict(images=[inputs["photos"]], videos=[inputs["video"]], detections=inputs["dets"])
    a = json.loads(build_calibration_set(tmp_path / "a", params=_params(max_crops=3), **kw).read_text())
    b = json.loads(build_calibration_set(tmp_path / "b", params=_params(max_crops=3), **kw).read_text())
    assert a == b and len(a["crops"]) == 3
    for rec in a["crops"]:
        assert (tmp_path / "a" / rec["file"]).read_bytes() == (tmp_path / "b" / rec["file"]).read_bytes()
    picks = {tuple((c["source"], c["frame"]) for c in json.loads(
        build_calibration_set(tmp_path / f"s{seed}", params=_params(max_crops=3, seed=seed), **kw).read_text())["crops"])
        for seed in range(4)}
    assert len(picks) > 1  # the seed drives which crops are kept
    assert not list(tmp_path.glob(".*building*"))  # no staging folder left behind


def test_png_format_is_lossless(inputs, tmp_path):
    out = tmp_path / "png"
    build_calibration_set(out, images=[inputs["photos"] / "p2.png"], detections=inputs["dets"],
                          params=_params(image_format="png"))
    calib = load_calibration_set(out)
    rec = calib.crop_records[0]
    assert rec["file"].endswith(".png")
    expected = warp_crop(_scene(2), udp_warp_matrix(rec["box"], SIZE, 1.25), SIZE)
    np.testing.assert_array_equal(next(calib.crops()), expected)


def test_full_frame_fallback_is_warned(inputs, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    out = tmp_path / "ff"
    build_calibration_set(out, images=[inputs["photos"] / "p1.png"], params=_params())
    rec = load_calibration_set(out).crop_records[0]
    assert rec["box_source"] == "full_frame" and rec["box"] == [0.0, 0.0, 160.0, 120.0]
    assert "full frame" in caplog.text


def test_detector_callable_is_used_when_no_boxes_given(inputs, tmp_path):
    calls = []

    def fake_detector(image):
        calls.append(image.shape)
        return np.array([[5.0, 5.0, 70.0, 100.0]], np.float32), np.array([0.7], np.float32)

    out = tmp_path / "det"
    build_calibration_set(out, images=[inputs["photos"] / "p1.png", inputs["photos"] / "p2.png"],
                          detections=inputs["dets"], detector=fake_detector, params=_params(),
                          detector_info={"source": "fake"})
    calib = load_calibration_set(out)
    # p1/p2 are both in dets.json, so the detector is not needed ...
    assert not calls and {r["box_source"] for r in calib.crop_records} == {"detections"}
    out2 = tmp_path / "det2"
    build_calibration_set(out2, images=[inputs["photos"] / "p1.png"], detector=fake_detector, params=_params(),
                          detector_info={"source": "fake"})
    rec = load_calibration_set(out2).crop_records[0]
    assert calls == [(120, 160, 3)] and rec["box_source"] == "detector" and rec["score"] == pytest.approx(0.7)
    assert rec["box"] == [5.0, 5.0, 70.0, 100.0]


def test_cli(inputs, tmp_path):
    from convert.cli import main

    out = tmp_path / "cli"
    code = main(["calib", "--images", str(inputs["photos"]), "--videos", str(inputs["video"]),
                 "--detections", str(inputs["dets"]), "--out", str(out), "--max-crops", "4", "--seed", "1",
                 "--frames-per-video", "4", "--input-size", "64x48"])
    assert code == 0
    m = load_calibration_set(out).manifest
    assert len(m["crops"]) == 4 and m["params"]["frames_per_video"] == 4 and m["seed"] == 1
    assert m["sources"][-1]["frames_read"] == 4
    # an existing set is not overwritten without --overwrite: exit code 2, files intact
    before = (out / "manifest.json").read_bytes()
    assert main(["calib", "--images", str(inputs["photos"]), "--out", str(out)]) == 2
    assert (out / "manifest.json").read_bytes() == before
    assert main(["calib", "--images", str(inputs["photos"]), "--detections", str(inputs["dets"]),
                 "--out", str(out), "--overwrite", "--input-size", "64x48"]) == 0
    assert load_calibration_set(out).manifest["sources"][-1]["name"] == "photos/p2.png"


def test_input_errors(inputs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"--images .*empty: no images found"):
        build_calibration_set(tmp_path / "o1", images=[empty])
    with pytest.raises(InputError, match="no such file or folder"):
        build_calibration_set(tmp_path / "o2", images=[tmp_path / "missing"])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InputError, match="broken.mp4"):
        build_calibration_set(tmp_path / "o3", videos=[broken], params=_params())
    with pytest.raises(InputError, match="no calibration input"):
        build_calibration_set(tmp_path / "o4")
    nobody = tmp_path / "nobody.json"
    nobody.write_text(json.dumps({"p0.png": [], "p1.png": [], "p2.png": [], "p0_copy.png": []}))
    with pytest.raises(InputError, match="no crops produced"):
        build_calibration_set(tmp_path / "o5", images=[inputs["photos"]], detections=nobody, params=_params())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"p0.png": [[10, 10, 5, 20]]}))
    with pytest.raises(InputError, match=r"bad.json: 'p0.png'\[0\]"):
        build_calibration_set(tmp_path / "o6", images=[inputs["photos"]], detections=bad, params=_params())
    with pytest.raises(InputError, match="max_crops"):
        build_calibration_set(tmp_path / "o7", images=[inputs["photos"]], params=_params(max_crops=0))
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=r"x.jpg: cannot read the image"):
        build_calibration_set(tmp_path / "o8", images=[unreadable], params=_params())
    assert not any((tmp_path / f"o{i}").exists() and any((tmp_path / f"o{i}").iterdir()) for i in range(1, 9))


def test_reader_errors(tmp_path, inputs):
    with pytest.raises(InputError, match="no such folder"):
        load_calibration_set(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="manifest.json is missing"):
        load_calibration_set(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_calibration_set(tmp_path / "bad")
    out = tmp_path / "set"
    build_calibration_set(out, images=[inputs["photos"]], detections=inputs["dets"], params=_params())
    m = json.loads((out / "manifest.json").read_text())
    first = out / m["crops"][0]["file"]
    first.write_bytes(first.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(InputError, match="does not match the manifest"):
        load_calibration_set(out).verify()
    first.unlink()
    with pytest.raises(InputError, match="is missing"):
        load_calibration_set(out)
    m["crops"] = []
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="has no crops"):
        load_calibration_set(out)


def test_default_set_ships_and_matches_its_manifest():
    calib = load_calibration_set("default")
    assert calib.path == default_calibration_dir()
    assert calib.input_size == (768, 1024)
    assert 12 <= len(calib) <= 16 and len(calib.frame_records) >= 4
    calib.verify()  # every crop/frame file hash matches the manifest
    names = {r["source"].split("/")[-1].rsplit("_", 1)[0] for r in calib.crop_records}
    assert {"astronaut", "camera", "grace"} <= {n.split("_")[0] for n in names}
    total = sum(p.stat().st_size for p in calib.path.rglob("*") if p.is_file())
    assert total < 4_000_000
    first = next(calib.crops())
    assert first.shape == (1024, 768, 3) and first.dtype == np.uint8
    half = next(calib.crops(size=(384, 512)))
    assert half.shape == (512, 384, 3)
    with pytest.raises(InputError, match="aspect"):
        next(calib.crops(size=(512, 512)))
    assert next(calib.frames()).shape[2] == 3
