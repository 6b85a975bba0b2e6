"""COCO(-WholeBody) results, image ids, and the evaluation mmpose's ``CocoWholeBodyMetric`` does.

* :class:`CocoResultsSink` writes ``coco_results.json`` (xtcocotools' COCO-WholeBody result layout).
* Image ids: from a COCO annotation file when one is given (``images[].file_name`` -> ``id``, matched on the
  base name), else a stable, collision-free mapping decided at close: the number each file name ends with
  (``000000000785.jpg`` -> 785, what COCO's own files use) when those numbers are unique over the run, else
  the frame index for every file. The mapping is written next to the results (``coco_image_ids.json``).
  A file missing from the annotations, or two annotation images with one base name, is an error -- never a
  silent merge of two images' results.
* :func:`evaluate_keypoints` computes AP/AR per part (body, foot, face, left hand, right hand, whole body)
  with the COCO-WholeBody sigmas, as ``CocoWholeBodyMetric`` (score_mode ``bbox_keypoint``, OKS-NMS 0.9,
  ``use_area``) does with xtcocotools; for a 17-keypoint model, COCO body AP as ``CocoMetric``.

Why not xtcocotools: its only registry build (1.14.3) imports only with numpy < 2 and the runtime uses
numpy 2. pycocotools (numpy-2 builds on PyPI) has the same ``COCOeval``; xtcocotools' part types differ only
in *which* keypoints enter the OKS, so each part is evaluated by giving pycocotools that part's keypoints,
visible count and sigmas (and dropping detections whose part confidences are all zero, as xtcocotools
does), with each detection's area taken from its body keypoints as xtcocotools' ``loadRes`` does
(:func:`body_keypoint_box`). ``pip install 'sdpose-edge[eval]'`` installs pycocotools.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.model.keypoints import NUM_BODY, NUM_WHOLEBODY, WHOLEBODY_PARTS
from edge_runtime.running.records import json_safe
from edge_runtime.running.results import FrameResult

logger = logging.getLogger(__name__)

#: COCO-WholeBody OKS sigmas, 133 values in keypoint order (mmpose ``coco_wholebody.py`` / xtcocotools)
WHOLEBODY_SIGMAS = np.array([
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087,
    0.089, 0.089, 0.068, 0.066, 0.066, 0.092, 0.094, 0.094, 0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031,
    0.025, 0.020, 0.023, 0.029, 0.032, 0.037, 0.038, 0.043, 0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012,
    0.012, 0.011, 0.011, 0.013, 0.015, 0.009, 0.007, 0.007, 0.007, 0.012, 0.009, 0.008, 0.016, 0.010, 0.017,
    0.011, 0.009, 0.011, 0.009, 0.007, 0.013, 0.008, 0.011, 0.012, 0.010, 0.034, 0.008, 0.008, 0.009, 0.008,
    0.008, 0.007, 0.010, 0.008, 0.009, 0.009, 0.009, 0.007, 0.007, 0.008, 0.011, 0.008, 0.008, 0.008, 0.010,
    0.008, 0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017,
    0.021, 0.021, 0.032, 0.020, 0.019, 0.022, 0.031, 0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024,
    0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.020, 0.019, 0.022, 0.031])
assert WHOLEBODY_SIGMAS.shape == (NUM_WHOLEBODY,)
#: result/annotation key of each part, and its keypoint range; "wholebody" is all of them
PART_KEYS = {"body": ("keypoints", WHOLEBODY_PARTS["body"]), "foot": ("foot_kpts", WHOLEBODY_PARTS["feet"]),
             "face": ("face_kpts", WHOLEBODY_PARTS["face"]),
             "lefthand": ("lefthand_kpts", WHOLEBODY_PARTS["left_hand"]),
             "righthand": ("righthand_kpts", WHOLEBODY_PARTS["right_hand"])}
#: mmpose CocoMetric defaults
KEYPOINT_SCORE_THR = 0.2
NMS_THR = 0.9
IDS_FILE = "coco_image_ids.json"


def coco_instance_score(box_score: float, scores: np.ndarray, keypoint_score_thr: float = KEYPOINT_SCORE_THR) -> float:
    """mmpose CocoMetric score_mode 'bbox_keypoint': bbox score x mean of the keypoint scores above
    ``keypoint_score_thr`` (0 when none is above)."""
    s = np.asarray(scores, dtype=np.float64)
    valid = s[np.isfinite(s) & (s > keypoint_score_thr)]
    mean = float(valid.mean()) if valid.size else 0.0
    return float(box_score) * mean


def trailing_number(name: str) -> int | None:
    """The number a file name's stem ends with (``000000000785.jpg`` -> 785), else None."""
    match = re.search(r"(\d+)$", Path(str(name)).stem)
    return int(match.group(1)) if match else None


def load_annotation_ids(path: str | Path) -> dict[str, int]:
    """``images[].file_name`` (base name) -> ``id`` of a COCO annotation file; InputError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = data["images"]
        mapping: dict[str, int] = {}
        for img in images:
            name, image_id = Path(str(img["file_name"])).name, int(img["id"])
            if name in mapping and mapping[name] != image_id:
                raise InputError(f"{path}: two images share the file name {name!r} (ids {mapping[name]} and "
                                 f"{image_id}); their results would merge")
            mapping[name] = image_id
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: expected a COCO annotation file with images[].file_name and images[].id "
                         f"({exc})") from exc
    return mapping


class ImageIds:
    """Frames (source name, frame index) -> COCO image ids (see the module doc); ``finish()`` returns {source: id}."""

    def __init__(self, annotations: dict[str, int] | None = None, source: str = "--coco-annotations"):
        self.annotations = annotations
        self.source = source
        self.frames: dict[str, int] = {}

    def add(self, source: "str | None", frame: int) -> None:
        """One input frame: its source name (None: the frame index names it) and frame index."""
        name = str(source or frame)
        if self.annotations is not None and Path(name).name not in self.annotations:
            raise InputError(f"{self.source}: no image named {Path(name).name!r} (input frame {frame}); "
                             "its results cannot be given an image id")
        self.frames.setdefault(name, int(frame))

    def finish(self) -> tuple[dict[str, int], str]:
        """({source: image id}, how the ids were chosen)."""
        if self.annotations is not None:
            return {n: self.annotations[Path(n).name] for n in self.frames}, "annotations"
        numbers = {n: trailing_number(n) for n in self.frames}
        if all(v is not None for v in numbers.values()) and len(set(numbers.values())) == len(numbers):
            return {n: int(v) for n, v in numbers.items()}, "file-name number"
        if any(v is not None for v in numbers.values()):
            logger.warning("COCO image ids: the numbers the file names end with are missing or not unique "
                           "(e.g. a1.jpg and b1.jpg); using the frame index for every image instead "
                           "(pass --coco-annotations to use a dataset's ids)")
        return dict(self.frames), "frame index"


def _write_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, allow_nan=False))
    os.replace(tmp, path)


def result_entry(keypoints: np.ndarray, scores: np.ndarray, image_id: int, score: float) -> dict[str, Any]:
    """One COCO result: keypoints [K,2] image px + scores [K] -> xtcocotools' layout (K = 133 or 17)."""
    flat = np.concatenate([keypoints, scores[:, None]], axis=1)
    result: dict[str, Any] = {"image_id": int(image_id), "category_id": 1}
    if flat.shape[0] == NUM_WHOLEBODY:
        for key, (start, stop) in PART_KEYS.values():
            result[key] = flat[start:stop].reshape(-1).tolist()
    else:
        result["keypoints"] = flat.reshape(-1).tolist()
    result["score"] = float(score)
    return result


class CocoResultsSink:
    """``coco_results.json``: COCO-WholeBody keypoint results, as xtcocotools' COCO-WholeBody eval reads.

    Per person: ``{"image_id", "category_id": 1, "keypoints": body 17*3, "foot_kpts": 6*3,
    "face_kpts": 68*3, "lefthand_kpts": 21*3, "righthand_kpts": 21*3, "score"}`` (body-17 models:
    ``keypoints`` only); [x, y, keypoint score] in image px. ``score`` = :func:`coco_instance_score`
    (mmpose's default rescoring; OKS-NMS is applied by :func:`evaluate_keypoints`, not here). Image ids:
    :class:`ImageIds`, with the mapping written to ``coco_image_ids.json`` beside the results. Failed
    frames contribute nothing. Both files are written at close via a temporary file + rename.
    """

    closed = False

    def __init__(self, path: str | Path, keypoint_score_thr: float = KEYPOINT_SCORE_THR,
                 annotations: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.keypoint_score_thr = float(keypoint_score_thr)
        self.ids = ImageIds(load_annotation_ids(annotations) if annotations else None, str(annotations))
        self._pending: list[tuple[str, dict[str, Any]]] = []

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        if result.error:
            return
        self.ids.add(result.source, result.frame)
        name = str(result.source or result.frame)
        posed = result.with_pose()
        for kp, sc, box_score in zip(posed.keypoints, posed.scores, posed.box_scores):
            score = coco_instance_score(box_score, sc, self.keypoint_score_thr)
            self._pending.append((name, result_entry(kp, sc, 0, score)))

    def close(self) -> None:
        if self.closed:
            return
        mapping, how = self.ids.finish()
        _write_atomic(self.path, [json_safe(dict(r, image_id=mapping[name])) for name, r in self._pending])
        _write_atomic(self.path.with_name(IDS_FILE), {"how": how, "image_ids": mapping})
        self.closed = True

    def __enter__(self) -> "CocoResultsSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- evaluation
def oks_nms(results: list[dict[str, Any]], sigmas: np.ndarray, threshold: float = NMS_THR) -> list[dict[str, Any]]:
    """mmpose ``oks_nms`` per image: keep the best-scored instance, drop the others whose OKS with it
    exceeds ``threshold`` (area = the kept instance's keypoint box area), repeat."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    kept: list[dict[str, Any]] = []
    variances = (sigmas * 2) ** 2
    for items in by_image.values():
        kpts = np.array([_all_keypoints(r) for r in items], np.float64).reshape(len(items), -1, 3)
        scores = np.array([r["score"] for r in items])
        areas = np.array([(k[:, 0].max() - k[:, 0].min()) * (k[:, 1].max() - k[:, 1].min()) for k in kpts])
        order = list(np.argsort(-scores, kind="stable"))
        while order:
            i = order.pop(0)
            kept.append(items[i])
            if not order:
                break
            rest = np.array(order)
            d2 = ((kpts[rest, :, :2] - kpts[i, None, :, :2]) ** 2).sum(-1)
            e = d2 / variances[None] / ((areas[i] + areas[rest])[:, None] / 2 + np.spacing(1)) / 2
            oks = np.exp(-e).mean(-1)
            order = [j for j, o in zip(order, oks) if o <= threshold]
    return kept


def _all_keypoints(r: dict[str, Any]) -> list[float]:
    return r["keypoints"] + sum((r[key] for key, _ in list(PART_KEYS.values())[1:] if key in r), [])


def body_keypoint_box(result: dict[str, Any]) -> list[float]:
    """[x, y, w, h] image px around a result's body keypoints (``keypoints``, every point whatever its score).

    xtcocotools' ``loadRes`` sets each detection's ``area`` from this box in *every* part's evaluation (it
    reads ``keypoints``, the body); pycocotools' ``loadRes`` takes ``area`` = w x h of a result's ``bbox``,
    so each part view carries this box and the area ranges of AP(M)/AP(L), AR(M)/AR(L) match xtcocotools'."""
    kp = np.asarray(result["keypoints"], np.float64).reshape(-1, 3)
    x0, y0 = kp[:, 0].min(), kp[:, 1].min()
    return [float(x0), float(y0), float(kp[:, 0].max() - x0), float(kp[:, 1].max() - y0)]


def _part_view(items: list[dict[str, Any]], key: str | None, is_gt: bool) -> list[dict[str, Any]]:
    """Copies whose ``keypoints`` are one part's (``key``) or all parts (None); GT ``num_keypoints`` and
    ``ignore`` recomputed from that part, detections with all-zero part confidences dropped (xtcocotools),
    detections' ``bbox`` = :func:`body_keypoint_box` (their area, as xtcocotools)."""
    out = []
    for item in items:
        kp = _all_keypoints(item) if key is None else item[key]
        visible = int(np.count_nonzero(np.asarray(kp, np.float64)[2::3] > 0))
        if not is_gt and visible == 0:
            continue
        copy = dict(item, keypoints=list(kp))
        if is_gt:
            copy["num_keypoints"] = visible
        else:
            copy["bbox"] = body_keypoint_box(item)
        out.append(copy)
    return out


def _coco_eval(gt: dict[str, Any], dts: list[dict[str, Any]], sigmas: np.ndarray) -> dict[str, float]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise InputError("COCO evaluation needs pycocotools: pip install 'sdpose-edge[eval]' "
                         "(or pip install pycocotools)") from exc
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if not dts:
            return {"AP": 0.0, "AR": 0.0}
        coco_dt = coco_gt.loadRes(dts)
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
    return {n: float(v) for n, v in zip(names, ev.stats)}


def evaluate_keypoints(annotations: dict[str, Any], results: list[dict[str, Any]], *,
                       nms_thr: float | None = NMS_THR, num_keypoints: int | None = None
                       ) -> dict[str, dict[str, float]]:
    """COCO-WholeBody AP/AR per part (or COCO body AP for 17-keypoint results).

    ``annotations``: a COCO(-WholeBody) annotation dict (images, annotations with keypoints/foot_kpts/
    face_kpts/lefthand_kpts/righthand_kpts, area, bbox, iscrowd). ``results``: :class:`CocoResultsSink`
    entries. ``num_keypoints``: the model's (133 or 17); None reads it from the results (133 when there are
    none). Returns {"body": {"AP", "AR", ...}, "foot": ..., "face": ..., "lefthand": ..., "righthand": ...,
    "wholebody": ...} (only "body" for 17 keypoints).
    """
    if num_keypoints is None:
        wholebody = not results or "foot_kpts" in results[0]
    elif num_keypoints in (NUM_WHOLEBODY, NUM_BODY):
        wholebody = num_keypoints == NUM_WHOLEBODY
    else:
        raise InputError(f"num_keypoints: expected {NUM_WHOLEBODY} or {NUM_BODY}, got {num_keypoints}")
    sigmas = WHOLEBODY_SIGMAS if wholebody else WHOLEBODY_SIGMAS[:NUM_BODY]
    if nms_thr is not None:
        results = oks_nms(results, sigmas, nms_thr)
    anns = annotations.get("annotations") or []
    cats = annotations.get("categories") or [{"id": 1, "name": "person"}]
    metrics: dict[str, dict[str, float]] = {}
    parts = list(PART_KEYS) + ["wholebody"] if wholebody else ["body"]
    for part in parts:
        key, rng = (None, (0, NUM_WHOLEBODY)) if part == "wholebody" else PART_KEYS[part]
        if wholebody and part != "wholebody":
            missing = [a.get("id") for a in anns if key not in a]
            if missing:
                raise InputError(f"annotations: {len(missing)} annotation(s) lack '{key}' (e.g. id {missing[0]}); "
                                 "expected COCO-WholeBody annotations")
        gt = {"images": annotations.get("images") or [], "categories": cats,
              "annotations": _part_view(anns, key, True)}
        metrics[part] = _coco_eval(gt, _part_view(results, key, False), sigmas[rng[0]:rng[1]])
    return metrics
