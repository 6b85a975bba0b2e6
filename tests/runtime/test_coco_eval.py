"""COCO-WholeBody evaluation (``edge_runtime.coco``): known AP on hand-made annotations, OKS-NMS, image ids."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pycocotools", reason="COCO evaluation needs the eval extra (pip install '.[eval]')")

from convert.figures import random_look, random_pose, render_scene  # noqa: E402
from edge_runtime.coco import (CocoResultsSink, ImageIds, evaluate_keypoints, load_annotation_ids,  # noqa: E402
                               oks_nms, result_entry)
from edge_runtime.errors import InputError  # noqa: E402

PART_FIELDS = (("keypoints", 0, 17), ("foot_kpts", 17, 23), ("face_kpts", 23, 91), ("lefthand_kpts", 91, 112),
               ("righthand_kpts", 112, 133))


def _annotations(num_images: int = 3, persons: int = 2, seed: int = 0):
    """A COCO-WholeBody annotation dict of drawn figures with exact keypoints (all visible), and the
    keypoints [I,P,133,2]."""
    rng = np.random.default_rng(seed)
    images, anns, all_kps = [], [], []
    for i in range(num_images):
        poses = [random_pose(rng, (120.0 + 200 * p, 200.0), 260.0) for p in range(persons)]
        _, kps, boxes = render_scene((200 * persons + 40, 360), poses, [random_look(rng) for _ in poses], rng)
        images.append({"id": 100 + i, "file_name": f"img_{i}.png", "width": 200 * persons + 40, "height": 360})
        for p, (kp, box) in enumerate(zip(kps, boxes)):
            ann = {"id": 1000 + 10 * i + p, "image_id": 100 + i, "category_id": 1, "iscrowd": 0,
                   "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                   "area": float((box[2] - box[0]) * (box[3] - box[1]) * 0.6)}
            flat = np.concatenate([kp, np.full((133, 1), 2.0)], axis=1)
            for key, lo, hi in PART_FIELDS:
                ann[key] = flat[lo:hi].reshape(-1).tolist()
            ann["num_keypoints"] = 17
            anns.append(ann)
        all_kps.append(kps)
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}, np.stack(all_kps)


def _results(kps: np.ndarray, swap_hands: bool = False) -> list[dict]:
    out = []
    for i, per_image in enumerate(kps):
        for kp in per_image:
            kp = kp.copy()
            if swap_hands:
                kp[91:112], kp[112:133] = kp[112:133].copy(), kp[91:112].copy()
            out.append(result_entry(kp, np.ones(133), 100 + i, 1.0))
    return out


def test_perfect_predictions_score_one_and_swapped_hands_zero():
    ann, kps = _annotations()
    perfect = evaluate_keypoints(ann, _results(kps))
    assert set(perfect) == {"body", "foot", "face", "lefthand", "righthand", "wholebody"}
    for part, m in perfect.items():
        assert m["AP"] == pytest.approx(1.0) and m["AR"] == pytest.approx(1.0), part
    swapped = evaluate_keypoints(ann, _results(kps, swap_hands=True))
    assert swapped["body"]["AP"] == pytest.approx(1.0) and swapped["face"]["AP"] == pytest.approx(1.0)
    assert swapped["lefthand"]["AP"] < 0.05 and swapped["righthand"]["AP"] < 0.05
    assert swapped["wholebody"]["AP"] < perfect["wholebody"]["AP"]


def test_body17_results_give_body_ap_only_and_shifted_keypoints_lower_it():
    ann, kps = _annotations()
    results = [dict(r) for r in _results(kps)]
    body_only = [{"image_id": r["image_id"], "category_id": 1, "keypoints": r["keypoints"], "score": 1.0}
                 for r in results]
    metrics = evaluate_keypoints(ann, body_only)
    assert set(metrics) == {"body"} and metrics["body"]["AP"] == pytest.approx(1.0)
    for r in body_only:
        k = np.array(r["keypoints"]).reshape(17, 3)
        k[:, 0] += 12.0  # 12 px off on ~260 px figures: OKS well below 1 for the small-sigma points
        r["keypoints"] = k.reshape(-1).tolist()
    assert evaluate_keypoints(ann, body_only)["body"]["AP"] < 0.9


def test_oks_nms_drops_near_duplicates_and_keeps_distinct_persons():
    ann, kps = _annotations(num_images=1)
    results = _results(kps)
    dup = dict(results[0], score=0.5)
    nearby = result_entry(kps[0, 0] + 0.5, np.ones(133), 100, 0.4)
    kept = oks_nms(results + [dup, nearby], np.full(133, 0.05), 0.9)
    assert len(kept) == 2 and {r["score"] for r in kept} == {1.0}


def test_annotations_must_be_wholebody_for_wholebody_results():
    ann, kps = _annotations(num_images=1)
    for a in ann["annotations"]:
        del a["foot_kpts"]
    with pytest.raises(InputError, match="lack 'foot_kpts'"):
        evaluate_keypoints(ann, _results(kps))


def test_image_ids_are_collision_free_and_written_next_to_results(tmp_path, caplog):
    ids = ImageIds()
    for frame, name in enumerate(("a1.jpg", "b1.jpg", "IMG_2024_0001.jpg")):
        ids.add({"frame": frame, "source": name})
    with caplog.at_level("WARNING"):
        mapping, how = ids.finish()
    assert len(set(mapping.values())) == 3 and how == "frame index" and "not unique" in caplog.text
    coco = ImageIds()
    for frame, name in enumerate(("000000000785.jpg", "000000000139.jpg")):
        coco.add({"frame": frame, "source": f"val2017/{name}"})
    assert coco.finish() == ({"val2017/000000000785.jpg": 785, "val2017/000000000139.jpg": 139}, "file-name number")
    # with annotations: ids from images[].file_name; a file it does not list is an error, not a merge
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps({"images": [{"id": 7, "file_name": "x/a1.jpg"}, {"id": 9, "file_name": "b1.jpg"}]}))
    sink = CocoResultsSink(tmp_path / "out" / "coco_results.json", annotations=ann_path)
    kp = np.zeros((1, 133, 3))
    kp[..., 2] = 0.9
    person = {"bbox_xyxy": [0, 0, 5, 5], "score": 1.0, "keypoints": kp[0].tolist()}
    sink.write({"frame": 0, "source": "imgs/a1.jpg", "persons": [person]})
    sink.write({"frame": 1, "source": "imgs/b1.jpg", "persons": [person, person]})
    with pytest.raises(InputError, match="no image named 'c1.jpg'"):
        sink.write({"frame": 2, "source": "imgs/c1.jpg", "persons": [person]})
    sink.close()
    results = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    assert [r["image_id"] for r in results] == [7, 9, 9]
    written = json.loads((tmp_path / "out" / "coco_image_ids.json").read_text())
    assert written == {"how": "annotations", "image_ids": {"imgs/a1.jpg": 7, "imgs/b1.jpg": 9}}
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({"images": [{"id": 1, "file_name": "a/x.jpg"}, {"id": 2, "file_name": "b/x.jpg"}]}))
    with pytest.raises(InputError, match="two images share the file name 'x.jpg'"):
        load_annotation_ids(dup)


def test_a_body_model_without_detections_is_scored_on_body_only():
    """The model's keypoint count picks the parts: no results from a 17-keypoint model still means body AP
    (0), not a demand for whole-body annotations."""
    ann, _ = _annotations(num_images=1)
    for a in ann["annotations"]:
        for key, _, _ in PART_FIELDS[1:]:
            del a[key]
    metrics = evaluate_keypoints(ann, [], num_keypoints=17)
    assert set(metrics) == {"body"} and metrics["body"]["AP"] == 0.0
    with pytest.raises(InputError, match="num_keypoints: expected 133 or 17"):
        evaluate_keypoints(ann, [], num_keypoints=20)
