"""``sdpose-edge run`` settings: :class:`RunSettings` is their schema (one name, one default, one check each), read
from the YAML config file and the command line.

Precedence: command line > YAML (``configs/edge.yaml`` or ``--config``) > IR metadata > built-in defaults.
The YAML is a flat mapping whose keys are the long CLI option names with ``_`` for ``-`` (``detect_every``,
``precision_hint`` ...). ``null`` means "not set here" (fall through to the IR metadata / device default).
An unknown key or a value of the wrong type is an InputError naming the file and the key.

Each field of :class:`RunSettings` is one setting (:func:`edge_runtime.settings.schema.setting`): its built-in
default, its check, what is expected, and, for the settings that are ``sdpose-edge run`` options, the option's
group and help (the order of the fields is the order of the options). :data:`SCHEMA`, :func:`defaults`,
:func:`validate` and :func:`add_cli_options` all come from the fields, as do the components' own configs that take
a setting (``PipelineConfig``, ``LiveConfig``, ``CompileOptions``: :func:`linked` fields, built with
:func:`edge_runtime.settings.schema.from_settings`). Adding a setting is one field here (and its line in
``configs/edge.yaml``, which states exactly these defaults: a test checks); see DEVELOPERS.md.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from edge_runtime.errors import InputError
from edge_runtime.model.keypoints import DEFAULT_SCORE_THRESHOLD, PART_NAMES
from edge_runtime.running.tracking import DEFAULT_BOX_EXPANSION, DEFAULT_LOST_S, DEFAULT_TRACK_IOU
from edge_runtime.serving.server_address import ServerAddress
from edge_runtime.settings import schema
from edge_runtime.settings.schema import (Setting, boolean, choice, nice, non_negative, non_negative_int, positive,
                                          positive_int, setting, string, unit)

logger = logging.getLogger(__name__)

#: the config file used when --config is not given (if it exists): ./configs/edge.yaml
DEFAULT_CONFIG = Path("configs") / "edge.yaml"

#: model kinds a device can be chosen for (``--model-device KIND=DEV``, ``model_device`` in edge.yaml)
MODEL_KINDS = ("vae_encoder", "pose", "vae_pose", "detector")


def _server_url(value: Any) -> bool:
    try:
        ServerAddress.parse(value)
    except InputError:
        return False
    return True


def _parts(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(v in PART_NAMES for v in value)


def _split_parts(value: Any) -> Any:
    """``"body,hands"`` (the command line) -> ``["body", "hands"]``."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


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
        if not string(device):
            raise InputError(f"{source}: {kind}: expected a non-empty OpenVINO device name, got {device!r}")
        out[str(kind)] = str(device).strip()
    return out


def _model_device(value: Any) -> bool:
    try:
        parse_model_device(value)
    except InputError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Every ``sdpose-edge run`` setting with its built-in default (``None``: not set, the IR metadata or the
    device decides). Groups: ``scheduling``, ``OpenVINO`` (compile options), ``pose and outputs``; a setting
    without ``help`` is a YAML-only setting."""

    # --- scheduling (the options' order is the fields' order)
    mode: "str | None" = setting(
        None, choice("file", "live"), "file | live or null (file for files, live for cameras/streams)",
        group="scheduling", help="file: every frame in order; live: newest frame wins (default: from the source)")
    max_frames: "int | None" = setting(
        None, positive_int, "a positive integer or null",
        group="scheduling", help="stop after N frames")
    detect_every: int = setting(
        1, positive_int, "a positive integer (run the detector every N frames)",
        group="scheduling", help="run the detector every N frames; boxes carried from the last poses in between")
    batch: int = setting(
        1, positive_int, "a positive integer (crops per pose request)",
        group="scheduling", help="crops per pose request (dynamic-batch IR)")
    max_inflight_frames: "int | None" = setting(
        None, positive_int, "a positive integer or null (2 x pose requests + 2)",
        group="scheduling", help="frames in the pipeline at once")
    chain_slots: "int | None" = setting(
        None, positive_int, "a positive integer or null (split chain: vae_encoder + pose requests in flight together)",
        group="scheduling", help="split chain: at most N vae_encoder + pose requests in flight together")
    max_persons: int = setting(
        20, positive_int, "a positive integer (keep the N highest-scoring boxes per frame)",
        group="scheduling", help="keep the N highest-scoring boxes per frame")
    chain: "str | None" = setting(
        None, choice("split", "fused"), "split | fused or null (the model folder's default)",
        group="scheduling", help="vae_encoder -> pose (split) or vae_pose (fused); default: the model folder's")
    reconnect_retries: int = setting(
        5, non_negative_int, "a non-negative integer",
        group="scheduling",
        help="camera/stream reconnection attempts per outage (exponential backoff); when spent the run ends with "
             "exit code 1 and summary.json capture_error; also bounds reconnects to --pose-server per request, "
             "after which its frames get error records")
    reconnect_initial_s: float = setting(
        0.5, positive, "a positive number of seconds",
        group="scheduling")
    reconnect_max_s: float = setting(
        8.0, positive, "a positive number of seconds",
        group="scheduling")
    schedule_poses: bool = setting(
        False, boolean, "true | false (file mode: tracks, pose scheduling and propagation as live)",
        group="scheduling", help="file mode: tracks, pose scheduling and propagation as in live mode (deterministic)")
    pose_budget: "float | None" = setting(
        None, unit, "a share of person-frames in (0, 1] or null (as fast as the pose requests allow)",
        group="scheduling", help="live/scheduled: share of person-frames whose pose is recomputed (e.g. 0.1)")
    propagation: "str | None" = setting(
        None, choice("forward", "two-sided"),
        "forward | two-sided or null (file mode with schedule_poses: two-sided; live: forward, two-sided with "
        "delay_ms > 0)",
        group="scheduling",
        help="carry poses from the keyframes on both sides of a frame (two-sided, the default for files and for "
             "live mode with --delay-ms > 0) or forward only (forward, live's default)")
    max_pose_age: "float | None" = setting(
        None, positive, "milliseconds or null (a pose older than this is due for recompute)",
        group="scheduling", metavar="MS",
        help="live/scheduled: recompute a pose once it is older than MS (or moved, or low confidence)")
    delay_ms: float = setting(
        0, non_negative, "a non-negative number of milliseconds (--delay-ms, live mode: hold output this long so "
        "that poses arriving within it are blended two-sided; 0: output at once)",
        group="scheduling", metavar="MS",
        help="live mode: hold each frame's output up to MS ms, so that a pose arriving within it is blended "
             "two-sided with the one before (default 0: output at once, forward only; latency becomes about MS "
             "plus a frame interval)")
    release_memory: bool = setting(
        False, boolean, "true | false (free each model's buffers after every request; 1 request)",
        group="scheduling",
        help="free each model's activation buffers after every request (lower peak RSS on small boxes; with --num-"
             "requests 1)")
    request_timeout_s: float = setting(
        600.0, positive, "a positive number of seconds (a request without answer fails)",
        group="scheduling", flag="--request-timeout", metavar="S",
        help="an inference request without an answer after S seconds fails its frames")
    pose_server: "str | None" = setting(
        None, _server_url, "grpc://HOST:PORT or http://HOST:PORT, or null (run the pose chain here)",
        group="scheduling", metavar="URL",
        help="run the pose chain on a KServe v2 server (sdpose-edge serve, OVMS): grpc://HOST:PORT or "
             "http://HOST:PORT; --num-requests requests in flight (default 2), --batch crops each")
    pose_server_model: str = setting(
        "sdpose", string, "the served model: crops to heatmaps (sdpose) or to keypoints (sdpose_keypoints)",
        group="scheduling", metavar="NAME",
        help="served model: sdpose (crops -> heatmaps, decoded here; default) or sdpose_keypoints (decoded on the "
             "server: 133 x 3 numbers per crop)")
    live_queue_size: int = setting(
        1, positive_int, "a positive integer (frames waiting in live mode; newest wins)",
        group="scheduling")
    # --- OpenVINO compile options (CompileOptions fields are linked to these)
    device: str = setting(
        "CPU", string, "a non-empty OpenVINO device name (CPU, GPU, NPU, AUTO ...)",
        group="OpenVINO", help="OpenVINO device (CPU, GPU, NPU, AUTO ...)")
    model_device: "dict[str, str]" = setting(
        {}, _model_device,
        "a mapping of model kind (vae_encoder, pose, vae_pose, detector) -> OpenVINO device, overriding device for "
        "that model",
        group="OpenVINO", metavar="KIND=DEV", repeat=True, parse=parse_model_device,
        help="device of one model kind, overriding --device (repeatable; kinds: vae_encoder, pose, vae_pose, "
             "detector)")
    static_batch: "bool | None" = setting(
        None, boolean,
        "true | false | null (reshape the dynamic batch to batch before compiling; null: on CPUs with AVX-512 "
        "kernels when batch is 1, where static shapes run faster; devices that need static shapes, such as the NPU, "
        "get it anyway)",
        group="OpenVINO", help="reshape the dynamic batch to --batch before compiling (static shapes; default: on "
                               "AVX-512 CPUs with --batch 1, where it is faster)")
    int8_matmuls: str = setting(
        "auto", choice("auto", "int8", "float"),
        "auto | int8 | float (auto: an INT8 folder's matrix products run in float on CPUs without VNNI)",
        group="OpenVINO", normalise=_lower,
        help="INT8 folders: run the matrix products (attention projections, feed-forward) as converted (int8) or "
             "with float activations (float; convolutions stay INT8); auto: float on CPUs without VNNI, where it "
             "is faster and closer to FP32 (docs/benchmarks.md, issue 28)")
    hint: "str | None" = setting(
        None, choice("THROUGHPUT", "LATENCY", "CUMULATIVE_THROUGHPUT"),
        "one of THROUGHPUT | LATENCY | CUMULATIVE_THROUGHPUT, or null (chosen by the runtime)",
        group="OpenVINO", normalise=_upper,
        help="PERFORMANCE_HINT (default THROUGHPUT; live mode on <= 4 cores: LATENCY)")
    num_streams: "int | None" = setting(
        None, positive_int, "a positive integer or null",
        group="OpenVINO", help="NUM_STREAMS")
    num_threads: "int | None" = setting(
        None, positive_int, "a positive integer or null",
        group="OpenVINO",
        help="INFERENCE_NUM_THREADS (default OpenVINO's; live mode on <= 4 cores: cores - 1, leaving a core to "
             "capture and output)")
    num_requests: "int | None" = setting(
        None, positive_int, "a positive integer or null (OPTIMAL_NUMBER_OF_INFER_REQUESTS)",
        group="OpenVINO",
        help="infer requests per model (default OPTIMAL_NUMBER_OF_INFER_REQUESTS; live mode on <= 4 cores: 1)")
    inference_nice: "int | None" = setting(
        None, nice, "an integer in [0, 19] or null (chosen by the runtime: 10 in live mode on <= 4 cores, else 0)",
        group="OpenVINO", metavar="N",
        help="live mode: run every thread but capture and output (the inference threads) at this much higher a nice"
             " value (default 0; live mode on <= 4 cores: 10)")
    precision_hint: "str | None" = setting(
        None, choice("f32", "bf16", "f16"), "one of f32 | bf16 | f16, or null (device default)",
        group="OpenVINO", normalise=_lower,
        help="INFERENCE_PRECISION_HINT (default: the device's; bf16 on AVX512_BF16 CPUs)")
    cache_dir: str = setting(
        "~/.cache/sdpose-edge", string, "a directory path, or null for no model cache",
        group="OpenVINO", nullable=True, help="model cache directory (CACHE_DIR)")
    # --- pose, tracking and outputs
    flip_test: bool = setting(
        False, boolean, "true | false",
        group="pose and outputs", help="also infer mirrored crops and average (2x pose cost)")
    decode: str = setting(
        "numpy", choice("graph", "numpy"), "graph | numpy (where heatmaps become keypoints)",
        group="pose and outputs",
        help="heatmap decoder: numpy (after the chain) or graph (OpenVINO ops appended to the pose IR); with "
             "--pose-server the served model decides (sdpose_keypoints decodes there)")
    parts: "tuple[str, ...]" = setting(
        PART_NAMES, _parts, "a list of parts from ['body', 'feet', 'face', 'hands']",
        group="pose and outputs", normalise=_split_parts,
        help="keypoint groups kept: comma list of " + ",".join(PART_NAMES))
    score_threshold: float = setting(
        DEFAULT_SCORE_THRESHOLD, unit, "a number in [0, 1] (keypoints drawn / used for tracking above it)",
        group="pose and outputs", help="keypoint visibility threshold")
    bbox_padding: "float | None" = setting(
        None, positive, "a positive number or null (the IR metadata, 1.25)",
        group="pose and outputs", help="box padding (default: IR metadata)")
    smooth: str = setting(
        "one-euro", choice("one-euro", "none"), "one-euro | none (per track and keypoint, before the outputs)",
        group="pose and outputs",
        help="temporal smoothing of the output keypoints per track: one-euro (a One Euro filter per keypoint, box-"
             "relative and timestamp-based; YAML smooth_* set its parameters) or none")
    # the One Euro parameters: chosen on the proxy (docs/benchmarks.md, "Temporal smoothing")
    smooth_min_cutoff_hz: float = setting(
        0.5, positive, "a positive number of Hz (One Euro: cutoff at rest)",
        group="pose and outputs")
    smooth_beta: float = setting(
        24.0, non_negative,
        "a non-negative number (One Euro: cutoff Hz added per box size per second of speed)",
        group="pose and outputs")
    smooth_d_cutoff_hz: float = setting(
        4.0, positive, "a positive number of Hz (One Euro: speed estimate)",
        group="pose and outputs")
    det_score_threshold: "float | None" = setting(
        None, unit, "a number in [0, 1] or null (detector default 0.5, as the original app)",
        group="pose and outputs", help="detector person score threshold")
    det_iou_threshold: "float | None" = setting(
        None, unit, "a number in [0, 1] or null (detector default 0.7, ultralytics' NMS IoU)",
        group="pose and outputs")
    track_iou_threshold: float = setting(
        DEFAULT_TRACK_IOU, unit, "a number in [0, 1]",
        group="pose and outputs")
    track_box_expansion: float = setting(
        DEFAULT_BOX_EXPANSION, positive, "a positive number (box from keypoints, scaled around its center)",
        group="pose and outputs")
    track_lost_s: float = setting(
        DEFAULT_LOST_S, positive, "seconds a track missed by the detector keeps its ID (occlusions)",
        group="pose and outputs")
    openpose: bool = setting(
        False, boolean, "true | false",
        group="pose and outputs", help="write OUT/openpose/<frame>.json (OpenPose layout), one per input frame")
    openpose_confidence: str = setting(
        "binary", choice("binary", "score"), "binary | score",
        group="pose and outputs",
        help="OpenPose c: binary (default; 1.0 for kept points, what ControlNet readers show) or score (clipped to "
             "[0, 1])")
    openpose_naming: str = setting(
        "frame", choice("frame", "openpose"), "frame | openpose",
        group="pose and outputs",
        help="OpenPose file names: frame (<frame:06d>.json, default) or openpose (<name>_keypoints.json)")
    coco_annotations: "str | None" = setting(
        None, string, "a COCO annotation file path or null",
        group="pose and outputs", metavar="ANN.json",
        help="COCO annotation file: coco_results.json takes image ids from its images[].file_name")
    save_video: bool = setting(
        False, boolean, "true | false",
        group="pose and outputs", help="write OUT/overlay.mp4 with the skeletons drawn")
    save_images: bool = setting(
        False, boolean, "true | false",
        group="pose and outputs", help="write OUT/images/<frame>.jpg with the skeletons drawn")
    show: bool = setting(
        False, boolean, "true | false",
        group="pose and outputs", help="show a window (q quits)")
    video_fps: "float | None" = setting(
        None, positive, "a positive number or null (the source's fps, else 10)",
        group="pose and outputs")
    progress: bool = setting(
        True, boolean, "true | false",
        group="pose and outputs", help="progress bar (files)")


#: the built-in defaults
DEFAULTS = RunSettings()
#: ``{key: Setting}``: every setting's default, check and expected text (``SCHEMA[key].default`` ...), in order
SCHEMA: Mapping[str, Setting] = schema.settings_of(RunSettings)
#: the settings that are also ``sdpose-edge run`` options, in option order
CLI_KEYS: tuple[str, ...] = tuple(key for key, spec in SCHEMA.items() if spec.help is not None)


def linked(key: str, **options: Any) -> Any:
    """A field of a component's config dataclass that is the setting ``key`` (its default and check; ``options``:
    :func:`edge_runtime.settings.schema.linked`)."""
    return schema.linked(key, SCHEMA[key], **options)


def add_cli_options(groups: Mapping[str, Any], after: "Mapping[str, Callable[[Any], None]] | None" = None,
                    keys: "Sequence[str] | None" = None) -> None:
    """Add every option setting (or those of ``keys``) to its argparse group in ``groups`` (default None = "not
    given", so YAML and built-in defaults apply). ``after[key](group)`` adds options that belong right after
    ``key``."""
    schema.add_options(SCHEMA, groups, after, keys)


def defaults() -> dict[str, Any]:
    """A fresh dict of the built-in defaults (sequences as lists, as the YAML reads)."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(RunSettings()).items()}


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
        out[key] = SCHEMA[key].read(value, f"{source}: '{raw_key}'")
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
