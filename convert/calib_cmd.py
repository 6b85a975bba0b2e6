"""``sdpose-convert calib``: build a calibration set (person crops + detector frames) from images/videos.

Example::

    sdpose-convert calib --images photos/ --videos walk.mp4 --detector MODELS --out calib_data/site_a

Persons come from ``--detections`` (boxes per source) first, then ``--detector`` (a model folder with
detector.xml, a detector.xml, or an ultralytics YOLO .pt converted on the fly), else the full frame
(last resort, warned). See :mod:`calib_data.builder` for the folder layout and the manifest.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from calib_data.builder import BuildParams, build_calibration_set
from edge_runtime.model.geometry import parse_size_hw
from edge_runtime.errors import InputError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(name, help="build a calibration set (crops + frames + manifest)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--images", nargs="+", action="extend", default=[], metavar="DIR",
                   help="folders of images (or image files)")
    p.add_argument("--videos", nargs="+", action="extend", default=[], metavar="FILE", help="video files")
    p.add_argument("--detections", metavar="DETS.json",
                   help="person boxes per source: {name: [[x1,y1,x2,y2(,score)],...]}, videos {name: {frame: [...]}}")
    p.add_argument("--detector", metavar="MODELS_OR_XML",
                   help="person detector: model folder with detector.xml, a detector.xml, or a YOLO .pt")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder, e.g. calib_data/NAME")
    d = BuildParams()
    p.add_argument("--max-crops", type=int, default=d.max_crops, help="at most this many crops (default %(default)s)")
    p.add_argument("--max-frames", type=int, default=d.max_frames,
                   help="full frames kept for the detector's calibration (default %(default)s)")
    p.add_argument("--frames-per-video", type=int, default=d.frames_per_video,
                   help="frames sampled evenly per video (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="sampling seed (default %(default)s)")
    p.add_argument("--input-size", default=f"{d.input_size[1]}x{d.input_size[0]}", metavar="HxW",
                   help="crop size = pose model input, HxW (default %(default)s)")
    p.add_argument("--padding", type=float, default=d.padding, help="box padding (default %(default)s)")
    p.add_argument("--format", choices=("jpg", "png"), default=d.image_format,
                   help="crop file format (default %(default)s, quality --jpeg-quality)")
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality, help="JPEG quality (default %(default)s)")
    p.add_argument("--dedup-threshold", type=float, default=d.dedup_threshold,
                   help="crops whose 16x16 grey thumbnails differ by less than this mean grey level are "
                        "duplicates (default %(default)s; 0 keeps all)")
    p.add_argument("--conf", type=float, default=d.conf_threshold, help="detector score threshold (default %(default)s)")
    p.add_argument("--device", default="CPU", help="OpenVINO device for the detector (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --out")
    p.set_defaults(func=run)


def _open_detector(spec: str, conf: float, device: str, workdir: Path):
    """PersonDetector for a model folder / detector.xml / YOLO .pt, plus what to record about it."""
    from edge_runtime.model.detector import PersonDetector
    from edge_runtime.model.models import CompileOptions

    path = Path(spec)
    if not path.exists():
        raise InputError(f"--detector {path}: no such file or folder")
    info = {"source": path.name}
    if path.suffix == ".pt":
        from convert.detector import export_detector, sha256_file

        logger.info("converting %s to OpenVINO for detection (not kept)", path)
        export_detector(path, workdir)
        info["checkpoint_sha256"] = sha256_file(path)
        path = workdir
    options = CompileOptions(device=device, performance_hint="LATENCY", inference_precision="f32", cache_dir=None)
    detector = PersonDetector(path, options=options, conf_threshold=conf)
    info.update({"checkpoint_sha256": detector.meta.get("checkpoint_sha256", info.get("checkpoint_sha256")),
                 "precision": detector.meta.get("precision"), "quantized": detector.meta.get("quantized"),
                 "conf_threshold": conf, "iou_threshold": detector.iou_threshold,
                 "input_size": [detector.input_width, detector.input_height]})
    return detector, info


def run(args: argparse.Namespace) -> int:
    h, w = parse_size_hw(args.input_size, "--input-size", multiple=1)
    params = BuildParams(input_size=(w, h), padding=args.padding,
                         max_crops=args.max_crops, max_frames=args.max_frames,
                         frames_per_video=args.frames_per_video, dedup_threshold=args.dedup_threshold,
                         image_format=args.format, jpeg_quality=args.jpeg_quality, conf_threshold=args.conf,
                         seed=args.seed)
    params.validate()
    with tempfile.TemporaryDirectory(prefix="sdpose-calib-det-") as tmp:
        detector, info = (None, None)
        if args.detector:
            detector, info = _open_detector(args.detector, args.conf, args.device, Path(tmp))
        manifest = build_calibration_set(args.out, images=args.images, videos=args.videos,
                                         detections=args.detections, detector=detector, params=params,
                                         overwrite=args.overwrite, detector_info=info)
    logger.info("wrote %s", manifest)
    return 0
