"""Benchmark suite (``sdpose-convert bench`` / ``sdpose-edge bench``): CI smoke test on tiny models and the
FLOP counters. No test asserts a speed: only that every figure is produced, consistent and well-formed."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_bench.peak import build_matmul_model, count_ir_flops, measure_peak
from edge_bench.report import write_report
from edge_bench.timing import Variant, analyse, run_interleaved

REPO = Path(__file__).resolve().parents[2]
VIDEO = REPO / "samples" / "people.mp4"
DETECTIONS = REPO / "samples" / "people_detections.json"
E2E_FRAMES = 2
DETECTOR_SIZE = 160


# ------------------------------------------------------------------------------------------------ IR FLOPs
def _ops():
    import openvino.opset13 as ops

    return ops


def test_count_ir_flops_counts_conv_matmul_attention_and_skips_constants() -> None:
    import openvino as ov

    ops = _ops()
    rng = np.random.default_rng(0)
    x = ops.parameter([-1, 3, 16, 12], np.float32, name="x")  # dynamic batch: counted at batch 1
    conv = ops.convolution(x, ops.constant(rng.standard_normal((8, 3, 3, 3)).astype(np.float32)),
                           [1, 1], [1, 1], [1, 1], [1, 1])                  # out [1,8,16,12]
    deconv = ops.convolution_backprop_data(conv, ops.constant(rng.standard_normal((8, 4, 4, 4)).astype(
        np.float32)), strides=[2, 2], pads_begin=[1, 1], pads_end=[1, 1], dilations=[1, 1])  # -> [1,4,32,24]
    flat = ops.reshape(conv, ops.constant(np.array([1, 8, 192], np.int64)), False)
    tokens = ops.transpose(flat, ops.constant(np.array([0, 2, 1], np.int64)))  # [1,192,8]
    mm = ops.matmul(tokens, ops.constant(rng.standard_normal((8, 16)).astype(np.float32)), False, False)
    q = ops.reshape(mm, ops.constant(np.array([1, 2, 192, 8], np.int64)), False)
    sdpa = ops.scaled_dot_product_attention(q, q, q, causal=False)
    # a MatMul of two constants is folded at compile time: not counted
    folded = ops.matmul(ops.constant(np.ones((4, 5), np.float32)), ops.constant(np.ones((5, 6), np.float32)),
                        False, False)
    model = ov.Model([ops.result(deconv), ops.result(sdpa), ops.result(folded)], [x])
    counted = count_ir_flops(model)
    expected = {
        "Convolution": 2 * (8 * 16 * 12) * 3 * 9,
        "ConvolutionBackpropData": 2 * (8 * 16 * 12) * 4 * 16,
        "MatMul": 2 * 192 * 16 * 8,
        "ScaledDotProductAttention": 2 * 2 * (2 * 192 * 192 * 8),
    }
    assert counted["by_op"] == expected
    assert counted["total"] == sum(expected.values())
    assert counted["uncounted"] == []


def test_matmul_peak_int8_runs_int8_kernels() -> None:
    model = build_matmul_model(64, 2, "int8")
    assert count_ir_flops(model)["total"] == 2 * 64 ** 3 * 2
    result = measure_peak("int8", size=128, depth=2, min_seconds=0.0, min_repeats=2)
    assert "i8" in result.executed_precision.split(","), result
    assert result.gflops > 0 and result.repeats >= 2
    assert result.flops_per_call == 2 * 128 ** 3 * 2
    f32 = measure_peak("f32", size=128, depth=1, min_seconds=0.0, min_repeats=1)
    assert f32.executed_precision == "f32"
    with pytest.raises(ValueError, match="precision"):
        build_matmul_model(64, 1, "int4")


def test_torch_flops_match_ir_flops(tiny_checkpoint_wholebody: Path,
                                    exported_models: Callable[..., Path]) -> None:
    """The torch-module count (convert/flops.py) and the IR count (edge_bench/peak.py) agree on tiny."""
    import openvino as ov

    from convert.flops import checkpoint_flops
    from tests.fixtures_export import TINY_INPUT_SIZE

    models = exported_models("wholebody")
    torch_counts = checkpoint_flops(tiny_checkpoint_wholebody, TINY_INPUT_SIZE)
    core = ov.Core()
    for kind in ("vae_encoder", "pose"):
        ir = count_ir_flops(core.read_model(str(models / f"{kind}.xml")))
        assert ir["uncounted"] == []
        assert ir["total"] > 0
        assert math.isclose(ir["total"], torch_counts[kind]["total"], rel_tol=0.01), (kind, ir, torch_counts[kind])
    # the original pipeline runs the text encoder and the whole UNet: more work than the truncated graph
    assert torch_counts["reference_pose"]["total"] > torch_counts["pose"]["total"]


# ------------------------------------------------------------------------------------------------ timing
def test_run_interleaved_visits_variants_in_turn() -> None:
    calls: list[str] = []

    built: list[tuple[str, dict]] = []

    def stage(label: str) -> Callable[[dict], Callable[[], str]]:
        def build(earlier: dict) -> Callable[[], str]:
            built.append((label, dict(earlier)))
            calls.append(f"build {label}")
            return lambda: calls.append(label) or f"out {label}"
        return build

    a = Variant("A", "openvino", "fp32", "f32", {"pose": stage("A.pose"), "vae_encoder": stage("A.vae")})
    b = Variant("B", "openvino", "int8", "f32", {"vae_encoder": stage("B.vae"), "pose": stage("B.pose")})
    times = run_interleaved([a, b], runs=2, warmup=1)
    # one stage at a time (in pipeline order), both variants built first, then A B A B A B
    assert calls == ["build A.vae", "build B.vae"] + ["A.vae", "B.vae"] * 3 + \
        ["build A.pose", "build B.pose"] + ["A.pose", "B.pose"] * 3
    # a later stage gets the variant's own last output of the earlier stages
    assert built[2] == ("A.pose", {"vae_encoder": "out A.vae"})
    assert built[3] == ("B.pose", {"vae_encoder": "out B.vae"})
    assert {k: {s: len(v) for s, v in per.items()} for k, per in times.items()} == \
        {"A": {"vae_encoder": 2, "pose": 2}, "B": {"vae_encoder": 2, "pose": 2}}
    assert set(a.info["build_s"]) == {"vae_encoder", "pose"}


def test_analyse_limits_and_speedups() -> None:
    base = Variant("base", "pytorch", "fp32", "f32", {}, flops={"pose": 4_000_000_000})
    fast = Variant("fast", "openvino", "int8", "bf16", {}, flops={"pose": 2_000_000_000},
                   int8_share={"pose": 0.5})
    times = {"base": {"pose": [4.0, 4.0, 5.0]}, "fast": {"pose": [1.0, 2.0, 1.0]}}
    peaks = {"f32": {"gflops": 100.0}, "bf16": {"gflops": 200.0}, "int8": {"gflops": 500.0}}
    res = analyse([base, fast], times, peaks, baseline="base")
    assert res["base"]["pose"]["median_ms"] == pytest.approx(4000.0)
    assert res["fast"]["pose"]["speedup"] == pytest.approx(4.0)
    assert res["base"]["pose"]["limit_ms"] == pytest.approx(40.0)            # 4 GFLOP / 100 GFLOP/s
    assert res["fast"]["pose"]["limit_ms"] == pytest.approx(5.0 + 2.0)       # 1 GFLOP bf16 + 1 GFLOP int8
    assert res["fast"]["pose"]["limit_fraction"] == pytest.approx(7.0 / 1000.0)
    assert res["fast"]["pose"]["p95_ms"] >= res["fast"]["pose"]["median_ms"]


# ------------------------------------------------------------------------------------------------ smoke test
@pytest.fixture(scope="module")
def bench_inputs(tiny_checkpoint_wholebody: Path, exported_models: Callable[..., Path],
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny checkpoint with a random YOLO, an FP32 model folder with a detector, and an INT8 copy
    (pose quantized with NNCF on a few latents)."""
    import openvino as ov

    from convert.detector import export_detector, make_synthetic_yolo
    from convert.quantize import quantize_component, save_component

    root = tmp_path_factory.mktemp("bench_inputs")
    ckpt = root / "ckpt"
    shutil.copytree(tiny_checkpoint_wholebody, ckpt)
    make_synthetic_yolo(ckpt / "yolo11n.pt")
    fp32 = root / "models_fp32"
    shutil.copytree(exported_models("wholebody"), fp32)
    export_detector(ckpt / "yolo11n.pt", fp32, imgsz=DETECTOR_SIZE)
    int8 = root / "models_int8"
    shutil.copytree(fp32, int8)
    core = ov.Core()
    vae = core.compile_model(core.read_model(str(fp32 / "vae_encoder.xml")), "CPU")
    rng = np.random.default_rng(0)
    shape = [d.get_length() for d in list(vae.input(0).get_partial_shape())[1:]]
    latents = [np.array(vae(rng.integers(0, 256, size=[1, *shape], dtype=np.uint8))[0]) for _ in range(2)]
    pose = quantize_component(core.read_model(str(fp32 / "pose.xml")), "pose", "int8", latents, subset_size=2)
    save_component(pose, int8 / "pose.xml", "int8")
    return {"ckpt": ckpt, "fp32": fp32, "int8": int8, "root": root}


@pytest.fixture(scope="module")
def convert_bench(bench_inputs: dict[str, Path]) -> dict:
    from convert.cli import main

    out = bench_inputs["root"] / "bench"
    code = main(["bench", "--checkpoint", str(bench_inputs["ckpt"]), "--models", str(bench_inputs["fp32"]),
                 "--models", str(bench_inputs["int8"]), "--runs", "2", "--warmup", "1", "--out", str(out),
                 "--video", str(VIDEO), "--detections", str(DETECTIONS), "--e2e-frames", str(E2E_FRAMES),
                 "--peak-size", "256"])
    assert code == 0
    return {"out": out, "report": json.loads((out / "bench.json").read_text())}


def test_bench_writes_every_stage_and_variant(convert_bench: dict) -> None:
    report = convert_bench["report"]
    results = report["results"]
    names = [v["name"] for v in report["variants"]]
    bf16 = ["openvino-fp32/bf16"] if report["machine"]["cpu"]["bf16"] else []
    assert names == ["pytorch-fp32", "openvino-fp32/f32", *bf16, "openvino-int8"]
    assert report["baseline"] == "pytorch-fp32"
    for name in names:
        stages = set(results[name])
        assert {"detector", "vae_encoder", "pose", "decode", "crop"} <= stages, (name, stages)
        for stage, st in results[name].items():
            assert st["runs"] == 2 and len(st["samples_ms"]) == 2
            assert 0 < st["median_ms"] <= st["p95_ms"] <= st["max_ms"]
            base = results["pytorch-fp32"].get(stage)
            if base is not None:
                assert st["speedup"] == pytest.approx(base["median_ms"] / st["median_ms"])
            if stage != "decode":
                assert st["flops"] > 0, (name, stage)
                assert st["limit_ms"] > 0 and st["limit_fraction"] > 0, (name, stage)
                assert st["limit_fraction"] == pytest.approx(st["limit_ms"] / st["median_ms"])
        crop = results[name]["crop"]
        parts = [results[name][s]["samples_ms"] for s in ("vae_encoder", "pose", "decode")]
        assert crop["samples_ms"] == pytest.approx([sum(x) for x in zip(*parts)], abs=1e-3)
    # the fused IR of the export is benched too
    assert "vae_pose" in results["openvino-fp32/f32"]
    hl = report["headline"]
    assert hl["baseline"] == "pytorch-fp32" and hl["best_variant"] in names[1:]
    assert hl["speedup"] == pytest.approx(hl["baseline_crop_median_ms"] / hl["best_crop_median_ms"])


def test_bench_precisions_flops_and_peaks(convert_bench: dict) -> None:
    report = convert_bench["report"]
    variants = {v["name"]: v for v in report["variants"]}
    assert variants["openvino-fp32/f32"]["compute_precision"] == "f32"
    # bf16 is asserted only where the CPU offers it (OPTIMIZATION_CAPABILITIES, no ISA cap); elsewhere the
    # bench must not print a "bf16" variant that really runs f32, and says why
    if report["machine"]["cpu"]["bf16"]:
        assert variants["openvino-fp32/bf16"]["compiled"]["pose"]["INFERENCE_PRECISION_HINT"] == "bf16"
        assert set(report["peaks"]) == {"f32", "bf16", "int8"}
    else:
        assert "openvino-fp32/bf16" not in variants
        assert any("bf16 is not supported on this CPU" in n for n in report["notes"])
        assert set(report["peaks"]) == {"f32", "int8"}
    assert variants["openvino-fp32/f32"]["compiled"]["pose"]["PERFORMANCE_HINT"] == "LATENCY"
    assert variants["openvino-int8"]["precision"] == "int8" and variants["openvino-int8"]["quantized"]
    # int8 pose: part of its FLOPs run in int8 kernels and are charged to the int8 peak
    int8_pose = report["results"]["openvino-int8"]["pose"]
    assert 0 < int8_pose["int8_flops_share"] <= 1
    assert "i8" in variants["openvino-int8"]["compiled"]["pose"]["executed_precisions"]
    assert report["results"]["openvino-fp32/f32"]["pose"]["int8_flops_share"] == 0
    assert all(p["gflops"] > 0 for p in report["peaks"].values())
    # torch count == IR count for the exported stages; the PyTorch variant is charged what it executes
    for name in ("openvino-fp32/f32", "openvino-int8"):
        ratios = variants[name]["flops_torch_vs_ir"]
        assert ratios["pose"] == pytest.approx(1.0, rel=0.01) and ratios["vae_encoder"] == pytest.approx(1.0, rel=0.01)
    assert report["results"]["pytorch-fp32"]["pose"]["flops"] == report["flops_torch"]["reference_pose"]
    assert report["machine"]["versions"]["openvino"]
    assert report["settings"]["input_size_hw"] == [256, 192]


def test_bench_end_to_end(convert_bench: dict) -> None:
    e2e = convert_bench["report"]["end_to_end"]
    assert e2e["variant"] in convert_bench["report"]["results"]
    persons_per_frame = len(json.loads(DETECTIONS.read_text())["0"])
    for key, mode in (("async", "async"), ("sync", "sync"), ("cold", "async")):
        run = e2e[key]
        assert run["mode"] == mode
        assert run["frames"] == E2E_FRAMES
        assert run["persons"] >= E2E_FRAMES  # every sample frame holds persons
        assert run["fps"] > 0 and run["persons_per_s"] > 0
        assert run["compile_s"] > 0 and run["time_to_first_result_s"] > 0
        assert run["max_rss_mb"] > 10
    assert e2e["async"]["persons"] == E2E_FRAMES * persons_per_frame
    assert e2e["async"]["performance_hint"] == "THROUGHPUT" and e2e["sync"]["performance_hint"] == "LATENCY"
    assert e2e["throughput_ratio"] == pytest.approx(e2e["async"]["fps"] / e2e["sync"]["fps"])


def test_bench_markdown_and_png(convert_bench: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = convert_bench["out"]
    md = (out / "bench.md").read_text()
    assert "**Headline:**" in md and "| pose | openvino-int8 |" in md and "## End to end" in md
    image = cv2.imread(str(out / "bench.png"))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert convert_bench["report"]["chart"] == "bench.png"
    # without matplotlib the chart is skipped and bench.md says so; json and md are still written
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report = dict(convert_bench["report"])
    write_report(report, tmp_path)
    assert not (tmp_path / "bench.png").exists()
    assert "matplotlib is not installed" in (tmp_path / "bench.md").read_text()
    assert json.loads((tmp_path / "bench.json").read_text())["chart"] is None


def test_bench_bad_arguments(bench_inputs: dict[str, Path], tmp_path: Path) -> None:
    from convert.cli import main

    common = ["bench", "--checkpoint", str(bench_inputs["ckpt"]), "--models", str(bench_inputs["fp32"]),
              "--out", str(tmp_path / "b")]
    assert main(common + ["--input-size", "512x384"]) == 2          # not the folder's static size
    assert main(common + ["--runs", "0"]) == 2
    assert main(common + ["--video", str(tmp_path / "missing.mp4")]) == 2
    assert main(["bench", "--checkpoint", str(tmp_path / "nope"), "--models", str(bench_inputs["fp32"]),
                 "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b" / "bench.json").exists()


def test_edge_bench_runs_without_torch_or_matplotlib(bench_inputs: dict[str, Path], tmp_path: Path) -> None:
    """``sdpose-edge bench`` in a process where torch and matplotlib cannot be imported."""
    out = tmp_path / "edge_bench"
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['matplotlib'] = None\n"
        "from edge_runtime.cli import main\n"
        f"rc = main(['bench', '--models', {str(bench_inputs['int8'])!r}, '--runs', '1', '--warmup', '0',\n"
        f"           '--out', {str(out)!r}, '--peak-size', '128', '--profile'])\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n"
        "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["openvino-int8"]
    assert report["baseline"] == "openvino-int8"
    assert report["results"]["openvino-int8"]["pose"]["flops"] > 0
    assert report["results"]["openvino-int8"]["crop"]["limit_fraction"] > 0
    assert "not run" in str(report["end_to_end"])
    assert "matplotlib is not installed" in (out / "bench.md").read_text()
    # the profile of the INT8 folder shows kernels that ran in int8 and their FLOPs
    rows = [r for sec in report["profile"].values() for r in sec["rows"]]
    assert {"vae_encoder", "pose"} <= set(report["profile"])
    assert any(r["exec_precision"] in ("i8", "u8") and r["gflops"] for r in rows)


# ------------------------------------------------------------------------------------------------ --profile
PROFILE_FIELDS = {"layer_type", "exec_precision", "time_ms", "share", "gflops"}


def test_exec_precision_and_flops_of_runtime_nodes() -> None:
    from edge_bench.profile import _runtime_flops, exec_precision_of

    assert exec_precision_of("jit_gemm_i8", "i8") == "i8"
    assert exec_precision_of("jit_avx2_f32", None) == "f32"
    assert exec_precision_of("brgconv_avx512_core_amx_bf16", "") == "bf16"
    assert exec_precision_of("undef", None) == "undef"
    # an IR node absorbed by two runtime nodes (attention decomposed into two MatMuls) counts half in each
    runtime = {"mm1": ("f32", ["sdpa"]), "mm2": ("f32", ["sdpa", "scale"]), "conv": ("i8", ["c", "c/Dequant"]),
               "softmax": ("f32", ["softmax"]), "dyn": ("f32", ["d"]),
               # an INT8 MatMul renamed by the low-precision transformations
               "fc": ("i8", ["m/DequantizationMultiply"])}
    flops = _runtime_flops(runtime, {"sdpa": 100, "c": 30, "d": None, "m": 8})
    assert flops == {"mm1": 50.0, "mm2": 50.0, "conv": 30.0, "softmax": None, "dyn": None, "fc": 8.0}


def test_bench_profile_rows_cover_the_profiled_time(make_fake_models: Callable[..., Path], tmp_path: Path) -> None:
    """``--profile`` on a torch-free folder: every component has rows with the contract's fields, shares sum
    to 1, the rows cover the profiled time and carry every FLOP the IR counts."""
    import openvino as ov

    from edge_bench.cli import run_benchmark

    folder = make_fake_models(slow_ops=1)
    run_benchmark([folder], tmp_path / "b", runs=2, warmup=1, skip_e2e=True, peak_size=64, profile=True)
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    profile = report["profile"]
    assert set(profile) == {"vae_encoder", "pose", "vae_pose"}
    core = ov.Core()
    for kind, sec in profile.items():
        rows = sec["rows"]
        assert rows and all(PROFILE_FIELDS <= set(r) for r in rows)
        assert math.isclose(sum(r["share"] for r in rows), 1.0, rel_tol=1e-6)
        assert math.isclose(sum(r["time_ms"] for r in rows), sec["profiled_ms"], rel_tol=1e-6)
        assert sec["profiled_ms"] > 0 and sec["wall_median_ms"] > 0
        assert len({(r["layer_type"], r["exec_precision"]) for r in rows}) == len(rows)
        ir_total = count_ir_flops(core.read_model(str(folder / f"{kind}.xml")))["total"]
        assert math.isclose(sum(r["gflops"] or 0 for r in rows) * 1e9, ir_total, rel_tol=1e-6)
        assert math.isclose(sec["gflops_mapped"], sec["gflops_ir"], rel_tol=1e-6)
        assert all(r["of_peak"] is None or r["of_peak"] > 0 for r in rows)
        top = sec["top_nodes"]
        assert 0 < len(top) <= 10 and [n["time_ms"] for n in top] == sorted((n["time_ms"] for n in top), reverse=True)
        reorder_rows = sum(r["time_ms"] for r in rows if r["layer_type"] in ("Reorder", "Convert"))
        assert math.isclose(sec["reorders_converts"]["time_ms"], reorder_rows, rel_tol=1e-6, abs_tol=1e-9)
    assert any(r["layer_type"] in ("FullyConnected", "MatMul") and r["gflops"] for r in profile["pose"]["rows"])
    markdown = (tmp_path / "b" / "bench.md").read_text()
    assert "## Per-layer profile" in markdown and "Reorders and converts" in markdown


def test_rotated_rounds_visits_each_call_once_per_round_starting_one_later() -> None:
    from edge_bench.timing import rotated_rounds

    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    times = rotated_rounds(calls, 4)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for series in times.values() for t in series)
