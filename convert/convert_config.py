"""Settings of ``sdpose-convert convert``: ``configs/convert.yaml`` (or ``--config``) over the built-in defaults,
then the command-line overrides, checked into a :class:`ConvertConfig` (one :class:`ComponentPlan` per component).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from convert.quantize import MODES, OVERFLOW_FIX, QuantizationError, QuantizeOptions
from edge_runtime.errors import InputError
from edge_runtime.metadata import COMPONENT_KINDS

#: the components with their own settings, in conversion order (the fused vae_pose takes the pose settings:
#: :func:`plan_kind`)
COMPONENTS = tuple(k for k in COMPONENT_KINDS if k != "vae_pose")
#: the config file used when --config is not given (if it exists), found relative to the working directory
#: as ``sdpose-edge``'s configs/edge.yaml: an installed package has no configs/ folder, a project has its own
DEFAULT_CONFIG = Path("configs") / "convert.yaml"
#: the built-in defaults; the shipped configs/convert.yaml states exactly these (tests/convert/test_convert_cmd.py)
DEFAULT_CONFIG_VALUES: dict[str, Any] = {
    "input_size": "1024x768",
    "detector_imgsz": 640,
    "components": {
        "detector": {"precision": "int8", "subset_size": 32},
        "vae_encoder": {"precision": "int8", "subset_size": 64},
        "pose": {"precision": "int8", "subset_size": 64},
    },
    "calibration": {"held_out": 4, "capture_precision_hint": "f32"},
    "validation": {"latency_runs": 3, "latency_hints": ["f32", "bf16"]},
    "advanced": {},
}
_TOP_KEYS = {"input_size", "detector_imgsz", "components", "calibration", "validation", "advanced"}
_COMPONENT_KEYS = {"precision", "subset_size", "advanced"}
_CALIB_KEYS = {"held_out", "capture_precision_hint"}
_VALIDATION_KEYS = {"latency_runs", "latency_hints"}
_HINTS = ("f32", "bf16", "f16")



def plan_kind(kind: str) -> str:
    """The component whose settings ``kind`` is converted with (vae_pose: pose's)."""
    return "pose" if kind == "vae_pose" else kind


@dataclasses.dataclass
class ComponentPlan:
    """How one component is converted: precision mode, NNCF subset size, NNCF options."""

    precision: str
    subset_size: int
    options: QuantizeOptions


@dataclasses.dataclass
class ConvertConfig:
    """Resolved conversion settings (YAML + CLI overrides)."""

    input_size: tuple[int, int]  # (H, W)
    detector_imgsz: int
    components: dict[str, ComponentPlan]
    held_out: int
    capture_precision_hint: str
    latency_runs: int
    latency_hints: list[str]
    token_downsample: int = 1  # attention token downsampling factor (1 = off)
    token_levels: tuple[int, ...] = (0,)  # UNet levels it applies to

    def describe(self) -> dict[str, Any]:
        from convert.quantize import describe_options

        return {"input_size_hw": list(self.input_size), "detector_imgsz": self.detector_imgsz,
                "components": {k: {"precision": p.precision, "subset_size": p.subset_size,
                                   "advanced": describe_options(p.options)} for k, p in self.components.items()},
                "held_out": self.held_out, "capture_precision_hint": self.capture_precision_hint,
                "latency_runs": self.latency_runs, "latency_hints": list(self.latency_hints),
                "token_downsample": self.token_downsample, "token_levels": list(self.token_levels)}


def parse_input_size(text: Any, where: str = "--input-size") -> tuple[int, int]:
    """'HxW' (or [H, W]) -> (H, W), positive multiples of 8; InputError otherwise."""
    from edge_runtime.geometry import parse_size_hw

    return parse_size_hw(text, where)


def _check_keys(d: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise InputError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(str(k) for k in d if str(k) not in allowed)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    return dict(d)


def _positive_int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_mode(mode: Any, where: str) -> str:
    if mode not in MODES:
        raise InputError(f"{where}: precision {mode!r} is unknown; expected one of {', '.join(MODES)}")
    return str(mode)


def parse_component_precision(text: str) -> dict[str, str]:
    """'pose=hybrid,vae_encoder=int8' -> {"pose": "hybrid", "vae_encoder": "int8"}; InputError on bad items."""
    out: dict[str, str] = {}
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        if "=" not in item:
            raise InputError(f"--component-precision: expected COMPONENT=MODE items, got {item!r}")
        kind, mode = (s.strip() for s in item.split("=", 1))
        if kind not in COMPONENTS:
            raise InputError(f"--component-precision: component {kind!r} is unknown; expected one of "
                             f"{', '.join(COMPONENTS)}")
        out[kind] = _check_mode(mode, f"--component-precision {kind}")
    return out


def load_config(path: str | Path | None = None, *, precision: str | None = None,
                component_precision: Mapping[str, str] | None = None, subset_size: int | None = None,
                input_size: tuple[int, int] | None = None, held_out: int | None = None,
                latency_runs: int | None = None, overflow_fix: str | None = None, token_downsample: int = 1,
                token_levels: tuple[int, ...] | None = None) -> ConvertConfig:
    """Read ``configs/convert.yaml`` (or ``path``), apply CLI overrides, validate everything.

    Precedence: ``component_precision`` > ``precision`` > YAML components.<kind>.precision;
    ``overflow_fix`` (--overflow-fix) overrides ``advanced.overflow_fix`` of every component.
    Raises InputError naming the file and key for unknown keys or bad values.
    """
    raw: dict[str, Any] = json.loads(json.dumps(DEFAULT_CONFIG_VALUES))
    source = "built-in defaults"
    if overflow_fix is not None and overflow_fix not in OVERFLOW_FIX:
        raise InputError(f"--overflow-fix: expected one of {list(OVERFLOW_FIX)}, got {overflow_fix!r}")
    cfg_path = Path(path) if path is not None else DEFAULT_CONFIG
    if path is not None or cfg_path.is_file():
        if not cfg_path.is_file():
            raise InputError(f"--config {cfg_path}: no such file")
        try:
            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise InputError(f"{cfg_path}: not valid YAML ({exc})") from exc
        loaded = _check_keys(loaded, _TOP_KEYS, str(cfg_path))
        source = str(cfg_path)
        for key, value in loaded.items():
            if key == "components":
                comps = _check_keys(value, set(COMPONENTS), f"{cfg_path}: components")
                for kind, spec in comps.items():
                    raw["components"][kind].update(_check_keys(spec, _COMPONENT_KEYS,
                                                               f"{cfg_path}: components.{kind}"))
            elif key in ("calibration", "validation"):
                allowed = _CALIB_KEYS if key == "calibration" else _VALIDATION_KEYS
                raw[key].update(_check_keys(value, allowed, f"{cfg_path}: {key}"))
            else:
                raw[key] = value

    size = input_size if input_size is not None else parse_input_size(raw["input_size"], f"{source}: input_size")
    imgsz = _positive_int(raw["detector_imgsz"], f"{source}: detector_imgsz")
    if imgsz % 32:
        raise InputError(f"{source}: detector_imgsz must be a multiple of 32, got {imgsz}")
    if overflow_fix is not None:
        raw["advanced"] = dict(raw.get("advanced") or {}, overflow_fix=overflow_fix)
        for spec in raw["components"].values():
            if spec.get("advanced"):
                spec["advanced"] = dict(spec["advanced"], overflow_fix=overflow_fix)
    try:
        global_opts = QuantizeOptions.from_dict(raw.get("advanced") or {}, f"{source}: advanced")
    except QuantizationError as exc:
        raise InputError(str(exc)) from exc
    plans: dict[str, ComponentPlan] = {}
    overrides = dict(component_precision or {})
    for kind in COMPONENTS:
        spec = raw["components"][kind]
        mode = overrides.get(kind) or precision or spec.get("precision")
        mode = _check_mode(mode, f"{source}: components.{kind}.precision")
        subset = subset_size if subset_size is not None else spec.get("subset_size")
        subset = _positive_int(subset, f"{source}: components.{kind}.subset_size")
        adv = dict(raw.get("advanced") or {})
        adv.update(spec.get("advanced") or {})
        try:
            opts = QuantizeOptions.from_dict(adv, f"{source}: components.{kind}.advanced") if spec.get(
                "advanced") else global_opts
        except QuantizationError as exc:
            raise InputError(str(exc)) from exc
        plans[kind] = ComponentPlan(mode, subset, opts)
    calib = raw["calibration"]
    held = held_out if held_out is not None else calib.get("held_out")
    held = _positive_int(held, f"{source}: calibration.held_out", minimum=0)
    hint = calib.get("capture_precision_hint")
    if hint not in _HINTS:
        raise InputError(f"{source}: calibration.capture_precision_hint: expected one of {_HINTS}, got {hint!r}")
    val = raw["validation"]
    runs = latency_runs if latency_runs is not None else val.get("latency_runs")
    runs = _positive_int(runs, f"{source}: validation.latency_runs", minimum=0)
    hints = val.get("latency_hints")
    if not isinstance(hints, list) or any(h not in _HINTS for h in hints):
        raise InputError(f"{source}: validation.latency_hints: expected a list of {_HINTS}, got {hints!r}")
    from convert.token_downsample import check_settings

    factor, levels = check_settings(token_downsample, token_levels)
    return ConvertConfig(size, imgsz, plans, held, hint, runs, list(hints), factor, levels)
