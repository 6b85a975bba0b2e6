"""COCO-WholeBody evaluation (``edge_runtime.media.coco``): known AP on hand-made annotations, OKS-NMS, image ids."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pycocotools", reason="COCO evaluation needs the eval extra (pip install '.[eval]')")

from convert.figures import random_look, random_pose, render_scene  # noqa: E402
from edge_runtime.running.results import FrameResult  # noqa: E402
from edge_runtime.media.coco import (CocoResultsSink, ImageIds, evaluate_keypoints, load_annotation_ids,  # noqa: E402
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
        ids.add(name, frame)
    with caplog.at_level("WARNING"):
        mapping, how = ids.finish()
    assert len(set(mapping.values())) == 3 and how == "frame index" and "not unique" in caplog.text
    coco = ImageIds()
    for frame, name in enumerate(("000000000785.jpg", "000000000139.jpg")):
        coco.add(f"val2017/{name}", frame)
    assert coco.finish() == ({"val2017/000000000785.jpg": 785, "val2017/000000000139.jpg": 139}, "file-name number")
    # with annotations: ids from images[].file_name; a file it does not list is an error, not a merge
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps({"images": [{"id": 7, "file_name": "x/a1.jpg"}, {"id": 9, "file_name": "b1.jpg"}]}))
    sink = CocoResultsSink(tmp_path / "out" / "coco_results.json", annotations=ann_path)
    kp = np.zeros((1, 133, 3))
    kp[..., 2] = 0.9
    person = {"bbox_xyxy": [0, 0, 5, 5], "score": 1.0, "keypoints": kp[0].tolist()}
    sink.write(FrameResult.from_record({"frame": 0, "source": "imgs/a1.jpg", "persons": [person]}))
    sink.write(FrameResult.from_record({"frame": 1, "source": "imgs/b1.jpg", "persons": [person, person]}))
    with pytest.raises(InputError, match="no image named 'c1.jpg'"):
        sink.write(FrameResult.from_record({"frame": 2, "source": "imgs/c1.jpg", "persons": [person]}))
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


def _grid(x0: float, y0: float, x1: float, y1: float, n: int) -> np.ndarray:
    """n points [n,2] spread over the box (corners included): the box is exactly their extent."""
    side = int(np.ceil(np.sqrt(n)))
    xs, ys = np.meshgrid(np.linspace(x0, x1, side), np.linspace(y0, y1, side))
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    order = [0, side * side - 1] + list(range(1, side * side - 1))  # keep both extreme corners
    return pts[order[:n]]


def _person(body: tuple, face: tuple) -> np.ndarray:
    """133 keypoints [133,2]: body, feet and hands spread over ``body`` (x0, y0, x1, y1), the face over ``face``."""
    kp = np.zeros((133, 2))
    kp[0:17] = _grid(*body, 17)
    kp[17:23] = _grid(*body, 6)
    kp[23:91] = _grid(*face, 68)
    kp[91:112] = _grid(*body, 21)
    kp[112:133] = _grid(*body, 21)
    return kp


def _gt(ann_id: int, image_id: int, kp: np.ndarray, area: float) -> dict:
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": area, "num_keypoints": 17}
    x0, y0 = kp.min(0)
    x1, y1 = kp.max(0)
    ann["bbox"] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
    flat = np.concatenate([kp, np.full((133, 1), 2.0)], axis=1)
    for key, lo, hi in PART_FIELDS:
        ann[key] = flat[lo:hi].reshape(-1).tolist()
    return ann


def test_area_ranges_use_the_body_keypoint_box_as_xtcocotools():
    """xtcocotools' loadRes gives every detection the area of its body-keypoint box in every part's evaluation.

    Image 1: a large person A (area 20000), found exactly (score 0.9), and a false positive F (score 0.95) far
    from it whose body spans 50x50 px (area 2500: medium) and whose face spans 120x120 px (14400: large).
    Image 2: a medium person B (area 5000), found exactly (score 0.8). By the rule F is a medium detection in
    every part: AP(M) ranks F (false) before B (true) -> precision 1/2 at recall 1 -> 0.5; AP(L) sees only A,
    found -> 1.0. (Taking F's area from its face box would give the face part AP(M) 1.0 and AP(L) 0.5.)"""
    a = _person((20, 20, 170, 170), (60, 30, 110, 80))
    b = _person((20, 20, 90, 90), (40, 25, 60, 45))
    f = _person((400, 300, 450, 350), (330, 50, 450, 170))
    ann = {"images": [{"id": 1, "file_name": "1.jpg", "width": 640, "height": 480},
                      {"id": 2, "file_name": "2.jpg", "width": 640, "height": 480}],
           "annotations": [_gt(1, 1, a, 20000.0), _gt(2, 2, b, 5000.0)],
           "categories": [{"id": 1, "name": "person"}]}
    results = [result_entry(a, np.ones(133), 1, 0.9), result_entry(f, np.ones(133), 1, 0.95),
               result_entry(b, np.ones(133), 2, 0.8)]
    metrics = evaluate_keypoints(ann, results)
    for part in ("body", "foot", "face", "lefthand", "righthand", "wholebody"):
        m = metrics[part]
        assert m["AP (M)"] == pytest.approx(0.5) and m["AP (L)"] == pytest.approx(1.0), (part, m)
        assert m["AR (M)"] == pytest.approx(1.0) and m["AR (L)"] == pytest.approx(1.0), (part, m)
        # all areas: F ranks first and is false, A and B are found -> precision 2/3 at recall 1
        assert m["AP"] == pytest.approx(2 / 3, abs=1e-6), (part, m)


def test_gt_boxes_follow_mmpose():
    """--gt-boxes gives the model mmpose's boxes: crowd, num_keypoints == 0 and all-zero keypoints dropped, each
    box clipped to [0, width-1] x [0, height-1] of its image (and dropped when nothing is left)."""
    from edge_runtime.commands.eval_cli import boxes_per_image

    kp = _person((20, 20, 90, 90), (40, 25, 60, 45))
    base = _gt(0, 1, kp, 5000.0)
    anns = [dict(base, id=1, bbox=[-10.0, 5.0, 60.0, 50.0]),              # clipped at the left
            dict(base, id=2, bbox=[600.0, 400.0, 100.0, 100.0]),          # clipped at 639, 479
            dict(base, id=3, num_keypoints=0),                            # no labelled body keypoint
            dict(base, id=4, iscrowd=1),
            dict(base, id=5, bbox=[700.0, 10.0, 50.0, 50.0]),             # outside the image
            dict(base, id=6, **{key: [0.0] * (3 * (hi - lo)) for key, lo, hi in PART_FIELDS}),  # all zero
            dict(base, id=7, image_id=2)]
    ann = {"images": [{"id": 1, "file_name": "1.jpg", "width": 640, "height": 480},
                      {"id": 2, "file_name": "2.jpg", "width": 100, "height": 80}],
           "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    boxes = boxes_per_image(ann, None, True)
    np.testing.assert_allclose(boxes[1], [[0, 5, 50, 55, 1], [600, 400, 639, 479, 1]])
    bx, by, bw, bh = base["bbox"]
    np.testing.assert_allclose(boxes[2], [[bx, by, min(bx + bw, 99), min(by + bh, 79), 1]])
    del ann["images"][0]["width"]
    with pytest.raises(InputError, match="image 1 needs 'width' and 'height'"):
        boxes_per_image(ann, None, True)
