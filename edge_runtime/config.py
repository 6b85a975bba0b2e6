"""``sdpose-edge run`` settings: defaults, the YAML config file, and their validation.

Precedence: command line > YAML (``configs/edge.yaml`` or ``--config``) > IR metadata > built-in defaults.
The YAML is a flat mapping whose keys are the long CLI option names with ``_`` for ``-`` (``detect_every``,
``precision_hint`` ...). ``null`` means "not set here" (fall through to the IR metadata / device default).
An unknown key or a value of the wrong type is an InputError naming the file and the key.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from edge_runtime.errors import InputError
from edge_runtime.model.keypoints import DEFAULT_SCORE_THRESHOLD, PART_NAMES
from edge_runtime.serving.server_address import ServerAddress
from edge_runtime.running.smoothing import DEFAULT_BETA, DEFAULT_D_CUTOFF_HZ, DEFAULT_MIN_CUTOFF_HZ
from edge_runtime.running.tracking import DEFAULT_BOX_EXPANSION, DEFAULT_TRACK_IOU

logger = logging.getLogger(__name__)

#: the config file used when --config is not given (if it exists): ./configs/edge.yaml
DEFAULT_CONFIG = Path("configs") / "edge.yaml"


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _nice(value: Any) -> bool:
    return _non_negative_int(value) and value <= 19


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unit(value: Any) -> bool:
    return _number(value) and 0.0 <= float(value) <= 1.0


def _positive(value: Any) -> bool:
    return _number(value) and float(value) > 0.0


def _non_negative(value: Any) -> bool:
    return _number(value) and float(value) >= 0.0


def _string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _server_url(value: Any) -> bool:
    try:
        ServerAddress.parse(value)
    except InputError:
        return False
    return True


def _choice(*choices: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, str) and value in choices
    check.__doc__ = " | ".join(choices)
    check.choices = choices  # type: ignore[attr-defined]  (the command line offers them)
    return check


def _parts(value: Any) -> bool:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return isinstance(value, (list, tuple)) and bool(value) and all(v in PART_NAMES for v in value)


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


#: model kinds a device can be chosen for (``--model-device KIND=DEV``, ``model_device`` in edge.yaml)
MODEL_KINDS = ("vae_encoder", "pose", "vae_pose", "detector")


def parse_model_device(value: Any, source: str = "--model-device") -> dict[str, str]:
    """``{kind: device}`` from a mapping (YAML) or from ``KIND=DEV`` strings (the repeated option; a single
    string may hold several, comma-free: ``pose=GPU``). Raises InputError naming ``source`` and the bad item:
    an unknown kind, a missing ``=`` or an empty device."""
    items: list[tuple[Any, Any]]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) or isinstance(value, str):
        items = []
        for entry in [value] if isinstance(value, str) else value:
            if not isinstance(entry, str) or "=" not in entry:
                raise InputError(f"{source}: {entry!r} is not KIND=DEVICE (e.g. pose=GPU); kinds: "
                                 f"{', '.join(MODEL_KINDS)}")
            items.append(tuple(part.strip() for part in entry.split("=", 1)))
    else:
        raise InputError(f"{source}: expected a mapping of model kind -> device, got {type(value).__name__}")
    out: dict[str, str] = {}
    for kind, device in items:
        if kind not in MODEL_KINDS:
            raise InputError(f"{source}: unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
        if not _string(device):
            raise InputError(f"{source}: {kind}: expected a non-empty OpenVINO device name, got {device!r}")
        out[str(kind)] = str(device).strip()
    return out


def _model_device(value: Any) -> bool:
    try:
        parse_model_device(value)
    except InputError:
        return False
    return True


#: key -> (default, validator, description of what is expected). ``None`` defaults mean "not set".
SCHEMA: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    # compile options (CompileOptions)
    "device": ("CPU", _string, "a non-empty OpenVINO device name (CPU, GPU, NPU, AUTO ...)"),
    "hint": (None, _choice("THROUGHPUT", "LATENCY", "CUMULATIVE_THROUGHPUT"),
             "one of THROUGHPUT | LATENCY | CUMULATIVE_THROUGHPUT, or null (chosen by the runtime)"),
    "num_streams": (None, _positive_int, "a positive integer or null"),
    "num_threads": (None, _positive_int, "a positive integer or null"),
    "precision_hint": (None, _choice("f32", "bf16", "f16"), "one of f32 | bf16 | f16, or null (device default)"),
    "cache_dir": ("~/.cache/sdpose-edge", _string, "a directory path, or null for no model cache"),
    "num_requests": (None, _positive_int, "a positive integer or null (OPTIMAL_NUMBER_OF_INFER_REQUESTS)"),
    "inference_nice": (None, _nice, "an integer in [0, 19] or null (chosen by the runtime: 10 in live mode on <= 4 "
                       "cores, else 0)"),
    "chain": (None, _choice("split", "fused"), "split | fused or null (the model folder's default)"),
    "model_device": ({}, _model_device, "a mapping of model kind (vae_encoder, pose, vae_pose, detector) -> "
                     "OpenVINO device, overriding device for that model"),
    "static_batch": (False, _bool, "true | false (reshape the dynamic batch to batch before compiling; devices "
                     "that need static shapes, such as the NPU, get it anyway)"),
    # scheduling
    "mode": (None, _choice("file", "live"), "file | live or null (file for files, live for cameras/streams)"),
    "batch": (1, _positive_int, "a positive integer (crops per pose request)"),
    "detect_every": (1, _positive_int, "a positive integer (run the detector every N frames)"),
    "max_frames": (None, _positive_int, "a positive integer or null"),
    "max_inflight_frames": (None, _positive_int, "a positive integer or null (2 x pose requests + 2)"),
    "chain_slots": (None, _positive_int, "a positive integer or null (split chain: vae_encoder + pose requests "
                    "in flight together)"),
    "live_queue_size": (1, _positive_int, "a positive integer (frames waiting in live mode; newest wins)"),
    "schedule_poses": (False, _bool, "true | false (file mode: tracks, pose scheduling and propagation as live)"),
    "pose_budget": (None, _unit, "a share of person-frames in (0, 1] or null (as fast as the pose requests allow)"),
    "propagation": (None, _choice("forward", "two-sided"), "forward | two-sided or null (file mode with "
                    "schedule_poses: two-sided; live: forward, two-sided with delay_ms > 0)"),
    "max_pose_age": (None, _positive, "milliseconds or null (a pose older than this is due for recompute)"),
    "delay_ms": (0, _non_negative, "a non-negative number of milliseconds (--delay-ms, live mode: hold output "
                 "this long so that poses arriving within it are blended two-sided; 0: output at once)"),
    "request_timeout_s": (600.0, _positive, "a positive number of seconds (a request without answer fails)"),
    "release_memory": (False, _bool, "true | false (free each model's buffers after every request; 1 request)"),
    # pose
    "flip_test": (False, _bool, "true | false"),
    "decode": ("numpy", _choice("graph", "numpy"), "graph | numpy (where heatmaps become keypoints)"),
    "bbox_padding": (None, _positive, "a positive number or null (the IR metadata, 1.25)"),
    "parts": (list(PART_NAMES), _parts, f"a list of parts from {list(PART_NAMES)}"),
    "score_threshold": (DEFAULT_SCORE_THRESHOLD, _unit, "a number in [0, 1] (keypoints drawn / used for tracking above it)"),
    # temporal smoothing of the output keypoints (edge_runtime.running.smoothing: units, lag bound)
    "smooth": ("one-euro", _choice("one-euro", "none"), "one-euro | none (per track and keypoint, before the outputs)"),
    "smooth_min_cutoff_hz": (DEFAULT_MIN_CUTOFF_HZ, _positive, "a positive number of Hz (One Euro: cutoff at rest)"),
    "smooth_beta": (DEFAULT_BETA, _non_negative,
                    "a non-negative number (One Euro: cutoff Hz added per box size per second of speed)"),
    "smooth_d_cutoff_hz": (DEFAULT_D_CUTOFF_HZ, _positive, "a positive number of Hz (One Euro: speed estimate)"),
    # detector
    "det_score_threshold": (None, _unit, "a number in [0, 1] or null (detector default 0.5, as the original app)"),
    "det_iou_threshold": (None, _unit, "a number in [0, 1] or null (detector default 0.7, ultralytics' NMS IoU)"),
    "max_persons": (20, _positive_int, "a positive integer (keep the N highest-scoring boxes per frame)"),
    # tracking (frames between detector runs)
    "track_iou_threshold": (DEFAULT_TRACK_IOU, _unit, "a number in [0, 1]"),
    "track_box_expansion": (DEFAULT_BOX_EXPANSION, _positive, "a positive number (box from keypoints, scaled around its center)"),
    "track_lost_s": (1.5, _positive, "seconds a track missed by the detector keeps its ID (occlusions)"),
    # sources
    "reconnect_retries": (5, _non_negative_int, "a non-negative integer"),
    "reconnect_initial_s": (0.5, _positive, "a positive number of seconds"),
    "reconnect_max_s": (8.0, _positive, "a positive number of seconds"),
    # remote pose chain (KServe v2: sdpose-edge serve, OVMS); the reconnect_* keys also bound its reconnects
    "pose_server": (None, _server_url, "grpc://HOST:PORT or http://HOST:PORT, or null (run the pose chain here)"),
    "pose_server_model": ("sdpose", _string, "the served model: crops to heatmaps (sdpose) or to keypoints "
                          "(sdpose_keypoints)"),
    # outputs
    "openpose": (False, _bool, "true | false"),
    "openpose_confidence": ("binary", _choice("binary", "score"), "binary | score"),
    "openpose_naming": ("frame", _choice("frame", "openpose"), "frame | openpose"),
    "coco_annotations": (None, _string, "a COCO annotation file path or null"),
    "save_video": (False, _bool, "true | false"),
    "save_images": (False, _bool, "true | false"),
    "show": (False, _bool, "true | false"),
    "video_fps": (None, _positive, "a positive number or null (the source's fps, else 10)"),
    "progress": (True, _bool, "true | false"),
}


#: the settings that are also ``sdpose-edge run`` options: key -> (option group, help, extra argparse keywords).
#: The option's type, choices or on/off form come from the key's SCHEMA check (:func:`add_cli_options`), so one
#: schema validates the YAML and builds the command line; the option is ``--<key with - for _>`` unless
#: ``flag`` says otherwise. Keys not listed here are YAML-only.
CLI_OPTIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    "mode": ("scheduling", "file: every frame in order; live: newest frame wins (default: from the source)", {}),
    "max_frames": ("scheduling", "stop after N frames", {}),
    "detect_every": ("scheduling", "run the detector every N frames; boxes carried from the last poses in between",
                     {}),
    "batch": ("scheduling", "crops per pose request (dynamic-batch IR)", {}),
    "max_inflight_frames": ("scheduling", "frames in the pipeline at once", {}),
    "chain_slots": ("scheduling", "split chain: at most N vae_encoder + pose requests in flight together", {}),
    "max_persons": ("scheduling", "keep the N highest-scoring boxes per frame", {}),
    "chain": ("scheduling", "vae_encoder -> pose (split) or vae_pose (fused); default: the model folder's", {}),
    "reconnect_retries": ("scheduling", "camera/stream reconnection attempts per outage (exponential backoff); "
                          "when spent the run ends with exit code 1 and summary.json capture_error; also bounds "
                          "reconnects to --pose-server per request, after which its frames get error records", {}),
    "schedule_poses": ("scheduling", "file mode: tracks, pose scheduling and propagation as in live mode "
                       "(deterministic)", {}),
    "pose_budget": ("scheduling", "live/scheduled: share of person-frames whose pose is recomputed (e.g. 0.1)", {}),
    "propagation": ("scheduling", "carry poses from the keyframes on both sides of a frame (two-sided, the default "
                    "for files and for live mode with --delay-ms > 0) or forward only (forward, live's default)", {}),
    "max_pose_age": ("scheduling", "live/scheduled: recompute a pose once it is older than MS (or moved, or low "
                     "confidence)", {"metavar": "MS"}),
    "delay_ms": ("scheduling", "live mode: hold each frame's output up to MS ms, so that a pose arriving within "
                 "it is blended two-sided with the one before (default 0: output at once, forward only; latency "
                 "becomes about MS plus a frame interval)", {"metavar": "MS"}),
    "release_memory": ("scheduling", "free each model's activation buffers after every request (lower peak RSS on "
                       "small boxes; with --num-requests 1)", {}),
    "request_timeout_s": ("scheduling", "an inference request without an answer after S seconds fails its frames",
                          {"flag": "--request-timeout", "metavar": "S"}),
    "pose_server": ("scheduling", "run the pose chain on a KServe v2 server (sdpose-edge serve, OVMS): "
                    "grpc://HOST:PORT or http://HOST:PORT; --num-requests requests in flight (default 2), --batch "
                    "crops each", {"metavar": "URL"}),
    "pose_server_model": ("scheduling", "served model: sdpose (crops -> heatmaps, decoded here; default) or "
                          "sdpose_keypoints (decoded on the server: 133 x 3 numbers per crop)", {"metavar": "NAME"}),
    "device": ("OpenVINO", "OpenVINO device (CPU, GPU, NPU, AUTO ...)", {}),
    "model_device": ("OpenVINO", "device of one model kind, overriding --device (repeatable; kinds: "
                     + ", ".join(MODEL_KINDS) + ")", {"metavar": "KIND=DEV", "action": "append"}),
    "static_batch": ("OpenVINO", "reshape the dynamic batch to --batch before compiling (static shapes)", {}),
    "hint": ("OpenVINO", "PERFORMANCE_HINT (default THROUGHPUT; live mode on <= 4 cores: LATENCY)", {}),
    "num_streams": ("OpenVINO", "NUM_STREAMS", {}),
    "num_threads": ("OpenVINO", "INFERENCE_NUM_THREADS (default OpenVINO's; live mode on <= 4 cores: cores - 1, "
                    "leaving a core to capture and output)", {}),
    "num_requests": ("OpenVINO", "infer requests per model (default OPTIMAL_NUMBER_OF_INFER_REQUESTS; live mode on "
                     "<= 4 cores: 1)", {}),
    "inference_nice": ("OpenVINO", "live mode: run every thread but capture and output (the inference threads) at "
                       "this much higher a nice value (default 0; live mode on <= 4 cores: 10)", {"metavar": "N"}),
    "precision_hint": ("OpenVINO", "INFERENCE_PRECISION_HINT (default: the device's; bf16 on AVX512_BF16 CPUs)", {}),
    "cache_dir": ("OpenVINO", "model cache directory (CACHE_DIR)", {}),
    "flip_test": ("pose and outputs", "also infer mirrored crops and average (2x pose cost)", {}),
    "decode": ("pose and outputs", "heatmap decoder: numpy (after the chain) or graph (OpenVINO ops appended to the "
               "pose IR); with --pose-server the served model decides (sdpose_keypoints decodes there)", {}),
    "parts": ("pose and outputs", "keypoint groups kept: comma list of body,feet,face,hands", {}),
    "score_threshold": ("pose and outputs", "keypoint visibility threshold", {}),
    "bbox_padding": ("pose and outputs", "box padding (default: IR metadata)", {}),
    "smooth": ("pose and outputs", "temporal smoothing of the output keypoints per track: one-euro (a One Euro "
               "filter per keypoint, box-relative and timestamp-based; YAML smooth_* set its parameters) or none",
               {}),
    "det_score_threshold": ("pose and outputs", "detector person score threshold", {}),
    "openpose": ("pose and outputs", "write OUT/openpose/<frame>.json (OpenPose layout), one per input frame", {}),
    "openpose_confidence": ("pose and outputs", "OpenPose c: binary (default; 1.0 for kept points, what ControlNet "
                            "readers show) or score (clipped to [0, 1])", {}),
    "openpose_naming": ("pose and outputs", "OpenPose file names: frame (<frame:06d>.json, default) or openpose "
                        "(<name>_keypoints.json)", {}),
    "coco_annotations": ("pose and outputs", "COCO annotation file: coco_results.json takes image ids from its "
                         "images[].file_name", {"metavar": "ANN.json"}),
    "save_video": ("pose and outputs", "write OUT/overlay.mp4 with the skeletons drawn", {}),
    "save_images": ("pose and outputs", "write OUT/images/<frame>.jpg with the skeletons drawn", {}),
    "show": ("pose and outputs", "show a window (q quits)", {}),
    "progress": ("pose and outputs", "progress bar (files)", {}),
}

_INT_CHECKS = (_positive_int, _non_negative_int, _nice)
_FLOAT_CHECKS = (_positive, _unit, _number, _non_negative)


def add_cli_options(groups: Mapping[str, Any], after: "Mapping[str, Callable[[Any], None]] | None" = None,
                    keys: "Sequence[str] | None" = None) -> None:
    """Add every :data:`CLI_OPTIONS` setting (or those of ``keys``) to its argparse group in ``groups`` (default
    None = "not given", so YAML and built-in defaults apply). ``after[key](group)`` adds options that belong
    right after ``key``."""
    import argparse

    for key, (group_name, help_text, extra) in CLI_OPTIONS.items():
        if keys is not None and key not in keys:
            continue
        check = SCHEMA[key][1]
        kwargs: dict[str, Any] = {"dest": key, "default": None, "help": help_text}
        if "metavar" in extra:
            kwargs["metavar"] = extra["metavar"]
        if "action" in extra:
            kwargs["action"] = extra["action"]
        elif check is _bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif hasattr(check, "choices"):
            kwargs["choices"] = check.choices
        elif check in _INT_CHECKS:
            kwargs["type"] = int
        elif check in _FLOAT_CHECKS:
            kwargs["type"] = float
        group = groups[group_name]
        group.add_argument(extra.get("flag", "--" + key.replace("_", "-")), **kwargs)
        if after and key in after:
            after[key](group)


#: keys where null is a meaningful value that overrides a non-null default
NULLABLE = frozenset({"cache_dir"})


def defaults() -> dict[str, Any]:
    """A fresh dict of the built-in defaults (lists copied)."""
    return {key: (list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value)
            for key, (value, _, _) in SCHEMA.items()}


def validate(settings: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """Check keys and value types; returns a normalised copy (``parts`` as a list, ``-`` keys as ``_``).

    Raises InputError naming ``source`` and the key for unknown keys or bad values. ``None`` is accepted for
    keys whose default is None (= not set) and for ``cache_dir`` (= no model cache).
    """
    out: dict[str, Any] = {}
    for raw_key, value in settings.items():
        key = str(raw_key).replace("-", "_")
        if key not in SCHEMA:
            raise InputError(f"{source}: unknown key '{raw_key}'; known keys: {', '.join(sorted(SCHEMA))}")
        if value is None:
            if SCHEMA[key][0] is not None and key not in NULLABLE:
                raise InputError(f"{source}: '{raw_key}' may not be null; expected {SCHEMA[key][2]}")
            out[key] = None
            continue
        if key == "model_device":  # its own errors name the bad kind or item
            out[key] = parse_model_device(value, f"{source}: '{raw_key}'")
            continue
        check, expected = SCHEMA[key][1], SCHEMA[key][2]
        if key == "hint" and isinstance(value, str):
            value = value.upper()
        if key == "precision_hint" and isinstance(value, str):
            value = value.lower()
        if not check(value):
            raise InputError(f"{source}: '{raw_key}' = {value!r} is invalid; expected {expected}")
        if key == "parts" and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def load_config(path: "str | Path | None") -> dict[str, Any]:
    """Read and validate a YAML config; ``None`` -> ``configs/edge.yaml`` if it exists, else ``{}``.

    Returns only the keys the file sets (validated). A missing explicit file, invalid YAML, a non-mapping
    document or an unknown key is an InputError naming the file.
    """
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return {}
        path = DEFAULT_CONFIG
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--config {path}: file does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping of setting -> value at the top level, "
                         f"got {type(doc).__name__}")
    settings = validate(doc, source=str(path))
    logger.debug("config %s: %s", path, settings)
    return settings


def merge(cli: Mapping[str, Any], yaml_settings: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then every YAML value (a YAML null resets a key), then CLI values that are not None.

    Returns the effective settings; keys left None mean "use the IR metadata / device default" downstream.
    """
    settings = defaults()
    settings.update(yaml_settings)
    for key, value in cli.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}  # model_device: per kind over the YAML's
        elif value is not None:
            settings[key] = value
    return settings
