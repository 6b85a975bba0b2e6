"""INT8 on every CPU with a converted folder (the converted_int8 fixture): the runtime names its INT8 path, warns
once for a folder without the overflow fix under the no-VNNI cap, and the fix makes both paths compute alike."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge_runtime.model.cpu import cpu_info, recommended_precision_hint

from tests.runtime.test_cpu import ROOT, _run_capped


def _edited_folder(src: Path, dst: Path, edit: Any) -> Path:
    """A copy of an INT8 model folder whose VAE encoder and pose IRs went through ``edit(model)``."""
    import shutil

    import openvino as ov

    shutil.copytree(src, dst)
    core = ov.Core()
    for xml in ("vae_encoder.xml", "pose.xml"):
        model = core.read_model(str(src / xml))
        edit(model)
        ov.save_model(model, str(dst / xml), compress_to_fp16=False)
    return dst


def _folder_without_overflow_fix(src: Path, dst: Path) -> Path:
    """A copy of an INT8 model folder whose rt_info says it was quantized with NNCF's default fix only."""
    from edge_runtime.model.metadata import read_metadata, write_metadata

    def first_layer_only(model: Any) -> None:
        assert read_metadata(model)["overflow_fix"] == "enable"
        write_metadata(model, {"overflow_fix": "first_layer"})

    return _edited_folder(src, dst, first_layer_only)


def test_runtime_names_its_int8_path_and_warns_once_without_the_fix(converted_int8, tmp_path):
    """summary.json records the CPU's INT8 path and the precision read back from the compiled models; under
    the no-VNNI cap, a folder quantized without the overflow fix gets one warning naming the flag."""
    from tests.runtime.test_run_cli import write_people_images

    out, _, _ = converted_int8
    dets = write_people_images(tmp_path / "imgs", 2)
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    folder = _folder_without_overflow_fix(out, tmp_path / "models_first_layer")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX512_CORE", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "run", "--models", str(folder), "--source",
         str(tmp_path / "imgs"), "--detections", str(tmp_path / "dets.json"), "--output", str(tmp_path / "out"),
         "--no-cache", "--no-progress", "--precision-hint", "f32"],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert log.count("running on a CPU without VNNI") == 1 and "--overflow-fix enable" in log
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cpu"]["int8_path"] == "no_vnni" and summary["cpu"]["isa_cap"] == "AVX512_CORE"
    assert summary["precision"]["pose"]["inference_precision"] == "f32"
    assert summary["precision"]["pose"]["executed"]  # the kernels' runtime precisions, read back
    # the folder as converted (overflow fix on every layer) runs without the warning, natively
    from edge_runtime.cli import main

    assert main(["run", "--models", str(out), "--source", str(tmp_path / "imgs"), "--detections",
                 str(tmp_path / "dets.json"), "--output", str(tmp_path / "out2"), "--no-cache", "--no-progress"]) == 0
    native = json.loads((tmp_path / "out2" / "summary.json").read_text())
    info = cpu_info()
    assert native["cpu"]["int8_path"] == info.int8_path
    # read back from the compiled model, never null: the per-ISA choice for an INT8 folder, else the device's
    expected = recommended_precision_hint(info, True) or ("bf16" if info.bf16 else "f32")
    assert native["precision"]["pose"]["inference_precision"] == expected
    assert native["precision_hint_source"] in ("device default", "per-ISA default (INT8 on bf16 without AMX)")


def _folder_with_float_keys(src: Path, dst: Path) -> Path:
    """A copy of an INT8 model folder with every attention key's FakeQuantize removed: what the runtime does
    without VNNI (where quantized keys do not fuse), so that both INT8 paths run the same attention."""
    from edge_runtime.model.attention import dequantize_attention_keys

    return _edited_folder(src, dst, dequantize_attention_keys)


def test_overflow_fix_makes_both_int8_paths_compute_the_same(converted_int8, tmp_path):
    """With overflow_fix=enable every INT8 weight has 7 bits, so a pair of u8 x s7 products sums to at most
    2 x 255 x 63 = 32130 < 32767: the 16-bit path cannot saturate and yields the VNNI path's integers. The
    folder's heatmaps under the no-VNNI cap therefore equal those of the VNNI path up to float rounding of the
    float post-ops (on a CPU without VNNI both runs are the same path).

    The VNNI path is taken under the ``AVX512_CORE_VNNI`` cap, not natively: AMX kernels run the convolutions
    on signed i8 activations, a different rounding of the same quantizers (not the 16-bit question). Both runs
    keep the matrix products INT8 and use the same attention (keys in float, as the runtime compiles them
    without VNNI)."""
    out, _, _ = converted_int8
    folder = _folder_with_float_keys(out, tmp_path / "models_float_keys")
    code = ("import json, numpy as np; from edge_runtime.model.estimator import PoseEstimator; "
            "from edge_runtime.model.models import CompileOptions; "
            "rng = np.random.default_rng(0); image = rng.integers(0, 255, (120, 90, 3), dtype=np.uint8); "
            f"est = PoseEstimator({str(folder)!r}, options=CompileOptions(inference_precision='f32', "
            "cache_dir=None, int8_matmuls='int8')); "
            "hm = est.infer(est.preprocess(image, np.array([[10, 5, 70, 110]], np.float32))); "
            "print(json.dumps(hm.ravel().tolist()))")
    import numpy as np

    no_vnni = np.array(_run_capped(code))
    vnni = np.array(_run_capped(code, cap="AVX512_CORE_VNNI"))
    assert no_vnni.shape == vnni.shape and np.abs(vnni).max() > 0
    assert np.abs(no_vnni - vnni).max() <= 1e-3 * np.abs(vnni).max()


_FUSION_CODE = """
import json, openvino as ov
from edge_runtime.model.attention import attention_fusion
from edge_runtime.model.models import CompileOptions, compile_model
core = ov.Core(); folder = {folder!r}; out = {{}}
for kind in ("vae_encoder", "pose"):
    model = core.read_model(folder + "/" + kind + ".xml")
    as_read = attention_fusion(model, core.compile_model(model, "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}}))
    model = core.read_model(folder + "/" + kind + ".xml")
    fq = lambda: sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    before = fq()
    compiled = compile_model(core, model, CompileOptions(inference_precision="f32", cache_dir=None))
    out[kind] = {{"as_read": as_read.to_dict(), "runtime": attention_fusion(model, compiled, before - fq()).to_dict()}}
from edge_runtime.model.cpu import cpu_info
print(json.dumps({{"avx512": cpu_info().avx512, **out}}))
"""


def test_every_attention_of_the_int8_folder_runs_fused(converted_int8):
    """The runtime's compile path runs every attention of the default INT8 folder fused, on AVX2 kernels
    (ONEDNN_MAX_CPU_ISA=AVX2, where quantized self-attention keys break the fusion) and on what this CPU has.
    Where the cap cannot compile, the native run still has to fuse everything."""
    out, _, _ = converted_int8
    code = _FUSION_CODE.format(folder=str(out))
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", PYTHONPATH=str(ROOT))
    capped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                            check=False)
    native_env = dict(os.environ, PYTHONPATH=str(ROOT))
    native_env.pop("ONEDNN_MAX_CPU_ISA", None)
    native = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=native_env,
                            timeout=600, check=False)
    assert native.returncode == 0, native.stderr[-2000:]
    runs = [json.loads(native.stdout.strip().splitlines()[-1])]
    if capped.returncode == 0:
        runs.append(json.loads(capped.stdout.strip().splitlines()[-1]))
    for run in runs:
        assert run["pose"]["runtime"]["attention_ops"] > 0 and run["vae_encoder"]["runtime"]["attention_ops"] == 1
        for kind, res in ((k, run[k]) for k in ("vae_encoder", "pose")):
            fused = res["runtime"]
            assert fused["unfused_softmax"] == 0 and fused["fused"] >= fused["attention_ops"], (kind, res)
            # the keys lose their FakeQuantize where the graph as read did not fuse (and, up front, on every CPU
            # without AVX-512 kernels); a CPU that fuses them as read keeps them
            if res["as_read"]["unfused_softmax"] > 0 or not run["avx512"]:
                assert fused["keys_dequantized"] > 0, (kind, res)
            else:
                assert fused["keys_dequantized"] == 0, (kind, res)
