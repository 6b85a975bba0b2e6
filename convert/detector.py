"""Person detector: ultralytics YOLO11 ``.pt`` -> ``detector.xml`` (kind ``detector``) in a model folder.

The IR contract (read by :mod:`edge_runtime.model.detector`, which needs neither torch nor ultralytics):

* input ``image``: u8 [1, S, S, 3] BGR NHWC, a *letterboxed* frame (resize keeping the aspect ratio,
  centred padding with value 114, as ultralytics' ``LetterBox``). BGR->RGB, /255 and NHWC->NCHW run
  inside the IR (OpenVINO ``PrePostProcessor``).
* output ``boxes``: f32 [1, 4 + C, A]: rows 0..3 = box centre x, centre y, width, height in letterboxed
  input px; rows 4.. = per-class sigmoid scores; A = sum over strides 8/16/32 of (S/stride)^2 anchors
  (8400 at S=640). No NMS in the graph: the runtime decodes and runs ``cv2.dnn.NMSBoxes``.

Why the letterbox itself is *not* in the IR: frames from cameras/streams/files come in any size, while the
IR has a static spatial size (static shapes compile faster and quantize better). A PPP resize would need a
dynamic input plus a separate pad step, and OpenVINO's resize does not round the target size and the pad
split exactly like ``LetterBox`` does; doing it in numpy/cv2 (:func:`edge_runtime.model.detector.letterbox`) keeps
the box mapping exact and shared by the converter, the calibration set and the runtime.

Importing ultralytics is kept offline: ``YOLO_OFFLINE=1`` is set before the import, so ultralytics' online
check, analytics and hub calls are skipped; weights, fonts and AMP checks are never requested because we
only build from the bundled yaml, load local ``.pt`` files and trace on CPU.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.model.detector import DEFAULT_PAD_VALUE, letterbox
from edge_runtime.errors import InputError, SDPoseError
from edge_runtime.model.metadata import FORMAT_VERSION, write_index, write_metadata
from edge_runtime.model.model_info import DetectorModelInfo

logger = logging.getLogger(__name__)

DETECTOR_FILE = "detector.xml"
DETECTOR_KIND = "detector"
SUPPORTED_PRECISIONS = ("fp32", "fp16")
#: ultralytics model yaml names that :func:`make_synthetic_yolo` accepts (bundled with the package)
SYNTHETIC_VARIANTS = ("yolo11n", "yolo11s", "yolo11m", "yolo11l", "yolo11x")


def _ultralytics():
    """Import ultralytics with every network path disabled (must run before the first import)."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    import ultralytics

    return ultralytics


def _coco_names() -> dict[int, str]:
    """The 80 COCO class names from ultralytics' bundled ``cfg/datasets/coco.yaml`` ({index: name})."""
    import yaml

    ultralytics = _ultralytics()
    path = Path(ultralytics.__file__).parent / "cfg" / "datasets" / "coco.yaml"
    data = yaml.safe_load(path.read_text())
    return {int(k): str(v) for k, v in data["names"].items()}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def make_synthetic_yolo(path: str | Path, variant: str = "yolo11n", seed: int = 0) -> Path:
    """Write a random-weight ultralytics YOLO11 detector ``.pt`` built from the bundled ``<variant>.yaml``.

    Nothing is downloaded. The model has the 80 COCO class names (class 0 = person), so it is a drop-in
    stand-in for ``yolo11x.pt`` of the public release; its scores are meaningless (random weights).
    The file loads with ``ultralytics.YOLO(path)``. Deterministic for a given ``seed`` (weights; the
    file also stores a date, so bytes differ).

    Returns the path written.
    """
    if variant not in SYNTHETIC_VARIANTS:
        raise SDPoseError(f"variant: expected one of {SYNTHETIC_VARIANTS}, got {variant!r}")
    import torch

    ultralytics = _ultralytics()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yolo = ultralytics.YOLO(f"{variant}.yaml", task="detect")
    yolo.model.names = _coco_names()
    yolo.save(str(path))
    logger.info("wrote random-weight %s detector to %s", variant, path)
    return path


def load_yolo(pt_path: str | Path) -> Any:
    """Load an ultralytics detection ``.pt`` and return its torch ``DetectionModel`` (float32, eval, CPU).

    Raises InputError naming the file when it is missing, unreadable or not a detection model.
    """
    pt_path = Path(pt_path)
    if not pt_path.is_file():
        raise InputError(f"detector checkpoint {pt_path} does not exist (expected an ultralytics YOLO .pt)")
    ultralytics = _ultralytics()
    try:
        yolo = ultralytics.YOLO(str(pt_path), task="detect")
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, OSError, EOFError) as exc:
        raise InputError(f"{pt_path}: cannot load as an ultralytics YOLO checkpoint ({exc})") from exc
    if getattr(yolo, "task", None) != "detect":
        raise InputError(f"{pt_path}: expected a detection model (task 'detect'), got task {yolo.task!r}")
    return yolo.model


def _prepare_for_export(model: Any) -> Any:
    """Copy of the DetectionModel set up for tracing: float32, eval, conv+BN fused, head in export mode.

    Export mode makes the head return the decoded [B, 4 + C, A] tensor only; the one-to-many branch is
    kept (``end2end`` off) so models with an NMS-free head (YOLO26 style) export the same contract.
    """
    from ultralytics.nn.modules import C2f, Detect

    model = copy.deepcopy(model).float().eval()
    for param in model.parameters():
        param.requires_grad = False
    head = model.model[-1]
    if not isinstance(head, Detect):
        raise InputError(f"expected a YOLO model whose last layer is a Detect head, got {type(head).__name__}")
    if getattr(head, "one2one_cv2", None) is not None:
        head.end2end = False
    model = model.fuse(verbose=False)
    for module in model.modules():
        if isinstance(module, Detect):
            module.export = True
            module.format = "openvino"
            module.dynamic = False
            module.shape = None
        elif isinstance(module, C2f):
            module.forward = module.forward_split
    return model


def class_names_of(model: Any) -> list[str]:
    """Class names of a DetectionModel as a list indexed by class id."""
    names = getattr(model, "names", None) or {}
    if isinstance(names, dict):
        return [str(names[i]) for i in sorted(names)]
    return [str(n) for n in names]


def _person_class(names: list[str]) -> int:
    for i, name in enumerate(names):
        if name.strip().lower() == "person":
            return i
    logger.warning("no class named 'person' among the detector's %d classes; using class 0 as person", len(names))
    return 0


def convert_detector(pt_path: str | Path, imgsz: int = 640, precision: str = "fp32") -> Any:
    """Convert a YOLO ``.pt`` to an in-memory ``openvino.Model`` with preprocessing and metadata.

    Input ``image`` u8 [1, imgsz, imgsz, 3] BGR letterboxed; output ``boxes`` f32 [1, 4 + C, A] (cx, cy, w,
    h in letterboxed input px, then class scores). ``precision`` is only recorded here ("fp16" is applied
    when saving). Used by :func:`export_detector` and by the quantization pass (which quantizes this model
    with :func:`detector_calibration_inputs` and :func:`detector_ignored_scope` before saving).
    """
    import openvino as ov
    import torch
    from openvino.preprocess import ColorFormat, PrePostProcessor

    if precision not in SUPPORTED_PRECISIONS:
        raise SDPoseError(
            f"detector precision: expected one of {SUPPORTED_PRECISIONS} for export, got {precision!r} "
            "(INT8 is applied afterwards by the quantization pass on the exported FP32 model)")
    if not isinstance(imgsz, int) or imgsz <= 0 or imgsz % 32:
        raise InputError(f"detector imgsz: expected a positive multiple of 32, got {imgsz!r}")
    pt_path = Path(pt_path)
    ultralytics = _ultralytics()
    torch_model = _prepare_for_export(load_yolo(pt_path))
    names = class_names_of(torch_model)
    example = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit.trace deprecation and "tensor to bool" tracer notes (the anchor cache check in the head,
        # constant for a static input size) are expected here.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        out = torch_model(example)
        if not isinstance(out, torch.Tensor) or out.ndim != 3 or out.shape[1] != 4 + len(names):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(f"{pt_path}: head output {shape} is not [1, 4 + {len(names)}, A]; "
                             "only YOLO detection models are supported")
        traced = torch.jit.trace(torch_model, example, strict=False, check_trace=False)
        ov_model = ov.convert_model(traced, input=[(1, 3, imgsz, imgsz)], example_input=example)
    del traced, torch_model

    ov_model.inputs[0].get_tensor().set_names({"image"})
    ov_model.outputs[0].get_tensor().set_names({"boxes"})
    ppp = PrePostProcessor(ov_model)
    inp = ppp.input("image")
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    inp.model().set_layout(ov.Layout("NCHW"))
    inp.preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
    ppp.output("boxes").tensor().set_element_type(ov.Type.f32)
    ov_model = ppp.build()
    ov_model.set_friendly_name("sdpose_detector")

    info = DetectorModelInfo(
        input_height=imgsz, input_width=imgsz, class_names=tuple(names), person_class=_person_class(names),
        pad_value=DEFAULT_PAD_VALUE, precision=precision, quantized=False,
        extra={"format_version": FORMAT_VERSION,
               "letterbox": {"keep_aspect": True, "center": True, "interpolation": "linear", "scaleup": True},
               "output_format": "cxcywh_scores",
               "num_anchors": int(ov_model.outputs[0].get_partial_shape()[2].get_length()),
               "preprocessing": {"input": "u8 NHWC BGR letterboxed", "reverse_channels": True, "scale": 255.0,
                                 "layout": "NCHW"},
               "versions": _versions(ultralytics.__version__), "checkpoint_sha256": sha256_file(pt_path),
               "source": pt_path.name})
    write_metadata(ov_model, info.to_rt_info())
    return ov_model


def _versions(ultralytics_version: str) -> dict[str, str]:
    import openvino as ov
    import torch

    return {"openvino": ov.get_version(), "torch": torch.__version__, "ultralytics": ultralytics_version}


def export_detector(pt_path: str | Path, out_dir: str | Path, imgsz: int = 640, precision: str = "fp32") -> Path:
    """Export a YOLO ``.pt`` to ``out_dir/detector.xml`` (+ .bin) and register it in the folder index.

    ``precision``: "fp32" (weights stored f32) or "fp16" (weights compressed to f16 on save).
    Returns the path of ``detector.xml``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ov_model = convert_detector(pt_path, imgsz=imgsz, precision=precision)
    xml = save_detector(ov_model, out_dir, compress_to_fp16=precision == "fp16")
    logger.info("exported detector %s -> %s (%s, %dx%d) in %.1f s", pt_path, xml, precision, imgsz, imgsz,
                time.perf_counter() - start)
    return xml


def save_detector(ov_model: Any, out_dir: str | Path, compress_to_fp16: bool = False) -> Path:
    """Save a detector ``openvino.Model`` as ``out_dir/detector.xml`` and register it in the index."""
    import openvino as ov

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / DETECTOR_FILE
    ov.save_model(ov_model, str(xml), compress_to_fp16=compress_to_fp16)
    write_index(out_dir, {"components": {DETECTOR_KIND: DETECTOR_FILE}})
    return xml


def find_detector_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """``<checkpoint>/yolo11*.pt`` (the public release ships ``yolo11x.pt``), largest variant first; None."""
    checkpoint_dir = Path(checkpoint_dir)
    candidates = sorted(checkpoint_dir.glob("yolo11*.pt"))
    order = {v: i for i, v in enumerate(reversed(SYNTHETIC_VARIANTS))}
    candidates.sort(key=lambda p: order.get(p.stem, len(order)))
    return candidates[0] if candidates else None


def detector_calibration_inputs(frames: Iterable[np.ndarray], imgsz: int = 640) -> Iterator[np.ndarray]:
    """Yield the detector IR's input tensors for calibration, one per frame, streamed.

    ``frames``: BGR u8 images [H, W, 3] of any size (e.g. ``CalibrationSet.frames()``). Each is letterboxed
    exactly as the runtime does it -> u8 [1, imgsz, imgsz, 3] BGR; feed them to ``nncf.Dataset`` as is.
    """
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            desc = getattr(frame, "shape", type(frame).__name__)
            raise InputError(f"calibration frame {i}: expected a BGR u8 image [H,W,3], got {desc}")
        tensor, _, _ = letterbox(frame, imgsz)
        yield tensor


def detector_ignored_scope(model: Any) -> Any:
    """``nncf.IgnoredScope`` keeping the box-decoding tail of a detector ``openvino.Model`` in float.

    Same policy as ultralytics' INT8 OpenVINO export: every Sigmoid (class scores) plus every op that
    belongs to the Detect head itself rather than to one of its conv branches, i.e. the DFL softmax /
    projection, the anchor/stride arithmetic and the concatenations (their names start with
    ``<head>/`` or ``<head>.dfl``, where ``<head>`` is the traced module path of the last Sigmoid). Quantizing
    those would put pixel-scale box coordinates through an 8-bit grid.
    """
    import nncf

    ops = model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        raise SDPoseError("detector model has no Sigmoid op: not a YOLO Detect head export")
    head = sigmoids[-1].split("/", 1)[0]
    prefixes = (head + "/", head + ".dfl")
    names = sorted({op.get_friendly_name() for op in ops
                    if op.get_type_name() == "Sigmoid" or op.get_friendly_name().startswith(prefixes)})
    logger.debug("detector ignored scope: %d ops under %s", len(names), head)
    return nncf.IgnoredScope(names=names)
