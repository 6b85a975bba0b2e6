"""ModelFolder loading/validation errors and CompileOptions (tiny fake model folders, no torch)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints
import pytest

from edge_runtime.errors import InputError, ModelFolderError
from edge_runtime.model.models import CompileOptions, ModelFolder, compile_model, optimal_requests
from tests.fake_models import build_fake_model_folder


def _replace_ir(model: ov.Model, xml: Path, tmp_path: Path) -> None:
    """Save ``model`` elsewhere, then rename over ``xml`` (+ .bin): the old .bin may still be mmapped."""
    ov.save_model(model, str(tmp_path / xml.name), compress_to_fp16=False)
    for suffix in (".xml", ".bin"):
        os.replace(tmp_path / xml.with_suffix(suffix).name, xml.with_suffix(suffix))


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "models"
    shutil.copytree(src, dst)
    return dst


def test_folder_reads_index_components_and_metadata(fake_models_dir):
    folder = ModelFolder(fake_models_dir)
    assert folder.chain == "split"
    assert folder.kinds == ("vae_encoder", "pose")
    assert set(folder.components) == {"vae_encoder", "pose", "vae_pose"}
    assert folder.has("vae_pose") and not folder.has("detector")
    assert folder.components["pose"] == Path(fake_models_dir) / "pose.xml"
    meta = folder.pose_meta
    assert (meta["scheme"], meta["num_keypoints"]) == ("wholebody", 133)
    assert (meta["input_width"], meta["input_height"], meta["heatmap_width"], meta["heatmap_height"]) == (48, 64, 12, 16)
    assert meta["bbox_padding"] == 1.25 and meta["kind"] == "pose"
    assert folder.metadata("vae_encoder")["kind"] == "vae_encoder"
    assert folder.read_model("pose") is folder.read_model("pose")  # cached


def test_folder_chain_override_and_errors(fake_models_dir, make_fake_models):
    fused = ModelFolder(fake_models_dir, chain="fused")
    assert fused.kinds == ("vae_pose",) and fused.pose_meta["kind"] == "vae_pose"
    with pytest.raises(InputError, match="chain: expected one of"):
        ModelFolder(fake_models_dir, chain="parallel")
    no_fused = make_fake_models(fused=False)
    with pytest.raises(ModelFolderError, match=r"chain 'fused' needs component\(s\) \['vae_pose'\]"):
        ModelFolder(no_fused, chain="fused")
    index_path = no_fused / "sdpose_models.json"
    index = json.loads(index_path.read_text())
    index["default_chain"] = "fused"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelFolderError, match="default_chain 'fused' needs components"):
        ModelFolder(no_fused)


def test_default_chain_fused_from_index(make_fake_models):
    folder = ModelFolder(make_fake_models(default_chain="fused"))
    assert folder.chain == "fused"


def test_missing_folder_and_index(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        ModelFolder(tmp_path / "nowhere")
    with pytest.raises(ModelFolderError, match="sdpose_models.json is missing"):
        ModelFolder(tmp_path)


def test_missing_ir_and_weights(fake_models_dir, tmp_path):
    folder = _copy(fake_models_dir, tmp_path)
    (folder / "pose.bin").unlink()
    with pytest.raises(ModelFolderError, match=r"pose\.bin: weights of component 'pose' are missing"):
        ModelFolder(folder)
    (folder / "pose.xml").unlink()
    with pytest.raises(ModelFolderError, match=r"pose\.xml: IR file of component 'pose' is missing"):
        ModelFolder(folder)


def test_unreadable_ir(fake_models_dir, tmp_path):
    folder = _copy(fake_models_dir, tmp_path)
    (folder / "vae_encoder.xml").write_text("<net>not an IR")
    with pytest.raises(ModelFolderError, match=r"vae_encoder\.xml: cannot read the IR of component 'vae_encoder'"):
        ModelFolder(folder)


def test_ir_without_sdpose_metadata(make_fake_models):
    folder = make_fake_models(with_metadata=False)
    with pytest.raises(ModelFolderError, match=r"pose\.xml: IR has no 'sdpose' metadata"):
        ModelFolder(folder)


def test_index_kind_mismatch(fake_models_dir, tmp_path):
    folder = _copy(fake_models_dir, tmp_path)
    index_path = folder / "sdpose_models.json"
    index = json.loads(index_path.read_text())
    index["components"]["pose"] = "vae_encoder.xml"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelFolderError, match="rt_info sdpose/kind is 'vae_encoder' but the index lists this file as 'pose'"):
        ModelFolder(folder)


def test_inconsistent_vae_and_pose_sizes(fake_models_dir, make_fake_models, tmp_path):
    folder = _copy(fake_models_dir, tmp_path)
    other = make_fake_models(input_size=(64, 64), fused=False)
    for suffix in (".xml", ".bin"):
        shutil.copy(other / f"vae_encoder{suffix}", folder / f"vae_encoder{suffix}")
    with pytest.raises(ModelFolderError, match=r"vae_encoder\.xml: image input shape \[None, 64, 64, 3\] is not \[N,64,48,3\]"):
        ModelFolder(folder)
    # the fused chain does not use that vae_encoder and still loads
    assert ModelFolder(folder, chain="fused").chain == "fused"


def test_metadata_disagrees_with_graph(make_fake_models, tmp_path):
    from edge_runtime.model.metadata import write_metadata
    folder = make_fake_models(fused=False)
    core = ov.Core()
    model = core.read_model(str(folder / "pose.xml"))
    write_metadata(model, {"num_keypoints": 17})
    _replace_ir(model, folder / "pose.xml", tmp_path)
    with pytest.raises(ModelFolderError, match=r"output shape \[None, 133, 16, 12\] does not match the metadata \[N,17,16,12\]"):
        ModelFolder(folder)


def test_missing_required_pose_field(make_fake_models, tmp_path):
    folder = make_fake_models(fused=False)
    core = ov.Core()
    model = core.read_model(str(folder / "pose.xml"))
    # a new Model over the same graph starts with empty rt_info: write only part of the metadata
    model2 = ov.Model(model.get_results(), model.get_parameters(), "pose")
    from edge_runtime.model.metadata import write_metadata
    write_metadata(model2, {"kind": "pose", "scheme": "wholebody", "num_keypoints": 133})
    _replace_ir(model2, folder / "pose.xml", tmp_path)
    with pytest.raises(ModelFolderError, match=r"lacks field\(s\) \['input_width', 'input_height'"):
        ModelFolder(folder)


# ---------------------------------------------------------------- CompileOptions
def test_compile_options_defaults_and_config():
    opts = CompileOptions()
    assert (opts.device, opts.performance_hint, opts.num_streams, opts.inference_precision) == ("CPU", "THROUGHPUT", None, None)
    assert opts.cache_dir == "~/.cache/sdpose-edge"
    config = opts.to_ov_config()
    assert config[hints.performance_mode()] == hints.PerformanceMode.THROUGHPUT
    assert config[props.cache_dir()] == str(Path("~/.cache/sdpose-edge").expanduser() / "CPU")  # per device
    assert props.inference_num_threads() not in config


def test_compile_options_from_dict_all_fields():
    opts = CompileOptions.from_dict({"device": "AUTO:GPU,CPU", "performance-hint": "latency", "num_streams": 2,
                                     "inference_num_threads": 3, "inference_precision": "F32",
                                     "cache_dir": None, "num_requests": 4})
    assert opts.device == "AUTO:GPU,CPU" and opts.performance_hint == "LATENCY"
    config = opts.to_ov_config()
    assert config[hints.performance_mode()] == hints.PerformanceMode.LATENCY
    assert config[props.inference_num_threads()] == 3
    assert config[hints.inference_precision()] == ov.Type.f32
    assert props.cache_dir() not in config
    assert "NUM_STREAMS" in config


def test_compile_options_from_dict_keeps_base():
    base = CompileOptions(device="GPU", cache_dir=None)
    opts = CompileOptions.from_dict({"performance_hint": "LATENCY"}, base=base)
    assert (opts.device, opts.cache_dir, opts.performance_hint) == ("GPU", None, "LATENCY")


@pytest.mark.parametrize("data, message", [
    ({"devices": "CPU"}, "compile option 'devices' is unknown"),
    ({"performance_hint": "FAST"}, "performance_hint: expected one of"),
    ({"num_streams": 0}, "num_streams: expected a positive integer"),
    ({"num_streams": "two"}, "num_streams: expected a positive integer"),
    ({"inference_num_threads": True}, "inference_num_threads: expected a positive integer"),
    ({"num_requests": -1}, "num_requests: expected a positive integer"),
    ({"inference_precision": "int8"}, "inference_precision: expected one of"),
    ({"device": ""}, "device: expected a non-empty"),
    ({"cache_dir": 5}, "cache_dir: expected a directory path"),
])
def test_compile_options_validation(data, message):
    with pytest.raises(InputError, match=message):
        CompileOptions.from_dict(data)


def test_compile_options_from_dict_rejects_non_mapping():
    with pytest.raises(InputError, match="expected a mapping"):
        CompileOptions.from_dict(["CPU"])


def test_compile_model_applies_options(fake_models_dir):
    core = ov.Core()
    folder = ModelFolder(fake_models_dir, core=core)
    opts = CompileOptions(performance_hint="LATENCY", inference_precision="f32", cache_dir=None,
                          inference_num_threads=1)
    compiled = compile_model(core, folder.read_model("pose"), opts)
    assert compiled.get_property(hints.inference_precision()) == ov.Type.f32
    assert str(compiled.get_property(hints.performance_mode())) == "LATENCY"
    assert compiled.get_property(props.inference_num_threads()) == 1
    assert optimal_requests(compiled) >= 1
    assert optimal_requests(compiled, CompileOptions(num_requests=3, cache_dir=None)) == 3
    from_path = compile_model(core, folder.components["vae_encoder"], opts)
    assert from_path.input(0).get_any_name() == "image"


def test_compile_model_cache_dir(fake_models_dir, tmp_path):
    core = ov.Core()
    cache = tmp_path / "cache"
    compile_model(core, Path(fake_models_dir) / "pose.xml", CompileOptions(cache_dir=str(cache)))
    assert [p.name for p in cache.iterdir()] == ["CPU"] and any((cache / "CPU").iterdir())


def test_compile_model_unusable_cache_dir_falls_back(fake_models_dir, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    compiled = compile_model(ov.Core(), Path(fake_models_dir) / "pose.xml", CompileOptions(cache_dir=str(blocker / "cache")))
    assert compiled.output(0).get_any_name() == "heatmaps"
    assert "compiling without model caching" in caplog.text


def test_compile_model_errors(fake_models_dir, tmp_path):
    core = ov.Core()
    with pytest.raises(ModelFolderError, match="IR file does not exist"):
        compile_model(core, tmp_path / "nope.xml", CompileOptions(cache_dir=None))
    with pytest.raises(InputError, match="device 'NO_SUCH_DEVICE' could not compile"):
        compile_model(core, Path(fake_models_dir) / "pose.xml", CompileOptions(device="NO_SUCH_DEVICE", cache_dir=None))


def test_body_scheme_folder(fake_body_models_dir):
    meta = ModelFolder(fake_body_models_dir).pose_meta
    assert (meta["scheme"], meta["num_keypoints"]) == ("body", 17)


def test_pose_model_info_round_trip_and_errors():
    """The typed contract: to_rt_info -> from_rt_info is the identity; bad fields are named."""
    from edge_runtime.errors import ModelFolderError
    from edge_runtime.model.model_info import PoseModelInfo

    info = PoseModelInfo(kind="pose", scheme="wholebody", num_keypoints=133, input_height=512, input_width=384,
                         heatmap_height=128, heatmap_width=96, preset="fast", token_downsample=2,
                         token_downsample_levels=(0,), extra={"versions": {"openvino": "x"}})
    meta = info.to_rt_info()
    assert meta["preset"] == "fast" and meta["versions"] == {"openvino": "x"} and meta["token_downsample_levels"] == [0]
    back = PoseModelInfo.from_rt_info(meta, "pose.xml")
    assert back == info and back.input_size_wh == (384, 512) and back.blur_kernel_size == 11
    old = {k: v for k, v in meta.items() if k not in ("bbox_padding", "preset", "token_downsample", "codec")}
    legacy = PoseModelInfo.from_rt_info(old, "old.xml")  # folders from before these fields: defaults
    assert legacy.bbox_padding == 1.25 and legacy.preset is None and legacy.token_downsample == 1
    for change, message in ((dict(num_keypoints=18), "num_keypoints 18"), (dict(heatmap_width=0), "positive"),
                            (dict(codec={"type": "SimCC"}), "codec"), (dict(input_width="wide"), "not a number")):
        with pytest.raises(ModelFolderError, match=message):
            PoseModelInfo.from_rt_info({**meta, **change}, "pose.xml")
    with pytest.raises(ModelFolderError, match=r"pose.xml: .*lacks field\(s\) \['scheme'\]"):
        PoseModelInfo.from_rt_info({k: v for k, v in meta.items() if k != "scheme"}, "pose.xml")


def test_detector_model_info_round_trip_and_errors():
    from edge_runtime.errors import ModelFolderError
    from edge_runtime.model.model_info import DetectorModelInfo

    info = DetectorModelInfo(input_height=640, input_width=640, class_names=("person", "car"), person_class=0,
                             extra={"letterbox": {"center": True}, "num_anchors": 8400})
    meta = info.to_rt_info()
    assert meta["letterbox"] == {"center": True, "pad_value": 114} and meta["num_classes"] == 2
    assert DetectorModelInfo.from_rt_info(meta, "detector.xml") == info
    with pytest.raises(ModelFolderError, match="detector.xml: rt_info sdpose/kind is 'pose'"):
        DetectorModelInfo.from_rt_info({**meta, "kind": "pose"}, "detector.xml")
    with pytest.raises(ModelFolderError, match="person_class 5 is outside the 2 class names"):
        DetectorModelInfo.from_rt_info({**meta, "person_class": 5}, "detector.xml")


# ---------------------------------------------------------------- devices per model kind, static shapes
def test_device_cache_folders():
    from edge_runtime.model.models import device_cache_folder

    assert device_cache_folder("CPU") == "CPU"
    assert device_cache_folder("AUTO:GPU,CPU") == "AUTO_GPU_CPU"
    assert device_cache_folder("GPU.1") == "GPU.1"
    config = CompileOptions(device="GPU", cache_dir="/tmp/c").to_ov_config()
    assert config[props.cache_dir()] == str(Path("/tmp/c") / "GPU")


def test_model_device_overrides_device_per_kind(fake_models_dir, caplog):
    opts = CompileOptions(model_device={"pose": "NO_SUCH_DEVICE"}, cache_dir=None)
    assert opts.for_kind("pose").device == "NO_SUCH_DEVICE"
    assert opts.for_kind("vae_encoder").device == "CPU" and opts.for_kind(None).device == "CPU"
    core = ov.Core()
    folder = ModelFolder(fake_models_dir, core=core)
    assert compile_model(core, folder.read_model("vae_encoder"), opts).output(0).get_any_name() == "latent"
    with pytest.raises(InputError, match="device 'NO_SUCH_DEVICE' could not compile"):
        compile_model(core, folder.read_model("pose"), opts)  # the kind is read from the model's rt_info
    with pytest.raises(InputError, match="device 'NO_SUCH_DEVICE' could not compile"):
        compile_model(core, folder.ir_path("pose"), opts)  # from a path as well


@pytest.mark.parametrize("value, message", [
    ({"unet": "GPU"}, "unknown model kind 'unet'"),
    ({"pose": ""}, "pose: expected a non-empty OpenVINO device name"),
    (["pose"], "'pose' is not KIND=DEVICE"),
    ("pose:GPU", "'pose:GPU' is not KIND=DEVICE"),
    (5, "expected a mapping of model kind -> device"),
])
def test_model_device_errors(value, message):
    from edge_runtime.config import parse_model_device, validate

    with pytest.raises(InputError, match=message):
        parse_model_device(value)
    with pytest.raises(InputError, match="edge.yaml: 'model_device'"):
        validate({"model_device": value}, source="edge.yaml")
    with pytest.raises(InputError, match="model_device"):
        CompileOptions(model_device=value)


def test_model_device_from_yaml_and_command_line():
    from edge_runtime.config import merge, parse_model_device, validate

    assert parse_model_device(["pose=GPU", " detector = CPU "]) == {"pose": "GPU", "detector": "CPU"}
    yaml_settings = validate({"model_device": {"pose": "GPU", "vae_encoder": "NPU"}})
    cli = validate({"model_device": ["pose=AUTO:GPU,CPU"]}, source="command line")
    merged = merge(cli, yaml_settings)["model_device"]
    assert merged == {"pose": "AUTO:GPU,CPU", "vae_encoder": "NPU"}  # per kind: the command line wins


def test_static_batch_reshapes_before_compiling(fake_models_dir, caplog):
    """The static-shape path (what the NPU needs) on CPU: the dynamic batch becomes the configured batch,
    partial batches are padded, and the heatmaps equal the dynamic model's."""
    import logging

    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.models import fit_batch, static_batch_of

    caplog.set_level(logging.INFO)
    core = ov.Core()
    opts = CompileOptions(static_batch=True, batch=3, cache_dir=None, inference_precision="f32",
                          performance_hint="LATENCY")
    compiled = compile_model(core, Path(fake_models_dir) / "pose.xml", opts)
    assert static_batch_of(compiled) == 3 and "static batch of 3" in caplog.text
    assert static_batch_of(compile_model(core, Path(fake_models_dir) / "pose.xml", CompileOptions(cache_dir=None))) \
        is None
    assert fit_batch(np.ones((1, 2), np.float32), 3).tolist() == [[1, 1], [0, 0], [0, 0]]
    crops = np.random.default_rng(0).integers(0, 256, size=(2, 64, 48, 3), dtype=np.uint8)
    static = PoseEstimator(fake_models_dir, options=opts, core=core, max_batch=3).infer(crops)
    dynamic = PoseEstimator(fake_models_dir, options=dataclasses.replace(opts, static_batch=False), core=core,
                            max_batch=3).infer(crops)
    assert static.shape[0] == 2
    np.testing.assert_allclose(static, dynamic, rtol=1e-5, atol=1e-6)


class _StaticOnlyCore:
    """A core whose device refuses dynamic shapes (as the NPU does), compiling on the CPU otherwise."""

    def __init__(self):
        self.core = ov.Core()
        self.devices = []

    def compile_model(self, model, device, config):
        self.devices.append(device)
        if model.inputs[0].get_partial_shape().is_dynamic:
            raise RuntimeError("Exception from the plugin:\nthe device supports only static shapes")
        return self.core.compile_model(model, "CPU", config)

    def read_model(self, path):
        return self.core.read_model(path)


def test_device_refusing_dynamic_batch_gets_the_static_batch(fake_models_dir, caplog):
    from edge_runtime.model.models import static_batch_of

    core = _StaticOnlyCore()
    model = core.read_model(str(Path(fake_models_dir) / "vae_encoder.xml"))
    compiled = compile_model(core, model, CompileOptions(device="STATIC_ONLY", batch=2, cache_dir=None))
    assert static_batch_of(compiled) == 2 and core.devices == ["STATIC_ONLY", "STATIC_ONLY"]
    assert "refused the model with a dynamic batch (the device supports only static shapes)" in caplog.text
    assert model.inputs[0].get_partial_shape().is_dynamic  # the caller's model is untouched
