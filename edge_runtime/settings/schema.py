"""Settings dataclasses as their own schema: each field's metadata carries its check, what is expected, its help
and its command-line group (:func:`setting`). The YAML keys, their validation, argparse options and the built-in
defaults all come from the fields, so a setting has one name, one default and one check.

Two kinds of fields:

- :func:`setting` declares a setting (``edge_runtime.config.RunSettings``, the converter's
  ``convert.convert_config.ConvertSettings``): the field's default is the built-in value;
- :func:`linked` declares a field of a component's own config dataclass (``PipelineConfig``, ``LiveConfig``,
  ``CompileOptions``) that *is* a setting under the setting's name (or, where the field has another name, says
  which setting it is): its default and its check are the setting's; :func:`check_fields` runs the checks and
  :func:`from_settings` builds the dataclass from a settings mapping, so nothing is copied by hand.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from edge_runtime.errors import InputError

# ---------------------------------------------------------------------------------------------- checks


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def nice(value: Any) -> bool:
    return non_negative_int(value) and value <= 19


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unit(value: Any) -> bool:
    return number(value) and 0.0 <= float(value) <= 1.0


def positive(value: Any) -> bool:
    return number(value) and float(value) > 0.0


def non_negative(value: Any) -> bool:
    return number(value) and float(value) >= 0.0


def string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def boolean(value: Any) -> bool:
    return isinstance(value, bool)


def int_at_least(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def choice(*choices: str) -> Callable[[Any], bool]:
    """A check accepting one of ``choices`` (the command line offers them)."""
    def check(value: Any) -> bool:
        return isinstance(value, str) and value in choices
    check.__doc__ = " | ".join(choices)
    check.choices = choices  # type: ignore[attr-defined]
    return check


#: checks whose values are integers / numbers on the command line (argparse ``type``)
_INT_CHECKS = (positive_int, non_negative_int, nice)
_FLOAT_CHECKS = (positive, unit, number, non_negative)

# ---------------------------------------------------------------------------------------------- one setting


class Setting(NamedTuple):
    """One setting: its built-in ``default``, the ``check`` a value passes and what is ``expected`` (the error
    text); ``help`` and ``group`` make it a command-line option of that argparse group (``help`` None: a
    YAML-only setting); ``flag`` / ``metavar`` / ``repeat`` (``action="append"``) shape the option;
    ``normalise`` runs before the check (``"latency"`` -> ``"LATENCY"``), ``parse(value, where)`` replaces
    check and normalise for a setting with its own errors; ``nullable``: null is a real value although the
    default is not null (``cache_dir``: no cache)."""

    default: Any
    check: Callable[[Any], bool]
    expected: str
    help: "str | None" = None
    group: "str | None" = None
    flag: "str | None" = None
    metavar: "str | None" = None
    repeat: bool = False
    normalise: "Callable[[Any], Any] | None" = None
    parse: "Callable[[Any, str], Any] | None" = None
    nullable: bool = False

    def allows_null(self) -> bool:
        return self.default is None or self.nullable

    def read(self, value: Any, where: str) -> Any:
        """``value`` checked and normalised (lists for sequences); InputError naming ``where`` otherwise."""
        if value is None:
            if not self.allows_null():
                raise InputError(f"{where} may not be null; expected {self.expected}")
            return None
        if self.parse is not None:
            return self.parse(value, where)
        raw = value
        if self.normalise is not None:
            value = self.normalise(value)
        if not self.check(value):  # the value as given (a case-normalised string as checked)
            shown = value if isinstance(value, str) else raw
            raise InputError(f"{where} = {shown!r} is invalid; expected {self.expected}")
        return list(value) if isinstance(value, (list, tuple)) else value


def setting(default: Any, check: Callable[[Any], bool], expected: str, **options: Any) -> Any:
    """A settings field: the built-in ``default`` (a list or dict default is copied per instance), its ``check``
    and what is ``expected``; ``options``: the other :class:`Setting` fields (help, group, flag ...)."""
    meta = {"setting": Setting(default, check, expected, **options)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting_of(field: "dataclasses.Field[Any]") -> "Setting | None":
    return field.metadata.get("setting")


def settings_of(cls: Any) -> dict[str, Setting]:
    """``{key: Setting}`` of a settings dataclass, in field order."""
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls) if "setting" in f.metadata}

# ---------------------------------------------------------------------------------------------- linked fields


_UNSET: Any = object()


def linked(key: str, spec: Setting, *, default: Any = _UNSET, convert: "Callable[[Any], Any] | None" = None,
           nullable: "bool | None" = None) -> Any:
    """A field of a component's config that is the setting ``key``: the setting's default (``default`` only where
    the component's own default differs, e.g. no progress bar outside the CLI) and check; ``convert`` turns the
    setting's value into the field's (ms -> s); ``nullable``: None is allowed (default: when the field's
    default is None)."""
    value = spec.default if default is _UNSET else default
    meta = {"setting": spec, "key": key, "convert": convert,
            "nullable": value is None if nullable is None else nullable}
    if isinstance(value, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=value, metadata=meta)


def _linked_fields(cls_or_obj: Any) -> list["dataclasses.Field[Any]"]:
    return [f for f in dataclasses.fields(cls_or_obj) if "key" in f.metadata]


def linked_keys(cls: Any) -> tuple[str, ...]:
    """The settings a config dataclass takes (its linked fields' keys), in field order."""
    return tuple(f.metadata["key"] for f in _linked_fields(cls))


def check_fields(obj: Any) -> None:
    """Check every linked field of ``obj`` by its setting (normalised in place: ``"latency"`` -> ``"LATENCY"``);
    InputError ``"<field>: expected ..., got ..."`` naming the field."""
    for field in _linked_fields(obj):
        spec: Setting = field.metadata["setting"]
        value = getattr(obj, field.name)
        if value is None and field.metadata["nullable"]:
            continue
        if value is not None and spec.parse is not None:
            object.__setattr__(obj, field.name, spec.parse(value, field.name))
            continue
        if value is not None and spec.normalise is not None:
            value = spec.normalise(value)
            object.__setattr__(obj, field.name, value)
        if value is None or not spec.check(value):
            raise InputError(f"{field.name}: expected {spec.expected}, got {value!r}")


def from_settings(cls: Any, settings: Mapping[str, Any], **overrides: Any) -> Any:
    """``cls`` built from a settings mapping: each linked field takes its setting's value (converted; a null,
    "not set", leaves a field that takes no None at its own default: ``LiveConfig.mode`` "live"), ``overrides``
    the fields the caller decides (nested configs, resolved values)."""
    kwargs: dict[str, Any] = {}
    for field in _linked_fields(cls):
        if field.name in overrides or field.metadata["key"] not in settings:
            continue
        value = settings[field.metadata["key"]]
        if value is None and not field.metadata["nullable"]:
            continue
        convert = field.metadata["convert"]
        kwargs[field.name] = convert(value) if convert is not None and value is not None else value
    kwargs.update(overrides)
    return cls(**kwargs)

# ---------------------------------------------------------------------------------------------- argparse


def add_options(schema: Mapping[str, Setting], groups: Mapping[str, Any],
                after: "Mapping[str, Callable[[Any], None]] | None" = None,
                keys: "Sequence[str] | None" = None) -> None:
    """Add every setting of ``schema`` with a ``help`` (or those of ``keys``) to its argparse group in ``groups``,
    default None ("not given": the YAML and built-in defaults apply); the option's type, choices or on/off form
    come from its check; the option is ``--<key with - for _>`` unless the setting's ``flag`` says otherwise.
    ``after[key](group)`` adds options that belong right after ``key``."""
    for key, spec in schema.items():
        if spec.help is None or keys is not None and key not in keys:
            continue
        group = groups[spec.group]
        group.add_argument(spec.flag or "--" + key.replace("_", "-"), **_argparse_kwargs(key, spec))
        if after and key in after:
            after[key](group)


def _argparse_kwargs(key: str, spec: Setting) -> dict[str, Any]:
    import argparse

    kwargs: dict[str, Any] = {"dest": key, "default": None, "help": spec.help}
    if spec.metavar is not None:
        kwargs["metavar"] = spec.metavar
    if spec.repeat:
        kwargs["action"] = "append"
    elif spec.check is boolean:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif hasattr(spec.check, "choices"):
        kwargs["choices"] = spec.check.choices
    elif spec.check in _INT_CHECKS:
        kwargs["type"] = int
    elif spec.check in _FLOAT_CHECKS:
        kwargs["type"] = float
    return kwargs
