"""One typed settings path: the ``RunSettings`` fields are the schema (default, check, help, group), and the
components' configs take their settings' defaults and checks (linked fields) and are built from the settings."""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from edge_runtime import config
from edge_runtime.errors import InputError
from edge_runtime.media.sources import ReconnectPolicy
from edge_runtime.model.models import CompileOptions
from edge_runtime.running.modes import LiveConfig, PipelineConfig
from edge_runtime.running.smoothing import SmoothConfig
from edge_runtime.running.tracks import TrackConfig
from edge_runtime.settings import schema
from edge_runtime.settings.compile import COMPILE_KEYS, compile_options

CONFIGS = (PipelineConfig, LiveConfig, TrackConfig, SmoothConfig, CompileOptions, ReconnectPolicy)
#: fields whose own default deliberately differs from their setting's (a library call vs sdpose-edge run)
OWN_DEFAULTS = {("PipelineConfig", "progress"), ("LiveConfig", "mode"), ("LiveConfig", "inference_nice"),
                ("SmoothConfig", "method"), ("CompileOptions", "performance_hint"), ("CompileOptions", "model_device")}


def test_every_linked_field_is_a_setting_with_its_default() -> None:
    for cls in CONFIGS:
        fields = [f for f in dataclasses.fields(cls) if "key" in f.metadata]
        assert fields, cls
        for field in fields:
            key = field.metadata["key"]
            assert field.metadata["setting"] is config.SCHEMA[key], (cls.__name__, field.name)
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
            if (cls.__name__, field.name) not in OWN_DEFAULTS:
                assert default == config.SCHEMA[key].default, (cls.__name__, field.name)
    assert "mode" not in {f.name for f in dataclasses.fields(PipelineConfig)}  # a Pipeline runs files only
    with pytest.raises(TypeError):
        PipelineConfig(mode="file")  # type: ignore[call-arg]


def test_configs_are_built_from_the_settings() -> None:
    settings = config.defaults() | {
        "batch": 3, "detect_every": 2, "max_persons": 7, "request_timeout_s": 9.0, "track_lost_s": 2.5,
        "max_pose_age": 500, "smooth": "one-euro", "smooth_beta": 3.0, "reconnect_retries": 2, "hint": "latency",
        "precision_hint": "F32", "num_threads": 2, "parts": ["body", "hands"], "live_queue_size": 4}
    settings = config.merge(config.validate(settings), {})
    pipe = schema.from_settings(PipelineConfig, settings)
    assert (pipe.batch, pipe.detect_every, pipe.max_persons, pipe.request_timeout_s, pipe.parts, pipe.progress) == (
        3, 2, 7, 9.0, ("body", "hands"), True)
    live = schema.from_settings(LiveConfig, settings, track=schema.from_settings(TrackConfig, settings),
                                smooth=schema.from_settings(SmoothConfig, settings))
    assert (live.batch, live.live_queue_size, live.track.lost_s, live.track.max_pose_age_s) == (3, 4, 2.5, 0.5)
    assert (live.smooth.method, live.smooth.beta, live.mode, live.propagation) == ("one-euro", 3.0, "live", "forward")
    options = compile_options(settings)
    assert (options.performance_hint, options.inference_precision, options.inference_num_threads,
            options.model_device, options.batch) == ("LATENCY", "f32", 2, None, 3)
    assert schema.from_settings(ReconnectPolicy, settings).max_retries == 2
    assert set(COMPILE_KEYS) == {"device", "hint", "num_streams", "num_threads", "num_requests", "precision_hint",
                                 "cache_dir", "model_device", "static_batch", "int8_matmuls"}


@pytest.mark.parametrize("make, match", [
    (lambda: PipelineConfig(batch=0), "batch: expected a positive integer"),
    (lambda: PipelineConfig(score_threshold=1.5), r"score_threshold: expected a number in \[0, 1\]"),
    (lambda: LiveConfig(mode="offline"), r"mode: expected file \| live"),
    (lambda: LiveConfig(inference_nice=20), r"inference_nice: expected an integer in \[0, 19\]"),
    (lambda: LiveConfig(propagation="backward"), r"propagation: expected forward \| two-sided"),
    (lambda: TrackConfig(lost_s=0), "lost_s: expected seconds"),
    (lambda: CompileOptions(performance_hint="fast"), "performance_hint: expected one of THROUGHPUT"),
])
def test_a_config_field_is_checked_by_its_setting(make, match) -> None:
    with pytest.raises(InputError, match=match):
        make()


def test_none_where_a_component_allows_it() -> None:
    assert PipelineConfig(max_persons=None, request_timeout_s=None).max_persons is None
    assert CompileOptions(cache_dir=None, performance_hint=None).performance_hint == "THROUGHPUT"
    assert CompileOptions(performance_hint="latency", inference_precision="BF16").inference_precision == "bf16"


def test_a_new_setting_is_one_field() -> None:
    """The machinery on a toy schema: the field gives the YAML check, the option and the consumer's default."""

    @dataclasses.dataclass(frozen=True)
    class Toy:
        delay_ms: int = schema.setting(0, schema.non_negative_int, "a non-negative integer of ms", group="g",
                                       help="hold each frame this long", metavar="MS")
        quiet: bool = schema.setting(False, schema.boolean, "true | false")  # YAML only: no help

    spec = schema.settings_of(Toy)

    @dataclasses.dataclass
    class Consumer:
        delay_ms: int = schema.linked("delay_ms", spec["delay_ms"])

        def __post_init__(self) -> None:
            schema.check_fields(self)

    parser = argparse.ArgumentParser()
    schema.add_options(spec, {"g": parser})
    assert [a.option_strings for a in parser._actions[1:]] == [["--delay-ms"]]
    assert parser.parse_args([]).delay_ms is None and parser.parse_args(["--delay-ms", "5"]).delay_ms == 5
    assert spec["delay_ms"].read(5, "x.yaml: 'delay_ms'") == 5
    with pytest.raises(InputError, match="x.yaml: 'delay_ms' = -1 is invalid; expected a non-negative integer"):
        spec["delay_ms"].read(-1, "x.yaml: 'delay_ms'")
    with pytest.raises(InputError, match="may not be null"):
        spec["quiet"].read(None, "x.yaml: 'quiet'")
    assert Consumer().delay_ms == 0 and schema.from_settings(Consumer, {"delay_ms": 7}).delay_ms == 7
    with pytest.raises(InputError, match="delay_ms: expected a non-negative integer of ms, got -1"):
        Consumer(delay_ms=-1)


def test_serve_does_not_import_the_run_command() -> None:
    code = ("import sys, edge_runtime.serving.serve; "
            "sys.exit('edge_runtime.commands.run_cli' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
