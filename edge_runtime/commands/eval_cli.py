"""``sdpose-edge eval``: COCO-WholeBody (or COCO body-17) AP/AR of a converted model folder.

``sdpose-edge eval --models MODELS --annotations ANN.json --images DIR [--detections DETS.json | --gt-boxes]
--out DIR`` runs the model top-down on every image of the annotation file: on the ground-truth person boxes
(``--gt-boxes``, mmpose's ground-truth-box protocol: :func:`mmpose_gt_boxes`, score 1.0) or on a COCO detection
results file (``[{"image_id", "category_id": 1, "bbox": [x, y, w, h], "score"}]``,
person boxes above ``--det-score-threshold``). It writes ``DIR/results.json`` (the keypoint results) and
``DIR/metrics.json``: ``{"wholebody": {"AP", "AR", ...}, "body", "foot", "face", "lefthand", "righthand"}``
(only ``body`` for a 17-keypoint model), computed as :func:`edge_runtime.media.coco.evaluate_keypoints` does.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import config as cfgmod
from edge_runtime.media.coco import PART_KEYS, coco_instance_score, evaluate_keypoints, result_entry
from edge_runtime.errors import InputError
from edge_runtime.media.sources import read_image

logger = logging.getLogger(__name__)
#: an annotation's keypoint fields (COCO: "keypoints" only; COCO-WholeBody: body, foot, face, hands)
KEYPOINT_FIELDS = tuple(key for key, _ in PART_KEYS.values())


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the {what} as JSON ({exc})") from exc


def _gt_box(ann: dict[str, Any], image: dict[str, Any]) -> list[float] | None:
    """One annotation's box [x1, y1, x2, y2] clipped to the image, or None when mmpose drops the instance."""
    if "bbox" not in ann or "keypoints" not in ann or ann.get("iscrowd"):
        return None
    kps = np.asarray(sum((ann.get(k) or [] for k in KEYPOINT_FIELDS), []), np.float64).reshape(-1, 3)
    visible = ann["num_keypoints"] if "num_keypoints" in ann else np.count_nonzero(kps[:17, :2].max(axis=1))
    if visible == 0 or kps[:, :2].max(initial=0.0) <= 0:
        return None
    try:
        width, height = float(image["width"]), float(image["height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"annotations: image {image.get('id')} needs 'width' and 'height' to clip its "
                         f"ground-truth boxes ({exc})") from exc
    x, y, w, h = (float(v) for v in ann["bbox"])
    x1, y1 = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
    x2, y2 = np.clip(x + w, 0, width - 1), np.clip(y + h, 0, height - 1)
    return [float(x1), float(y1), float(x2), float(y2)] if x2 > x1 and y2 > y1 else None


def mmpose_gt_boxes(annotations: dict[str, Any]) -> dict[int, list[list[float]]]:
    """image id -> ground-truth boxes [x1, y1, x2, y2, 1.0] image px, as mmpose's top-down datasets
    (``BaseCocoStyleDataset.parse_data_info`` / ``_is_valid_instance``, ``CocoWholeBodyDataset``) give them to the
    model with ``bbox_file`` unset: crowd annotations, annotations with ``num_keypoints == 0`` (else counted from the
    body keypoints) or all-zero keypoints dropped; each box clipped to [0, width-1] x [0, height-1] of its image and
    dropped when nothing is left of it."""
    images = {int(img["id"]): img for img in annotations["images"]}
    out: dict[int, list[list[float]]] = {image_id: [] for image_id in images}
    for ann in annotations.get("annotations") or []:
        image = images.get(int(ann["image_id"]))
        box = _gt_box(ann, image) if image is not None else None
        if box is not None:
            out[int(ann["image_id"])].append([*box, 1.0])
    return out


def boxes_per_image(annotations: dict[str, Any], detections: Path | None, gt_boxes: bool,
                    det_score_threshold: float = 0.0) -> dict[int, np.ndarray]:
    """image id -> boxes [M,5] (x1, y1, x2, y2, score) image px, from the GT (:func:`mmpose_gt_boxes`) or a detection
    results file."""
    out: dict[int, list[list[float]]] = {int(img["id"]): [] for img in annotations["images"]}
    if gt_boxes:
        out = mmpose_gt_boxes(annotations)
    else:
        dets = _load_json(detections, "detections")
        if not isinstance(dets, list):
            raise InputError(f"{detections}: expected a COCO detection results list "
                             "[{image_id, category_id, bbox [x, y, w, h], score}, ...]")
        for i, det in enumerate(dets):
            try:
                image_id, cat, (x, y, w, h), score = int(det["image_id"]), int(det["category_id"]), \
                    (float(v) for v in det["bbox"]), float(det["score"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{detections}: entry {i} is not a detection result ({exc})") from exc
            if cat == 1 and score > det_score_threshold and w > 0 and h > 0 and image_id in out:
                out[image_id].append([x, y, x + w, y + h, score])
    return {k: np.asarray(v, np.float32).reshape(-1, 5) for k, v in out.items()}


def run_eval(models: str | Path, annotations_path: str | Path, images: str | Path, out: str | Path, *,
             detections: str | Path | None = None, gt_boxes: bool = False, options: Any = None,
             det_score_threshold: float = 0.0, max_images: int | None = None) -> dict[str, Any]:
    """Run the model on the annotated images and evaluate; writes results.json and metrics.json."""
    from edge_runtime.model.estimator import PoseEstimator

    if gt_boxes == (detections is not None):
        raise InputError("pass exactly one of --detections DETS.json and --gt-boxes")
    annotations = _load_json(Path(annotations_path), "annotations")
    if not isinstance(annotations, dict) or not isinstance(annotations.get("images"), list):
        raise InputError(f"{annotations_path}: expected a COCO annotation file with an 'images' list")
    boxes = boxes_per_image(annotations, Path(detections) if detections else None, gt_boxes, det_score_threshold)
    estimator = PoseEstimator(models, options=options)
    image_list = sorted(annotations["images"], key=lambda img: int(img["id"]))[:max_images]
    if max_images is not None:
        keep = {int(img["id"]) for img in image_list}
        annotations = dict(annotations, images=image_list,
                           annotations=[a for a in annotations.get("annotations") or [] if int(a["image_id"]) in keep])
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n, img in enumerate(image_list, start=1):
        path = Path(images) / str(img["file_name"])
        try:
            frame = read_image(path)
        except InputError as exc:
            raise InputError(f"{exc} (image of annotation id {img['id']})") from exc
        b = boxes[int(img["id"])]
        if len(b):
            keypoints, scores = estimator(frame, b[:, :4])
            for kp, sc, box_score in zip(keypoints, scores, b[:, 4]):
                results.append(result_entry(kp, sc, int(img["id"]), coco_instance_score(float(box_score), sc)))
        if n % 50 == 0 or n == len(image_list):
            logger.info("eval: %d/%d images, %d persons (%.1f s)", n, len(image_list), len(results),
                        time.perf_counter() - started)
    metrics = evaluate_keypoints(annotations, results, num_keypoints=estimator.num_keypoints)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from edge_runtime.running.records import json_safe

    (out / "results.json").write_text(json.dumps(json_safe(results)) + "\n", encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    for part, m in metrics.items():
        logger.info("%-10s AP %.4f  AR %.4f", part, m["AP"], m["AR"])
    return metrics


def register(subparsers: Any, name: str = "eval") -> None:
    p = subparsers.add_parser(name, help="COCO-WholeBody AP/AR of a model folder on annotated images",
                              description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="model folder")
    p.add_argument("--annotations", required=True, help="COCO-WholeBody (or COCO) annotation JSON")
    p.add_argument("--images", required=True, help="folder holding the images' file_name entries")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--detections", default=None, help="COCO detection results JSON (person boxes)")
    src.add_argument("--gt-boxes", action="store_true", help="use the ground-truth boxes (mmpose use_gt_bbox)")
    p.add_argument("--det-score-threshold", type=float, default=0.0, help="with --detections (default 0)")
    p.add_argument("--out", required=True, help="output folder (results.json, metrics.json)")
    p.add_argument("--device", default=cfgmod.DEFAULTS.device)
    p.add_argument("--precision-hint", choices=cfgmod.SCHEMA["precision_hint"].check.choices, default=None)
    cfgmod.add_cli_options({"OpenVINO": p}, keys=("model_device",))
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images (by id) only")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edge_runtime.model.models import CompileOptions

    options = CompileOptions(device=args.device, performance_hint="LATENCY", inference_precision=args.precision_hint,
                             model_device=cfgmod.parse_model_device(args.model_device) if args.model_device else None)
    run_eval(args.models, args.annotations, args.images, args.out, detections=args.detections,
             gt_boxes=args.gt_boxes, options=options, det_score_threshold=args.det_score_threshold,
             max_images=args.max_images)
    return 0
