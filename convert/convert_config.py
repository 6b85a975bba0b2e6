"""Settings of ``sdpose-convert convert``: ``configs/convert.yaml`` (or ``--config``) over the built-in defaults,
then the command-line overrides, checked into a :class:`ConvertConfig` (one :class:`ComponentPlan` per component).

The settings dataclasses are the schema, as the runtime's settings: each field's default is the built-in value
and its metadata carries the check and what is expected (:func:`edge_runtime.settings.schema.setting`, the one
helper both use); the YAML sections, their allowed
keys, the error messages and :data:`DEFAULT_CONFIG_VALUES` all come from them. The shipped
``configs/convert.yaml`` states exactly these defaults (tests/convert/test_convert_cmd.py). The NNCF section
``advanced`` is :class:`convert.quantize.QuantizeOptions`, checked by it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from convert.quantize import MODES, OVERFLOW_FIX, QuantizationError, QuantizeOptions
from edge_runtime.config import SCHEMA as RUN_SCHEMA
from edge_runtime.errors import InputError
from edge_runtime.model.metadata import COMPONENT_KINDS
from edge_runtime.settings.schema import int_at_least, setting, setting_of

#: the components with their own settings, in conversion order (the fused vae_pose takes the pose settings:
#: :func:`plan_kind`)
COMPONENTS = tuple(k for k in COMPONENT_KINDS if k != "vae_pose")
#: the config file used when --config is not given (if it exists), found relative to the working directory
#: as ``sdpose-edge``'s configs/edge.yaml: an installed package has no configs/ folder, a project has its own
DEFAULT_CONFIG = Path("configs") / "convert.yaml"
#: INFERENCE_PRECISION_HINT values (those of the runtime's precision_hint setting)
_HINTS: tuple[str, ...] = RUN_SCHEMA["precision_hint"].check.choices


def plan_kind(kind: str) -> str:
    """The component whose settings ``kind`` is converted with (vae_pose: pose's)."""
    return "pose" if kind == "vae_pose" else kind


# ---------------------------------------------------------------------------------------------- schema

def _is_size_hw(value: Any) -> bool:
    try:
        parse_input_size(value)
    except InputError:
        return False
    return True


def _is_mapping(value: Any) -> bool:
    return value is None or isinstance(value, Mapping)  # null: empty


def _is_hints(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(h in _HINTS for h in value)


@dataclasses.dataclass(frozen=True)
class ComponentSettings:
    """``components.<kind>``: how one component is converted."""

    precision: str = setting("int8", lambda v: v in MODES, f"a precision mode, one of {', '.join(MODES)}")
    subset_size: int = setting(64, int_at_least(1), "an integer >= 1 (calibration samples NNCF uses)")
    advanced: dict = setting({}, _is_mapping, "a mapping of NNCF settings (this component's overrides of the "
                                              "section advanced)")


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """``calibration``: the split of the calibration set and the capture of the pose IR's inputs."""

    held_out: int = setting(4, int_at_least(0), "an integer >= 0 (crops kept out for the fidelity report)")
    capture_precision_hint: str = setting("f32", lambda v: v in _HINTS, f"one of {_HINTS}")


@dataclasses.dataclass(frozen=True)
class ValidationSettings:
    """``validation``: the latency part of the fidelity report."""

    latency_runs: int = setting(3, int_at_least(0), "an integer >= 0 (timed runs per component and hint)")
    latency_hints: tuple = setting(("f32", "bf16"), _is_hints, f"a list of {_HINTS}")


def _components() -> dict[str, ComponentSettings]:
    return {"detector": ComponentSettings(subset_size=32), "vae_encoder": ComponentSettings(),
            "pose": ComponentSettings()}


@dataclasses.dataclass(frozen=True)
class ConvertSettings:
    """The whole file: every section, with the built-in defaults."""

    input_size: str = setting("1024x768", _is_size_hw, "a crop size HxW, positive multiples of 8")
    detector_imgsz: int = setting(640, lambda v: int_at_least(32)(v) and v % 32 == 0,
                                  "a positive multiple of 32 (the detector's letterbox side)")
    components: dict = dataclasses.field(default_factory=_components)
    calibration: CalibrationSettings = dataclasses.field(default_factory=CalibrationSettings)
    validation: ValidationSettings = dataclasses.field(default_factory=ValidationSettings)
    advanced: dict = setting({}, _is_mapping, "a mapping of NNCF settings (convert.quantize.QuantizeOptions)")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


#: the built-in defaults as the YAML states them (derived from :class:`ConvertSettings`, not kept by hand)
DEFAULT_CONFIG_VALUES: dict[str, Any] = _plain(dataclasses.asdict(ConvertSettings()))


def _read_section(cls: Any, value: Any, where: str, base: Any = None, sep: str = ".") -> Any:
    """The YAML mapping ``value`` (None = empty) over ``base`` (default: ``cls()``), every key checked by its
    field's metadata; InputError naming ``where`` and the key (``where{sep}key``)."""
    base = cls() if base is None else base
    if value is None:
        return base
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected a mapping, got {type(value).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in value if str(k) not in fields)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    given: dict[str, Any] = {}
    for key, item in value.items():
        spec = setting_of(fields[str(key)])
        if spec is not None and not spec.check(item):
            raise InputError(f"{where}{sep}{key}: expected {spec.expected}, got {item!r}")
        given[str(key)] = item
    return dataclasses.replace(base, **given)


def read_settings(path: str | Path | None = None) -> tuple[ConvertSettings, str]:
    """(settings, where they come from): ``path``, else ``configs/convert.yaml`` when present, else the
    built-in defaults. InputError for a missing or invalid file, naming the file and key."""
    cfg_path = Path(path) if path is not None else DEFAULT_CONFIG
    if path is None and not cfg_path.is_file():
        return ConvertSettings(), "built-in defaults"
    if not cfg_path.is_file():
        raise InputError(f"--config {cfg_path}: no such file")
    try:
        loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{cfg_path}: not valid YAML ({exc})") from exc
    source = str(cfg_path)
    sections = {"components", "calibration", "validation"}
    top = _read_section(ConvertSettings, {k: v for k, v in (loaded or {}).items() if k not in sections}
                        if isinstance(loaded, Mapping) else loaded, source, sep=": ")
    loaded = dict(loaded or {})
    comps = loaded.get("components")
    if comps is not None and not isinstance(comps, Mapping):
        raise InputError(f"{source}: components: expected a mapping, got {type(comps).__name__}")
    unknown = sorted(str(k) for k in (comps or {}) if str(k) not in COMPONENTS)
    if unknown:
        raise InputError(f"{source}: components: unknown key(s) {unknown}; expected some of {sorted(COMPONENTS)}")
    components = {kind: _read_section(ComponentSettings, (comps or {}).get(kind), f"{source}: components.{kind}",
                                      base=spec) for kind, spec in top.components.items()}
    return dataclasses.replace(
        top, components=components,
        calibration=_read_section(CalibrationSettings, loaded.get("calibration"), f"{source}: calibration"),
        validation=_read_section(ValidationSettings, loaded.get("validation"), f"{source}: validation")), source


# ---------------------------------------------------------------------------------------------- resolved


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
    vae_token_downsample: int = 1  # the VAE encoder's mid-block attention token downsampling factor (1 = off)

    def describe(self) -> dict[str, Any]:
        from convert.quantize import describe_options

        return {"input_size_hw": list(self.input_size), "detector_imgsz": self.detector_imgsz,
                "components": {k: {"precision": p.precision, "subset_size": p.subset_size,
                                   "advanced": describe_options(p.options)} for k, p in self.components.items()},
                "held_out": self.held_out, "capture_precision_hint": self.capture_precision_hint,
                "latency_runs": self.latency_runs, "latency_hints": list(self.latency_hints),
                "token_downsample": self.token_downsample, "token_levels": list(self.token_levels),
                "vae_token_downsample": self.vae_token_downsample}


def parse_input_size(text: Any, where: str = "--input-size") -> tuple[int, int]:
    """'HxW' (or [H, W]) -> (H, W), positive multiples of 8; InputError otherwise."""
    from edge_runtime.model.geometry import parse_size_hw

    return parse_size_hw(text, where)


def checked_int(value: Any, where: str, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum``, else InputError naming ``where``."""
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
                token_levels: tuple[int, ...] | None = None, vae_token_downsample: int = 1) -> ConvertConfig:
    """Read ``configs/convert.yaml`` (or ``path``), apply CLI overrides, validate everything.

    Precedence: ``component_precision`` > ``precision`` > YAML components.<kind>.precision;
    ``overflow_fix`` (--overflow-fix) overrides ``advanced.overflow_fix`` of every component.
    Raises InputError naming the file and key for unknown keys or bad values.
    """
    from convert.token_downsample import VAE_OPTION, check_factor, check_settings

    if overflow_fix is not None and overflow_fix not in OVERFLOW_FIX:
        raise InputError(f"--overflow-fix: expected one of {list(OVERFLOW_FIX)}, got {overflow_fix!r}")
    settings, source = read_settings(path)
    size = input_size if input_size is not None else parse_input_size(settings.input_size, f"{source}: input_size")
    plans = _plans(settings, source, precision, dict(component_precision or {}), subset_size, overflow_fix)
    held = checked_int(held_out if held_out is not None else settings.calibration.held_out,
                         f"{source}: calibration.held_out", minimum=0)
    runs = checked_int(latency_runs if latency_runs is not None else settings.validation.latency_runs,
                         f"{source}: validation.latency_runs", minimum=0)
    factor, levels = check_settings(token_downsample, token_levels)
    return ConvertConfig(size, settings.detector_imgsz, plans, held, settings.calibration.capture_precision_hint,
                         runs, list(settings.validation.latency_hints), factor, levels,
                         check_factor(vae_token_downsample, VAE_OPTION))


def _plans(settings: ConvertSettings, source: str, precision: str | None, overrides: dict[str, str],
           subset_size: int | None, overflow_fix: str | None) -> dict[str, ComponentPlan]:
    """One :class:`ComponentPlan` per component: the YAML's, with the command line's precision, subset size and
    overflow fix over it; NNCF options = the section advanced with the component's own advanced over it."""
    advanced = dict(settings.advanced or {})
    if overflow_fix is not None:
        advanced["overflow_fix"] = overflow_fix
    global_opts = _quantize_options(advanced, f"{source}: advanced")
    plans: dict[str, ComponentPlan] = {}
    for kind in COMPONENTS:
        spec = settings.components[kind]
        mode = _check_mode(overrides.get(kind) or precision or spec.precision, f"{source}: components.{kind}.precision")
        subset = checked_int(subset_size if subset_size is not None else spec.subset_size,
                               f"{source}: components.{kind}.subset_size")
        own = dict(spec.advanced or {})
        if own and overflow_fix is not None:
            own["overflow_fix"] = overflow_fix
        opts = _quantize_options(dict(advanced, **own), f"{source}: components.{kind}.advanced") if own \
            else global_opts
        plans[kind] = ComponentPlan(mode, subset, opts)
    return plans


def _quantize_options(values: dict[str, Any], where: str) -> QuantizeOptions:
    try:
        return QuantizeOptions.from_dict(values, where)
    except QuantizationError as exc:
        raise InputError(str(exc)) from exc
