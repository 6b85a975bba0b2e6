"""``sdpose-edge run`` end to end on the tiny fake models (and once on tiny converted models with a detector):
outputs, error records, exit codes, --detections validation, --max-frames, the YAML config."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def write_people_images(folder: Path, n: int) -> dict[str, list]:
    """n images 160x120 with a bright blob; returns the --detections mapping for them."""
    folder.mkdir(parents=True, exist_ok=True)
    dets = {}
    for i in range(n):
        img = np.full((120, 160, 3), 30, np.uint8)
        cv2.circle(img, (40 + 4 * i, 60), 6, (255, 255, 255), -1)
        cv2.imwrite(str(folder / f"{i:012d}.png"), img)
        dets[f"{i:012d}.png"] = [[10, 10, 90, 110, 0.9], [95, 20, 150, 110, 0.7]]
    return dets


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_cli(*args: str) -> int:
    return main(["run", *args, "--no-cache", "--no-progress"])


def test_folder_with_corrupt_image(tmp_path: Path, fake_models_dir: Path) -> None:
    dets = write_people_images(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "000000000002.png").write_bytes(b"corrupt")
    (tmp_path / "d.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    code = run_cli("--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--output", str(out),
                   "--detections", str(tmp_path / "d.json"), "--openpose", "--save-images", "--batch", "3")
    assert code == 0
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    assert [r["source"] for r in records] == [f"{i:012d}.png" for i in range(4)]
    assert "error" in records[2] and records[2]["persons"] == []
    for r in (records[0], records[1], records[3]):
        assert "error" not in r and len(r["persons"]) == 2
        p = r["persons"][0]
        assert set(p) >= {"bbox_xyxy", "score", "keypoints", "track_id"} and len(p["keypoints"]) == 133
        assert r["width"] == 160 and r["height"] == 120 and "timestamp_ms" in r
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == 4 and summary["frames_out"] == 4 and summary["frames_failed"] == 1
    assert summary["persons"] == 6 and summary["batch"] == 3
    for key in ("fps", "latency_ms", "pose_busy_share", "frames_skipped"):
        assert key in summary
    coco = json.loads((out / "coco_results.json").read_text())
    assert len(coco) == 6 and {c["image_id"] for c in coco} == {0, 1, 3}
    openpose = json.loads((out / "openpose" / "000000.json").read_text())
    assert openpose["canvas_width"] == 160 and len(openpose["people"]) == 2
    assert len(openpose["people"][0]["pose_keypoints_2d"]) == 18 * 3
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.jpg", "000001.jpg", "000003.jpg"]


def test_nothing_processed_exits_nonzero(tmp_path: Path, fake_models_dir: Path) -> None:
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "imgs" / name).write_bytes(b"corrupt")
    (tmp_path / "d.json").write_text("{}")
    code = run_cli("--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--output",
                   str(tmp_path / "out"), "--detections", str(tmp_path / "d.json"))
    assert code == 1
    records = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert len(records) == 2 and all("error" in r for r in records)


def test_video_max_frames_and_video_output(tmp_path: Path, fake_models_dir: Path) -> None:
    out = tmp_path / "out"
    code = run_cli("--models", str(fake_models_dir), "--source", str(REPO / "samples" / "people.mp4"),
                   "--detections", str(REPO / "samples" / "people_detections.json"), "--output", str(out),
                   "--max-frames", "5", "--save-video", "--chain", "fused")
    assert code == 0
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4]
    assert all(len(r["persons"]) == 3 for r in records)
    assert [r["timestamp_ms"] for r in records] == sorted(r["timestamp_ms"] for r in records)
    assert not (out / "coco_results.json").exists()  # video input: no COCO results
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 5
    assert json.loads((out / "summary.json").read_text())["chain"] == "vae_pose"


@pytest.mark.parametrize("text, message", [
    ('{"000000000000.png": [[10, 10, 5, 50, 0.9]]}', "entry '000000000000.png', box 0: needs x2 > x1"),
    ('{"3": [[1, 2, 3]]}', "entry '3', box 0: expected [x1, y1, x2, y2, score]"),
    ('["not", "a", "mapping"]', "expected an object"),
])
def test_detections_validation(tmp_path: Path, fake_models_dir: Path, caplog: pytest.LogCaptureFixture,
                               text: str, message: str) -> None:
    write_people_images(tmp_path / "imgs", 1)
    (tmp_path / "bad_dets.json").write_text(text)
    code = run_cli("--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--output",
                   str(tmp_path / "out"), "--detections", str(tmp_path / "bad_dets.json"))
    assert code == 2
    assert "bad_dets.json" in caplog.text and message in caplog.text


def test_no_detector_and_no_detections(tmp_path: Path, fake_models_dir: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    write_people_images(tmp_path / "imgs", 1)
    code = run_cli("--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--output",
                   str(tmp_path / "out"))
    assert code == 2 and "no detector" in caplog.text and "--detections" in caplog.text


def test_yaml_config_precedence_and_unknown_key(tmp_path: Path, fake_models_dir: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    dets = write_people_images(tmp_path / "imgs", 3)
    (tmp_path / "d.json").write_text(json.dumps(dets))
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("batch: 2\nmax_frames: 2\nparts: [body]\ncache_dir: null\nprogress: false\n")
    common = ["--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--detections",
              str(tmp_path / "d.json"), "--config", str(cfg)]
    assert main(["run", *common, "--output", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["batch"] == 2 and summary["frames_out"] == 2 and summary["settings"]["parts"] == ["body"]
    assert summary["compile_options"]["cache_dir"] is None
    record = read_jsonl(tmp_path / "a" / "predictions.jsonl")[0]
    scores = np.asarray(record["persons"][0]["keypoints"])[:, 2]
    assert np.all(scores[17:] == 0) and np.all(scores[:17] > 0)  # --parts body: other groups zeroed
    # CLI overrides YAML
    assert main(["run", *common, "--output", str(tmp_path / "b"), "--batch", "1", "--max-frames", "3"]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["batch"] == 1 and summary["frames_out"] == 3

    cfg.write_text("batch: 2\nbatchsize: 4\n")
    assert main(["run", *common, "--output", str(tmp_path / "c")]) == 2
    assert "unknown key 'batchsize'" in caplog.text and "edge.yaml" in caplog.text
    cfg.write_text("detect_every: 0\n")
    assert main(["run", *common, "--output", str(tmp_path / "c")]) == 2
    assert "'detect_every' = 0 is invalid" in caplog.text


def test_show_without_display_is_disabled(tmp_path: Path, fake_models_dir: Path, monkeypatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    dets = write_people_images(tmp_path / "imgs", 2)
    (tmp_path / "d.json").write_text(json.dumps(dets))
    code = run_cli("--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--output",
                   str(tmp_path / "out"), "--detections", str(tmp_path / "d.json"), "--show")
    assert code == 0 and "--show disabled" in caplog.text
    assert len(read_jsonl(tmp_path / "out" / "predictions.jsonl")) == 2


def test_shipped_config_is_valid() -> None:
    from edge_runtime.config import SCHEMA, defaults, load_config

    settings = load_config(REPO / "configs" / "edge.yaml")
    assert set(settings) == set(SCHEMA)  # the shipped file documents every key
    assert settings == {k: v for k, v in defaults().items()}


def test_command_line_options_come_from_the_settings_schema() -> None:
    """One schema: every setting option of `run` is built from config.SCHEMA (type, choices, on/off form) and
    validated by it; the option names are a contract and stay as they are."""
    import argparse

    from edge_runtime import config
    from edge_runtime.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.dest: a for a in sub.choices["run"]._actions if a.option_strings}
    assert [a.option_strings[0] for a in actions.values()] == [
        "-h", "--models", "--source", "--output", "--overwrite", "--config", "--detections", "--mode",
        "--max-frames", "--detect-every", "--batch", "--max-inflight-frames", "--chain-slots", "--max-persons",
        "--chain", "--reconnect-retries", "--schedule-poses", "--pose-budget", "--propagation", "--max-pose-age",
        "--delay-ms",
        "--release-memory", "--request-timeout", "--pose-server", "--pose-server-model", "--device", "--model-device",
        "--static-batch", "--int8-matmuls", "--hint", "--num-streams", "--num-threads", "--num-requests", "--inference-nice",
        "--precision-hint", "--cache-dir", "--no-cache", "--flip-test", "--decode", "--parts", "--score-threshold",
        "--bbox-padding", "--smooth", "--det-score-threshold", "--openpose",
        "--openpose-confidence", "--openpose-naming", "--coco-annotations", "--save-video", "--save-images",
        "--show", "--progress"]
    for key in config.CLI_KEYS:
        action, check = actions[key], config.SCHEMA[key][1]
        assert action.default is None  # not given: the YAML or the built-in default applies
        if hasattr(check, "choices"):
            assert tuple(action.choices) == tuple(check.choices)
        if check is config.SCHEMA["flip_test"][1]:
            assert isinstance(action, argparse.BooleanOptionalAction)
    # a value the option's type accepts but the schema does not is refused, naming the key
    args = build_parser().parse_args(["run", "--models", "m", "--source", "s", "--output", "o", "--batch", "0"])
    from edge_runtime.commands.run_cli import resolve_settings

    with pytest.raises(InputError, match="command line: 'batch' = 0 is invalid"):
        resolve_settings(args)


def test_live_mode_on_a_small_cpu_leaves_a_core_and_says_why(tmp_path: Path, fake_models_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_runtime.model import compile_choice

    monkeypatch.setattr(compile_choice, "available_cores", lambda: 2)  # a 2-core box, whatever runs the test
    lowered: list[int] = []  # record the inference threads' nice value instead of lowering this process's threads
    monkeypatch.setattr(compile_choice, "lower_priority", lambda tids, nice: lowered.append(nice) or 0)
    common = ("--models", str(fake_models_dir), "--source", str(REPO / "samples" / "people.mp4"), "--detections",
              str(REPO / "samples" / "people_detections.json"), "--max-frames", "3")
    summaries = {}
    for name, extra in (("live", ("--mode", "live")), ("user", ("--mode", "live", "--num-threads", "2")),
                        ("file", ())):
        assert run_cli(*common, "--output", str(tmp_path / name), *extra) == 0
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    live = summaries["live"]
    assert {k: live["compile_choice"][k] for k in ("num_threads", "hint", "num_requests", "inference_nice")} == {
        "num_threads": 1, "hint": "LATENCY", "num_requests": 1, "inference_nice": 10}
    assert live["inference_nice"] == 10 and set(lowered) == {min(19, compile_choice._own_nice() + 10)}  # 19: the highest nice
    assert "live mode on 2 core(s)" in live["compile_choice"]["reason"]
    assert (live["compile_options"]["inference_num_threads"], live["compile_options"]["performance_hint"],
            live["compile_options"]["num_requests"]) == (1, "LATENCY", 1)
    assert live["requests"] == {"vae_encoder": 1, "pose": 1}
    user = summaries["user"]["compile_choice"]  # the user's value wins; the rule still sets the others
    assert (user["num_threads"], user["hint"], user["num_requests"]) == (2, "LATENCY", 1)
    assert "set by the user: --num-threads 2" in user["reason"]
    file = summaries["file"]["compile_choice"]
    assert (file["num_threads"], file["hint"], file["num_requests"], file["inference_nice"]) == (
        None, "THROUGHPUT", None, 0)


def test_static_batch_and_model_device(tmp_path: Path, fake_models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``--static-batch``: the models are compiled with the batch fixed to ``--batch`` (the path an NPU takes)
    and partial batches are padded: the poses equal a dynamic-batch run's. ``--model-device KIND=DEV`` sends
    that model to DEV (an unknown device fails naming it); malformed values are clear errors (exit 2)."""
    import logging

    caplog.set_level(logging.INFO)
    dets = write_people_images(tmp_path / "imgs", 2)
    (tmp_path / "d.json").write_text(json.dumps(dets))
    common = ("--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--detections",
              str(tmp_path / "d.json"), "--batch", "3", "--precision-hint", "f32")
    assert run_cli(*common, "--output", str(tmp_path / "dyn"), "--model-device", "pose=CPU") == 0
    assert run_cli(*common, "--output", str(tmp_path / "static"), "--static-batch") == 0
    assert "static batch of 3" in caplog.text
    dyn, static = read_jsonl(tmp_path / "dyn" / "predictions.jsonl"), read_jsonl(tmp_path / "static" / "predictions.jsonl")
    assert [len(r["persons"]) for r in static] == [2, 2]  # 4 crops in batches of 3: the second request pads
    for a, b in zip(dyn, static):
        np.testing.assert_allclose([p["keypoints"] for p in a["persons"]], [p["keypoints"] for p in b["persons"]],
                                   atol=1e-3)
    caplog.clear()
    assert run_cli(*common, "--output", str(tmp_path / "bad"), "--model-device", "pose=NO_SUCH_DEVICE") == 2
    assert "device 'NO_SUCH_DEVICE' could not compile" in caplog.text
    for bad, message in (("unet=GPU", "unknown model kind 'unet'"), ("pose", "'pose' is not KIND=DEVICE")):
        caplog.clear()
        assert run_cli(*common, "--output", str(tmp_path / "bad2"), "--model-device", bad) == 2
        assert message in caplog.text
