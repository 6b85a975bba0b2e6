"""Person detector at run time: letterbox -> ``detector.xml`` -> decode + NMS, without torch or ultralytics.

``detector.xml`` (written by ``convert.detector``) takes ``image`` u8 [1, S, S, 3] BGR, a letterboxed frame,
and returns ``boxes`` f32 [1, 4 + C, A]: cx, cy, w, h in letterboxed input px, then C class scores in [0, 1].
The letterbox (resize keeping the aspect ratio + centred pad 114, same rounding as ultralytics'
``LetterBox``) runs here in cv2 because frames come in any size while the IR has a static input size; the
exact inverse maps boxes back to image px.

An anchor is a person when its best class is the person class (as ultralytics' single-label NMS does) and
that score exceeds ``conf_threshold``; overlapping person boxes are suppressed with ``cv2.dnn.NMSBoxes``.

Defaults follow the original SDPose app: it keeps person boxes with confidence > 0.5 and leaves the NMS IoU
at the ultralytics default, 0.7 (:data:`DEFAULT_CONF_THRESHOLD`, :data:`DEFAULT_IOU_THRESHOLD`); both are
configurable (``det_score_threshold`` / ``det_iou_threshold``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openvino as ov

from edge_runtime.model.model_info import DEFAULT_PAD_VALUE, DETECTOR_KIND, DetectorModelInfo  # noqa: F401  (re-exported)
from edge_runtime.errors import InputError, ModelFolderError
from edge_runtime.model.metadata import read_index, read_metadata

logger = logging.getLogger(__name__)

#: person score threshold of the original SDPose app (it keeps boxes with confidence > 0.5)
DEFAULT_CONF_THRESHOLD = 0.5
#: NMS IoU threshold: the original app leaves ultralytics' default
DEFAULT_IOU_THRESHOLD = 0.7


def _size_wh(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError) as exc:
            raise InputError(f"letterbox size: expected an int or (width, height), got {size!r}") from exc
    if w <= 0 or h <= 0:
        raise InputError(f"letterbox size: expected positive dimensions, got {size!r}")
    return w, h


def letterbox(image: np.ndarray, size: int | tuple[int, int],
              pad_value: int = DEFAULT_PAD_VALUE) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize ``image`` keeping its aspect ratio to fit ``size`` and pad the rest with ``pad_value``.

    Args:
        image: BGR u8 [H, W, 3] image px.
        size: output side S (square) or (width, height).
        pad_value: grey level of the padding (114 as ultralytics).

    Returns:
        (tensor, ratio, pad): tensor u8 [1, h_out, w_out, 3] BGR (the detector IR input); ratio = the scale
        image px -> letterbox px; pad = (left, top) in letterbox px. A point maps as
        ``x_lb = x_img * ratio + left`` and back as ``x_img = (x_lb - left) / ratio``.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"letterbox: expected a BGR image [H,W,3], got {getattr(image, 'shape', type(image))}")
    if image.dtype != np.uint8:
        raise InputError(f"letterbox: expected a u8 image, got dtype {image.dtype}")
    out_w, out_h = _size_wh(size)
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise InputError(f"letterbox: empty image of shape {image.shape}")
    ratio = min(out_w / w, out_h / h)
    new_w, new_h = int(round(w * ratio)), int(round(h * ratio))
    if (new_w, new_h) != (w, h):
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    else:
        resized = image
    # Same split as ultralytics: the odd pixel goes to the right/bottom.
    dw, dh = (out_w - new_w) / 2.0, (out_h - new_h) / 2.0
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    out = np.full((out_h, out_w, 3), pad_value, dtype=np.uint8)
    out[top:top + new_h, left:left + new_w] = resized
    return out[None], float(ratio), (left, top)


def unletterbox_boxes(boxes_xyxy: np.ndarray, ratio: float, pad: tuple[int, int],
                      image_shape: tuple[int, ...]) -> np.ndarray:
    """Map boxes_xyxy [N,4] letterbox px -> image px and clip to the image (``image_shape`` = (H, W, ...))."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
    left, top = pad
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - left) / ratio
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - top) / ratio
    h, w = image_shape[:2]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes.astype(np.float32)


class PersonDetector:
    """Runs ``detector.xml`` on BGR frames and returns person boxes in image px.

    Args:
        models: a ``ModelFolder`` (its ``detector`` component), a model folder path (index lists a
            ``detector``; no pose chain needed) or the path of a ``detector.xml``.
        options: ``edge_runtime.model.models.CompileOptions`` (None: defaults; the detector is compiled with the
            same device/precision choices as the pose IRs when the caller passes them).
        core: ``openvino.Core`` to use (a new one if None).
        conf_threshold: minimum person score. iou_threshold: NMS IoU. max_detections: keep at most this many.

    ``detector(image_bgr)`` -> (boxes_xyxy [M,4] f32 image px, scores [M] f32), highest score first.
    """

    def __init__(self, models: Any, options: Any = None, core: ov.Core | None = None,
                 conf_threshold: float = DEFAULT_CONF_THRESHOLD, iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                 max_detections: int = 100):
        if not 0.0 <= conf_threshold <= 1.0:
            raise InputError(f"conf_threshold: expected a value in [0, 1], got {conf_threshold!r}")
        if not 0.0 < iou_threshold <= 1.0:
            raise InputError(f"iou_threshold: expected a value in (0, 1], got {iou_threshold!r}")
        if not isinstance(max_detections, int) or max_detections < 1:
            raise InputError(f"max_detections: expected a positive integer, got {max_detections!r}")
        self.conf_threshold = float(conf_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = max_detections
        from edge_runtime.model.models import CompileOptions, compile_model

        if core is None:
            core = getattr(models, "core", None)
        self.core = core if core is not None else ov.Core()
        self.model, self.source = self._read(models)
        self.meta = read_metadata(self.model, source=self.source)
        #: the typed contract (kind, classes, person class, letterbox padding)
        self.info: DetectorModelInfo = DetectorModelInfo.from_rt_info(self.meta, str(self.source))
        shape = self.model.inputs[0].get_partial_shape()
        if shape.is_dynamic or len(shape) != 4 or shape[3].get_length() != 3:
            raise ModelFolderError(f"{self.source}: input shape {shape} is not a static [1,h,w,3] u8 BGR image")
        self.input_height = int(shape[1].get_length())
        self.input_width = int(shape[2].get_length())
        out = self.model.outputs[0].get_partial_shape()
        if len(out) != 3:
            raise ModelFolderError(f"{self.source}: output shape {out} is not [1, 4 + C, A]")
        self.class_names = list(self.info.class_names)
        self.person_class = self.info.person_class
        self.pad_value = self.info.pad_value
        self.options = options if options is not None else CompileOptions()
        self.compiled = compile_model(self.core, self.model, self.options)
        self.request = self.compiled.create_infer_request()

    def _read(self, models: Any) -> tuple[ov.Model, Path]:
        if hasattr(models, "read_model") and hasattr(models, "ir_path"):
            return models.read_model(DETECTOR_KIND), Path(models.ir_path(DETECTOR_KIND))
        path = Path(models).expanduser()
        if path.is_dir():
            index = read_index(path)
            rel = index["components"].get(DETECTOR_KIND)
            if not rel:
                raise ModelFolderError(f"{path / 'sdpose_models.json'}: no '{DETECTOR_KIND}' component "
                                       f"(the folder has: {', '.join(sorted(index['components'])) or 'none'}); "
                                       "export one with sdpose-convert")
            path = path / rel
        if not path.is_file():
            raise ModelFolderError(f"{path}: detector IR does not exist (expected detector.xml or a model folder)")
        if not path.with_suffix(".bin").is_file():
            raise ModelFolderError(f"{path.with_suffix('.bin')}: weights of the detector IR are missing")
        try:
            return self.core.read_model(str(path)), path
        except RuntimeError as exc:
            raise ModelFolderError(f"{path}: cannot read the detector IR: {exc}") from exc

    def preprocess(self, image_bgr: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """image_bgr u8 [H,W,3] -> (IR input u8 [1,h,w,3], meta {"ratio", "pad" (left, top), "image_shape"})."""
        tensor, ratio, pad = letterbox(image_bgr, (self.input_width, self.input_height), self.pad_value)
        return tensor, {"ratio": ratio, "pad": pad, "image_shape": tuple(image_bgr.shape)}

    def postprocess(self, raw: np.ndarray, meta: dict[str, Any], conf_threshold: float | None = None,
                    max_detections: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode the IR output into person boxes.

        Args:
            raw: f32 [1, 4 + C, A] (cx, cy, w, h letterbox px; C class scores).
            meta: from :meth:`preprocess` (ratio, pad, image_shape).
            conf_threshold, max_detections: this call's values (None: the detector's own).

        Returns:
            boxes_xyxy [M,4] f32 image px (clipped to the image), scores [M] f32, highest score first,
            M <= max_detections.
        """
        raw = np.asarray(raw)
        if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[1] < 5:
            raise InputError(f"detector output: expected [1, 4 + C, A], got {raw.shape}")
        num_classes = raw.shape[1] - 4
        if not 0 <= self.person_class < num_classes:
            raise ModelFolderError(f"{self.source}: person_class {self.person_class} is outside the "
                                   f"{num_classes} classes of the output")
        conf = self.conf_threshold if conf_threshold is None else float(conf_threshold)
        limit = self.max_detections if max_detections is None else int(max_detections)
        pred = raw[0]
        scores_all = pred[4:]
        person = scores_all[self.person_class]
        # strictly above, as ultralytics (conf > conf_thres), the original app (> 0.5) and NMSBoxes compare
        keep = (person > conf) & (scores_all.argmax(axis=0) == self.person_class)
        empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
        if not keep.any():
            return empty
        cx, cy, bw, bh = pred[0, keep], pred[1, keep], pred[2, keep], pred[3, keep]
        scores = person[keep].astype(np.float32)
        xywh = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1).astype(np.float32)
        idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), conf, self.iou_threshold)
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)[:limit]
        if idx.size == 0:
            return empty
        xyxy = xywh[idx].astype(np.float64)
        xyxy[:, 2:] += xyxy[:, :2]
        boxes = unletterbox_boxes(xyxy, meta["ratio"], meta["pad"], meta["image_shape"])
        return boxes, scores[idx]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the IR on one letterboxed input u8 [1,h,w,3]; returns raw f32 [1, 4 + C, A]."""
        return self.request.infer({0: tensor})[0]

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image_bgr u8 [H,W,3] -> (boxes_xyxy [M,4] image px, scores [M])."""
        tensor, meta = self.preprocess(image_bgr)
        return self.postprocess(self.infer(tensor), meta)
