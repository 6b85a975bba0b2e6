"""``sdpose-edge run``: pose estimation over a camera, stream, video, image, folder or glob of images.

    sdpose-edge run --models MODELS --source SRC [--source SRC2 ...] --output OUT [--detections DETS.json] [options]

Writes ``OUT/predictions.jsonl`` (one record per processed frame, in frame order), ``OUT/summary.json``
(frames in/out/skipped/failed, fps, per-stage latency p50/p95, pose-stage busy share), and on request
``OUT/coco_results.json`` (image inputs), ``OUT/openpose/``, ``OUT/overlay.mp4``, ``OUT/images/``.
Live sources (cameras, streams) run with tracks, pose scheduling and keypoint propagation
(:mod:`edge_runtime.running.live`): every frame is output at once with every tracked person. Several ``--source``
options (or one YAML file listing them) share one set of compiled models; each source then writes to
``OUT/<source-name>/`` and ``OUT/summary.json`` holds the totals and every source's figures.
Settings: command line > YAML (``--config``, else ``configs/edge.yaml`` when present) > IR metadata.
SIGINT/SIGTERM stop capture, drain in-flight requests and close every output.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edge_runtime import config as cfgmod
from edge_runtime.errors import InputError, SDPoseError
from edge_runtime.media.sources import ImageFilesSource, ReconnectPolicy, VideoFileSource, open_source
from edge_runtime.settings.schema import from_settings

logger = logging.getLogger("sdpose-edge.run")


def register(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(name, help="run pose estimation on a camera, stream, video or images",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="model folder written by sdpose-convert export")
    p.add_argument("--source", required=True, action="append",
                   help="camera index ('0'), video file, image file, folder or glob of images, rtsp:// or "
                        "http(s):// stream (MJPEG); repeat for several sources, or give a YAML file with a list "
                        "of sources (strings or {name, source})")
    p.add_argument("--output", required=True, help="output folder (created; must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="reuse a non-empty output folder: first delete the files sdpose-edge writes there "
                        "(and only those)")
    p.add_argument("--config", default=None, help="YAML settings (default: configs/edge.yaml if present)")
    p.add_argument("--detections", default=None,
                   help="JSON {image file name or frame index: [[x1,y1,x2,y2,score],...]}; bypasses the detector")
    groups = {name: p.add_argument_group(name) for name in ("scheduling", "OpenVINO", "pose and outputs")}
    # the settings' options come from the one schema that also validates the YAML (edge_runtime.config)
    cfgmod.add_cli_options(groups, after={"cache_dir": lambda g: g.add_argument(
        "--no-cache", action="store_true", help="disable the compiled-model cache")})
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------- settings
def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Effective settings: CLI (not None) > YAML > built-in defaults; validated (InputError names the key)."""
    yaml_settings = cfgmod.load_config(args.config)
    cli = {key: getattr(args, key, None) for key in cfgmod.CLI_KEYS}
    cli = cfgmod.validate({k: v for k, v in cli.items() if v is not None}, source="command line")
    settings = cfgmod.merge(cli, yaml_settings)
    if args.no_cache:
        settings["cache_dir"] = None
    return settings


# ---------------------------------------------------------------------------------------------- sinks
def build_sinks(out: Path, settings: dict[str, Any], source: Any) -> list[Any]:
    """The output sinks for this run, JSONL first."""
    from edge_runtime.media import sinks as sinkmod

    parts = tuple(settings["parts"])
    thr = float(settings["score_threshold"])
    result: list[Any] = [sinkmod.JsonlSink(out / "predictions.jsonl")]
    if isinstance(source, ImageFilesSource):
        result.append(sinkmod.CocoResultsSink(out / "coco_results.json", annotations=settings["coco_annotations"]))
    elif settings["coco_annotations"]:
        logger.warning("--coco-annotations: COCO results are written for image inputs only; ignored")
    if settings["openpose"]:
        result.append(sinkmod.OpenPoseSink(out / "openpose", score_threshold=thr,
                                           confidence=settings["openpose_confidence"],
                                           naming=settings["openpose_naming"]))
    if settings["save_video"]:
        fps = settings["video_fps"] or (source.fps if isinstance(source, VideoFileSource) and source.fps else 10.0)
        result.append(sinkmod.VideoSink(out / "overlay.mp4", fps=fps, parts=parts, score_threshold=thr))
    if settings["save_images"]:
        result.append(sinkmod.ImageSink(out / "images", parts=parts, score_threshold=thr))
    return result


class _ShowHook:
    """Draws each result in a window; 'q' or Esc stops the run. Disables itself if no GUI is available."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.parts = tuple(settings["parts"])
        self.threshold = float(settings["score_threshold"])
        self.enabled = True
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            # Qt/GTK abort the whole process without a display: check before the first imshow
            logger.warning("--show disabled: no display (DISPLAY / WAYLAND_DISPLAY unset)")
            self.enabled = False

    def __call__(self, result: Any, image: Any) -> bool:
        """Show one frame's :class:`~edge_runtime.running.results.FrameResult` drawn on its image."""
        if not self.enabled or image is None:
            return True
        import cv2

        from edge_runtime.media.draw import DrawOptions, draw_result

        options = DrawOptions(parts=frozenset(self.parts), threshold=self.threshold, draw_boxes=True)
        try:
            canvas = draw_result(image, result, options)
            cv2.imshow("sdpose-edge", canvas)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:
            logger.warning("--show disabled: no display available (%s)", exc)
            self.enabled = False
            return True
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled:
            import cv2

            try:
                cv2.destroyAllWindows()
            except cv2.error as exc:  # no GUI backend: nothing was shown
                logger.debug("--show: closing the window: %s", exc)


# ---------------------------------------------------------------------------------------------- run
def _log_summary(summary: dict[str, Any]) -> None:
    logger.info("frames in %s, out %s (ok %s), skipped %s, failed %s; %s persons; %s frames/s over %s s",
                summary.get("frames_in"), summary.get("frames_out"), summary.get("frames_ok"),
                summary.get("frames_skipped"), summary.get("frames_failed"), summary.get("persons"),
                summary.get("fps"), summary.get("wall_s"))
    for stage, stats in (summary.get("latency_ms") or {}).items():
        if stats.get("count"):
            logger.info("  %-14s p50 %9.1f ms  p95 %9.1f ms  (n=%d)", stage, stats["p50"], stats["p95"],
                        stats["count"])
    if "pose_busy_share" in summary:
        logger.info("pose-stage busy share %.1f%% (pose request utilization %.1f%%)",
                    100 * summary["pose_busy_share"], 100 * summary["pose_request_utilization"])
    if "pose_recomputes" in summary:
        logger.info("pose recomputes %d", summary["pose_recomputes"])
    if summary.get("connection_drops"):
        logger.warning("connections lost %d times, %d reconnects, longest outage %.1f s",
                       summary["connection_drops"], summary["reconnects"], summary["longest_outage_s"])


class _SignalStop:
    """SIGINT/SIGTERM -> pipeline.stop() while installed (main thread only); restores the old handlers."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.pipeline.stopping:
            # a second signal always ends the run: the outputs are closed and the summary written by the
            # caller's finally blocks as the exception unwinds
            logger.warning("signal %d again: ending now without waiting for in-flight requests", signum)
            raise KeyboardInterrupt

        logger.warning("signal %d: stopping capture, draining in-flight requests", signum)
        self.pipeline.stop()

    def __enter__(self) -> "_SignalStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _run_options(args: argparse.Namespace, settings: dict[str, Any], mode: str) -> tuple[Any, str, Any]:
    """The run's compile options: the settings, the runtime's choice for what the user left unset
    (:func:`edge_runtime.model.compile_choice.choose_compile_options`: live mode on a small CPU leaves a core to capture
    and output) and the per-ISA precision hint; returns (options, where the precision hint came from, choice)."""
    from edge_runtime.model.compile_choice import choose_compile_options
    from edge_runtime.settings.compile import compile_options, per_isa_options

    choice = choose_compile_options(settings, mode)
    logger.info("compile options: hint %s, %s inference thread(s), %s request(s) per model (%s)", choice.hint,
                choice.num_threads or "OpenVINO's", choice.num_requests or "OpenVINO's optimal", choice.reason)
    options, hint_source = per_isa_options(choice.apply(compile_options(settings)), args.models)
    return options, hint_source, choice


def _build_estimator(args: argparse.Namespace, settings: dict[str, Any], options: Any, policy: ReconnectPolicy) -> Any:
    """The local pose chain, or with --pose-server the remote one (the folder gives only its metadata; its
    reconnects follow ``policy``, the cameras' backoff)."""
    if settings["pose_server"] is None:
        from edge_runtime.model.estimator import PoseEstimator

        return PoseEstimator(args.models, options=options, chain=settings["chain"],
                             flip_test=settings["flip_test"], padding=settings["bbox_padding"],
                             decode=settings["decode"])
    from edge_runtime.serving.remote import DEFAULT_IN_FLIGHT, RemotePoseEstimator

    return RemotePoseEstimator(args.models, settings["pose_server"], model_name=settings["pose_server_model"],
                               chain=settings["chain"], flip_test=settings["flip_test"],
                               padding=settings["bbox_padding"], in_flight=settings["num_requests"] or DEFAULT_IN_FLIGHT,
                               retry=policy, timeout_s=settings["request_timeout_s"], decode=settings["decode"])


def _build_detector(args: argparse.Namespace, settings: dict[str, Any], estimator: Any, options: Any) -> Any:
    if not estimator.folder.has("detector"):
        raise InputError(f"{args.models}: the model folder has no detector component; pass --detections "
                         "DETS.json or export a detector with sdpose-convert")
    from edge_runtime.model.detector import PersonDetector

    kwargs = {}
    if settings["det_score_threshold"] is not None:
        kwargs["conf_threshold"] = float(settings["det_score_threshold"])
    if settings["det_iou_threshold"] is not None:
        kwargs["iou_threshold"] = float(settings["det_iou_threshold"])
    return PersonDetector(estimator.folder, options=options, core=estimator.core, **kwargs)


def _chain_slots(settings: dict[str, Any]) -> "int | None":
    """--release-memory without --chain-slots: one model's buffers at a time."""
    return settings["chain_slots"] or (1 if settings["release_memory"] else None)


def _live_config(settings: dict[str, Any], mode: str, inference_nice: int = 0) -> Any:
    """The live runner's config: its fields, the tracks' and the smoothing's are the settings of the same
    names (:func:`edge_runtime.settings.schema.from_settings`); the mode and the nice value are resolved."""
    from edge_runtime.running.live import LiveConfig
    from edge_runtime.running.smoothing import SmoothConfig
    from edge_runtime.running.tracks import TrackConfig

    delay_ms, propagation = float(settings["delay_ms"]), settings["propagation"]
    if mode == "live" and propagation == "two-sided" and delay_ms == 0:
        logger.warning("--propagation two-sided in live mode needs --delay-ms > 0; live mode carries poses forward")
        propagation = None
    if mode == "live" and propagation == "forward" and delay_ms > 0:
        logger.warning("--delay-ms holds output for two-sided blending; with --propagation forward frames go out "
                       "at once")
    if mode == "file" and delay_ms > 0:
        logger.warning("--delay-ms applies to live mode; file mode holds each frame until its poses are back")
    return from_settings(LiveConfig, settings, mode=mode, track=from_settings(TrackConfig, settings),
                         chain_slots=_chain_slots(settings), smooth=from_settings(SmoothConfig, settings),
                         inference_nice=inference_nice, propagation=propagation, delay_ms=delay_ms)


def _pipeline_config(settings: dict[str, Any]) -> Any:
    from edge_runtime.running.pipeline import PipelineConfig
    from edge_runtime.running.smoothing import SmoothConfig

    return from_settings(PipelineConfig, settings, chain_slots=_chain_slots(settings),
                         smooth=from_settings(SmoothConfig, settings))


def _backend_factory(settings: dict[str, Any]) -> Any:
    import functools

    from edge_runtime.running.backends import default_backend_factory, openvino_backend_factory

    if settings["pose_server"] is not None:
        return default_backend_factory  # KServe for the served chain (no local buffers to release), OpenVINO else
    if settings["release_memory"] and settings["num_requests"] not in (None, 1):
        logger.warning("--release-memory needs --num-requests 1; ignored")
    return functools.partial(openvino_backend_factory, release_memory=bool(settings["release_memory"]))


def _close_all(sinks: list[Any]) -> None:
    for sink in sinks:
        try:
            sink.close()
        except (OSError, SDPoseError, ValueError) as exc:
            logger.error("closing output failed: %s: %s", type(sink).__name__, exc)


def _file_totals(per_source: dict[str, dict[str, Any]], sources: int, multi: bool) -> dict[str, Any]:
    """summary.json totals of file-mode sources (the one source's own entry when there is one)."""
    from edge_runtime.running.summary import totals

    done = [s for s in per_source.values() if "frames_in" in s]
    if not multi and done:
        return dict(done[0])
    return totals(per_source) | {"mode": "file", "sources": sources}


def _exit_code(doc: dict[str, Any]) -> int:
    """1 when a capture failed or no frame could be processed, else 0 (logged)."""
    if doc.get("capture_error"):
        logger.error("capture failed: %s", doc["capture_error"])
        return 1
    if doc.get("frames_ok", 0) == 0:
        logger.error("nothing could be processed (%d frames read, %d failed)", doc.get("frames_in", 0),
                     doc.get("frames_failed", 0))
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from edge_runtime.media.outputs import expand_sources, prepare_output, write_json_atomic
    from edge_runtime.media.detections import load_detections
    from edge_runtime.media.sources import mask_credentials

    settings = resolve_settings(args)
    named = expand_sources(args.source)
    detections = load_detections(args.detections) if args.detections else None
    policy = from_settings(ReconnectPolicy, settings)
    sources = [(name, open_source(spec, policy=policy)) for name, spec in named]
    mode = settings["mode"] or ("live" if any(src.default_mode == "live" for _, src in sources) else "file")
    out = Path(args.output)
    prepare_output(out, overwrite=args.overwrite)
    options, hint_source, choice = _run_options(args, settings, mode)
    estimator = _build_estimator(args, settings, options, policy)
    detector = None if detections is not None else _build_detector(args, settings, estimator, options)
    multi = len(sources) > 1
    folders = {name: (out / name if multi else out) for name, _ in sources}
    show = _ShowHook(settings) if settings["show"] else None
    common = {"models": str(args.models), "output": str(out), "compile_options": options.describe(),
              "settings": {k: v for k, v in settings.items()}, "cpu": estimator.runtime_info["cpu"],
              "precision": estimator.runtime_info["precision"], "precision_hint_source": hint_source,
              "variant": estimator.runtime_info["variant"], "compile_choice": choice.to_dict()}
    per_source: dict[str, dict[str, Any]] = {name: {"error": "the run ended before this source finished"}
                                             for name, _ in sources}
    total: dict[str, Any] = {"error": "the run ended before it finished"}
    all_sinks: list[Any] = []
    try:
        if mode == "live" or settings["schedule_poses"]:
            from edge_runtime.running.live import LiveRunner, SourceRun

            runs = []
            for name, src in sources:
                folders[name].mkdir(parents=True, exist_ok=True)
                sinks = build_sinks(folders[name], settings, src)
                all_sinks.extend(sinks)
                runs.append(SourceRun(name, src, sinks))
            runner = LiveRunner(estimator, _live_config(settings, mode, choice.inference_nice), detector=detector,
                                detections=detections, frame_hook=show, backend_factory=_backend_factory(settings))
            try:
                with _SignalStop(runner):
                    result = runner.run(runs)
            except BaseException:
                if hasattr(runner, "_t1"):
                    result = runner.summary()
                    per_source, total = result["sources"], result["total"]
                raise
            per_source, total = result["sources"], result["total"]
        else:
            from edge_runtime.running.pipeline import Pipeline

            for name, src in sources:
                folders[name].mkdir(parents=True, exist_ok=True)
                sinks = build_sinks(folders[name], settings, src)
                all_sinks.extend(sinks)
                pipeline = Pipeline(estimator, sinks, _pipeline_config(settings), detector=detector,
                                    detections=detections, frame_hook=show,
                                    backend_factory=_backend_factory(settings))
                try:
                    with _SignalStop(pipeline):
                        per_source[name] = pipeline.run(src)
                except BaseException:
                    if hasattr(pipeline, "_t1") and hasattr(pipeline, "_feed"):
                        per_source[name] = pipeline.summary()  # what was written before the exception
                    raise
                finally:
                    _close_all(sinks)
                if pipeline.stopping:
                    break
            total = _file_totals(per_source, len(sources), multi)
    except BaseException as exc:
        total["error"] = mask_credentials(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _close_all(all_sinks)
        if show is not None:
            show.close()
        for (name, spec), (_, src) in zip(named, sources):
            entry = dict(per_source.get(name, {}))
            entry.update(common, source=mask_credentials(spec), name=name)
            per_source[name] = entry
            if multi:
                write_json_atomic(folders[name] / "summary.json", entry)
        doc = dict(total)
        if multi:
            doc.update(common, sources={n: per_source[n] for n, _ in sources})
        else:
            doc.update(per_source[named[0][0]])
            doc.update({k: v for k, v in total.items() if k == "error"})
        write_json_atomic(out / "summary.json", doc)
    _log_summary(doc)
    logger.info("results: %s (summary: %s)", out if multi else out / "predictions.jsonl", out / "summary.json")
    return _exit_code(doc)
