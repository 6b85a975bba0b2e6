"""``edge_runtime.model.cpu``: the CPU's INT8 path (VNNI or 16-bit saturating sums), bf16 support, the ISA cap.

The capped checks run in a subprocess with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE``: on every x86 CPU (AMX, AVX-512
with or without VNNI, AVX2-only) that cap leaves INT8 kernels without VNNI, so the accumulation check must
show the 16-bit saturation. If a later OpenVINO ignored the cap, this test fails instead of the conversion
report silently showing the VNNI path twice.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.model.cpu import (CpuInfo, cpu_info, int8_accumulation_ratio, overflow_warning, read_cpu_flags,
                              precision_hint_reason, recommended_precision_hint)

SATURATED = 32767 / 64770  # one pair of u8 255 x s8 127 products, clamped to int16
ROOT = Path(__file__).resolve().parents[2]


def _run_capped(code: str, cap: str = "AVX512_CORE") -> dict:
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA=cap, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_capped_cpu_computes_int8_with_16_bit_saturating_sums():
    got = _run_capped("import json; from edge_runtime.model.cpu import cpu_info, int8_accumulation_ratio; "
                      "print(json.dumps({'check': int8_accumulation_ratio(), 'cpu': cpu_info().to_dict()}))")
    assert got["check"]["ratio"] == pytest.approx(SATURATED, abs=0.01)
    assert got["cpu"]["int8_path"] == "no_vnni" and got["cpu"]["isa_cap"] == "AVX512_CORE"
    assert got["cpu"]["bf16"] is False  # bf16 kernels are capped away even where cpuid has them


def test_native_int8_path_matches_the_arithmetic():
    """With VNNI/AMX the sums are exact; without (AVX2-only CPUs), the same saturation as under the cap."""
    info = cpu_info()
    ratio = int8_accumulation_ratio()["ratio"]
    if info.int8_path == "vnni":
        assert ratio == pytest.approx(1.0, abs=1e-4)
    elif info.int8_path == "no_vnni":
        assert ratio == pytest.approx(SATURATED, abs=0.01)
    assert info.bf16 == ("BF16" in info.capabilities and not info.isa_cap)


@pytest.mark.parametrize("flags, cap, path, isa", [
    ("fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8", None, "vnni", "AMX"),
    ("fpu avx2 avx512f avx512_vnni avx512_bf16", None, "vnni", "AVX512-VNNI"),
    ("fpu avx2 avx_vnni", None, "vnni", "AVX-VNNI"),
    ("fpu sse4_2 avx2 fma", None, "no_vnni", "none: no VNNI"),
    ("fpu avx2 avx512f avx512_vnni avx512_bf16 amx_int8", "AVX512_CORE", "no_vnni", "none: ONEDNN_MAX_CPU_ISA"),
])
def test_int8_path_from_cpuid_flags_and_cap(tmp_path, monkeypatch, flags, cap, path, isa):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    if cap:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    else:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    info = cpu_info(cpuinfo=cpuinfo)
    assert (info.int8_path, info.isa_cap) == (path, cap)
    assert info.int8_isa.startswith(isa)
    assert set(info.flags) <= set(flags.split())


def test_cpu_info_round_trips_through_its_dict():
    info = cpu_info()
    assert CpuInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_unreadable_cpuinfo_gives_unknown(tmp_path, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert read_cpu_flags(tmp_path / "missing") is None
    assert cpu_info(cpuinfo=tmp_path / "missing").int8_path == "unknown"


def _info(path: str) -> CpuInfo:
    return CpuInfo(name="x", flags=(), capabilities=(), isa_cap=None, int8_path=path, int8_isa="none", bf16=False)


def test_per_isa_precision_hint():
    """INT8 folders: f32 float ops on bf16 CPUs without AMX (measured faster on Zen 4), the device default
    with AMX or without bf16; FP32 folders always the device default."""
    def info(flags, bf16):
        return CpuInfo(name="x", flags=flags, capabilities=("BF16",) if bf16 else (), isa_cap=None,
                       int8_path="vnni", int8_isa="x", bf16=bf16)

    assert recommended_precision_hint(info(("avx512_vnni", "avx512_bf16"), True), True) == "f32"
    assert recommended_precision_hint(info(("avx512_vnni", "avx512_bf16", "amx_bf16"), True), True) is None
    assert recommended_precision_hint(info(("avx2",), False), True) is None
    assert recommended_precision_hint(info(("avx512_vnni", "avx512_bf16"), True), False) is None


def test_per_isa_precision_hint_under_an_isa_cap():
    """A cap that takes bf16 kernels away while OpenVINO still offers BF16 (it follows cpuid) -> f32 for every
    folder (the device default would run bf16 on reference kernels); a cap below AMX counts as no AMX; the
    reason names the cap."""
    def capped(cap, bf16):
        return CpuInfo(name="x", flags=("avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"),
                       capabilities=("BF16", "INT8"), isa_cap=cap, int8_path="vnni", int8_isa="x", bf16=bf16)

    for quantized in (True, False):
        assert recommended_precision_hint(capped("AVX512_CORE_VNNI", False), quantized) == "f32"
    assert "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI" in precision_hint_reason(capped("AVX512_CORE_VNNI", False))
    assert recommended_precision_hint(capped("AVX512_CORE_BF16", True), True) == "f32"  # bf16 without AMX
    assert precision_hint_reason(capped("AVX512_CORE_BF16", True)) == "INT8 on bf16 without AMX"
    assert recommended_precision_hint(capped("AVX512_CORE_AMX", True), True) is None
    assert recommended_precision_hint(capped(None, True), True) is None
    assert recommended_precision_hint(capped("AVX512_CORE_BF16", True), False) is None


def test_overflow_warning_only_for_int8_activations_without_the_fix_on_no_vnni():
    int8 = {"quantized": True, "precision": "int8"}
    assert "--overflow-fix enable" in overflow_warning({**int8, "overflow_fix": "first_layer"}, _info("no_vnni"), "m")
    assert "no overflow fix recorded" in overflow_warning(int8, _info("no_vnni"), "m")
    assert overflow_warning({**int8, "overflow_fix": "enable"}, _info("no_vnni"), "m") is None
    assert overflow_warning({**int8, "overflow_fix": "first_layer"}, _info("vnni"), "m") is None
    assert overflow_warning({"quantized": True, "precision": "int8_weights"}, _info("no_vnni"), "m") is None
    assert overflow_warning({"quantized": False, "precision": "fp32"}, _info("no_vnni"), "m") is None


def test_capped_run_picks_f32_where_openvino_still_offers_bf16():
    """Under the no-VNNI cap, the hint a run gets when the user sets none: f32 where OpenVINO's capabilities list
    BF16 (cpuid has it, the capped kernels do not), else the device default (a CPU without bf16)."""
    got = _run_capped("import json; from edge_runtime.model.cpu import cpu_info; "
                      "from edge_runtime.model.models import CompileOptions; "
                      "from edge_runtime.settings.compile import per_isa_options; "
                      "options, source = per_isa_options(CompileOptions(), '.', quantized=False); "
                      "print(json.dumps({'hint': options.inference_precision, 'source': source, "
                      "'caps': list(cpu_info().capabilities)}))")
    if "BF16" in got["caps"]:
        assert got["hint"] == "f32" and "ONEDNN_MAX_CPU_ISA=AVX512_CORE" in got["source"]
    else:
        assert got["hint"] is None and got["source"] == "device default"


def test_static_batch_default_per_cpu(monkeypatch):
    """``static_batch`` unset: static on CPUs with AVX-512 kernels with batch 1 (measured faster there), dynamic
    on AVX2, under a cap below AVX-512, with a larger batch (no padding), or off the CPU; a user's value stays."""
    from edge_runtime.model.cpu import recommended_static_batch
    from edge_runtime.model.models import CompileOptions
    from edge_runtime.settings import compile as compile_settings

    def info(flags, cap=None):
        return CpuInfo(name="x", flags=flags, capabilities=(), isa_cap=cap, int8_path="vnni", int8_isa="x", bf16=False)

    avx512 = info(("avx2", "avx512f", "avx512_vnni"))
    assert recommended_static_batch(avx512, 1) is True
    assert recommended_static_batch(avx512, 4) is False
    assert recommended_static_batch(info(("avx2",)), 1) is False
    assert recommended_static_batch(info(("avx2", "avx512f"), cap="AVX2"), 1) is False
    monkeypatch.setattr(compile_settings, "cpu_info", lambda: avx512)
    resolve = compile_settings._static_batch_default
    assert resolve(CompileOptions(cache_dir=None)).static_batch is True
    assert resolve(CompileOptions(cache_dir=None, batch=2)).static_batch is False
    assert resolve(CompileOptions(cache_dir=None, device="GPU")).static_batch is False
    assert resolve(CompileOptions(cache_dir=None, static_batch=False)).static_batch is False
    assert CompileOptions(cache_dir=None).static_batch is None  # the library default: dynamic, undecided
