"""The report's two INT8 paths: fidelity and speed as this CPU computes INT8, and as a CPU without VNNI does.

Without VNNI (AVX512-VNNI / AVX-VNNI) or AMX, OpenVINO's INT8 kernels add each pair of u8 x s8 products in
a saturating 16-bit sum, so a folder quantized on a workstation can lose fidelity on an edge box. The only
way to see it is to run the model both ways (OpenVINO's POT saturation note). Where this CPU has VNNI, the
second run happens here, in a child ``sdpose-convert validate`` process with
``ONEDNN_MAX_CPU_ISA=AVX512_CORE``, which caps the CPU plugin below VNNI (and below bf16, so the child times
the f32 hint only). The child first runs :func:`edge_runtime.model.cpu.int8_accumulation_ratio`: if a later
OpenVINO ignored the cap, the row says so instead of silently repeating the VNNI path. Where this CPU has no
VNNI, its own run *is* the no-VNNI path and the VNNI row cannot be measured here.

The capped speed stands in for AVX-512 CPUs without VNNI (Skylake-SP), not for AVX2-only CPUs, which have
half the vector width.
"""
from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_runtime.running.child import run_in_fresh_process
from edge_runtime.model.cpu import EMULATE_NO_VNNI_CAP, CpuInfo
from edge_runtime.errors import SDPoseError

logger = logging.getLogger(__name__)

#: precision modes with INT8 activations (the ones the 16-bit saturation can hit)
INT8_ACTIVATION_MODES = frozenset({"int8", "hybrid"})
#: a measured accumulation ratio below this means the 16-bit saturating path really ran (0.506 expected)
SATURATION_RATIO_MAX = 0.9
#: seconds the capped child may take (full-size folders: a few minutes)
CHILD_TIMEOUT_S = 4 * 3600


def uses_int8_activations(metas: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when any component of the folder was quantized with INT8 activations."""
    return any(m.get("quantized") and m.get("precision") in INT8_ACTIVATION_MODES for m in metas.values())


def path_row(report: Mapping[str, Any], info: CpuInfo, *, emulated: bool = False,
             accumulation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One row of the two-path table from a validate report measured on ``info``."""
    fid = report.get("fidelity") or {}
    e2e = fid.get("end_to_end") or {}
    comps = report.get("components") or {}
    row: dict[str, Any] = {
        "int8_path": info.int8_path, "int8_isa": info.int8_isa, "cpu": info.name, "isa_cap": info.isa_cap,
        "emulated": emulated,
        "end_to_end_heatmap_cosine": e2e.get("heatmap_cosine"),
        "end_to_end_keypoint_displacement": e2e.get("keypoint_displacement"),
        "vae_encoder_latent_cosine": ((comps.get("vae_encoder") or {}).get("fidelity") or {}).get("latent_cosine"),
        "pose_heatmap_cosine": ((comps.get("pose") or {}).get("fidelity") or {}).get("heatmap_cosine"),
        "latency_ms_f32_hint": {k: {"model": (c.get("latency_ms") or {}).get("f32"),
                                    "fp32_reference": (c.get("reference_latency_ms") or {}).get("f32")}
                                for k, c in comps.items() if c.get("latency_ms")},
    }
    if accumulation is not None:
        row["accumulation_check"] = dict(accumulation)
    return row


def run_capped_child(models: Path, reference: Path, calib: str | Path, held_out: int,
                     latency_runs: int) -> dict[str, Any]:
    """``sdpose-convert validate`` in a subprocess under ``ONEDNN_MAX_CPU_ISA=AVX512_CORE``; its report."""
    with tempfile.TemporaryDirectory(prefix="sdpose-novnni-") as tmp:
        out = Path(tmp) / "report.json"
        argv = ["validate", str(models), "--reference", str(reference), "--calib", str(calib), "--held-out",
                str(held_out), "--latency-runs", str(latency_runs), "--latency-hints", "f32", "--no-int8-paths",
                "--no-write", "--json-out", str(out)]
        logger.info("INT8 without VNNI: sdpose-convert %s with ONEDNN_MAX_CPU_ISA=%s", " ".join(argv),
                    EMULATE_NO_VNNI_CAP)
        code = run_in_fresh_process(_convert_main, argv, env={"ONEDNN_MAX_CPU_ISA": EMULATE_NO_VNNI_CAP},
                                    timeout_s=CHILD_TIMEOUT_S, what="the no-VNNI validation child")
        if code != 0 or not out.is_file():
            raise SDPoseError(f"the no-VNNI validation child failed (exit {code}; its log is above)")
        return json.loads(out.read_text(encoding="utf-8"))


def _convert_main(argv: list[str]) -> int:
    """``sdpose-convert ARGV`` in the child process (module level, so the spawned process can import it)."""
    from convert.cli import main

    return main(argv)


def measure_paths(report: dict[str, Any], info: CpuInfo, models: Path, reference: Path, calib: str | Path,
                  held_out: int, latency_runs: int) -> dict[str, Any]:
    """The report's ``int8_paths`` section: {"this_cpu": row, "no_vnni" | "vnni": row or status}."""
    here = path_row(report, info, accumulation=report.get("accumulation_check"))
    paths: dict[str, Any] = {"this_cpu": here}
    if info.int8_path == "no_vnni":
        paths["vnni"] = {"status": f"this CPU ({info.int8_isa}) has no VNNI or AMX: its own row above is the "
                                   "no-VNNI path, and the VNNI row can't be measured here"}
        return paths
    if info.int8_path != "vnni":
        paths["no_vnni"] = {"status": "the CPU's INT8 path is unknown (no /proc/cpuinfo): not emulated"}
        return paths
    try:
        child = run_capped_child(models, reference, calib, held_out, latency_runs)
    except (SDPoseError, subprocess.SubprocessError, OSError, ValueError) as exc:
        logger.error("INT8 without VNNI could not be measured: %s", exc)
        paths["no_vnni"] = {"status": f"failed: {exc}"}
        return paths
    acc = child.get("accumulation_check") or {}
    row = path_row(child, CpuInfo.from_dict(child["cpu"]), emulated=True, accumulation=acc)
    ratio = acc.get("ratio")
    if ratio is None or ratio >= SATURATION_RATIO_MAX:
        row["status"] = (f"ONEDNN_MAX_CPU_ISA={EMULATE_NO_VNNI_CAP} did not take effect (INT8 accumulation "
                         f"ratio {ratio}, expected ~0.506): this row is NOT the no-VNNI path")
    row["stands_in_for"] = "AVX-512 CPUs without VNNI (Skylake-SP); AVX2-only CPUs have the same INT8 " \
                           "arithmetic but half the vector width, so their speed is lower"
    paths["no_vnni"] = row
    return paths


def _cos(entry: Any) -> str:
    if not isinstance(entry, Mapping) or entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.5f}" + (f" (min {entry['min']:.5f})" if entry.get("min") is not None else "")


def render_markdown(paths: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the two-path table."""
    lines = ["", "## INT8 with and without VNNI", "",
             "| INT8 path | ISA | end-to-end heatmap cosine | VAE latent cosine | pose heatmap cosine | "
             "kp median / p95 px | latency ms, f32 hint (FP32 IR) | accumulation check |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for key, row in paths.items():
        if "int8_path" not in row:
            notes.append(f"- {key}: {row.get('status')}")
            continue
        kd = row.get("end_to_end_keypoint_displacement") or {}
        kp = f"{kd['median_px']:.3f} / {kd['p95_px']:.3f}" if kd.get("median_px") is not None else "-"
        lat = "; ".join(f"{k} {v['model']:.0f}" + (f" ({v['fp32_reference']:.0f})" if v.get("fp32_reference") else "")
                        for k, v in (row.get("latency_ms_f32_hint") or {}).items() if v.get("model") is not None)
        ratio = (row.get("accumulation_check") or {}).get("ratio")
        label = row["int8_path"] + (f" (emulated: ONEDNN_MAX_CPU_ISA={row.get('isa_cap')})" if row.get("emulated")
                                    else " (this CPU)")
        lines.append(f"| {label} | {row['int8_isa']} | {_cos(row.get('end_to_end_heatmap_cosine'))} | "
                     f"{_cos(row.get('vae_encoder_latent_cosine'))} | {_cos(row.get('pose_heatmap_cosine'))} | "
                     f"{kp} | {lat or '-'} | {'-' if ratio is None else f'{ratio:.3f}'} |")
        if row.get("status"):
            notes.append(f"- {key}: {row['status']}")
        if row.get("stands_in_for"):
            notes.append(f"- the emulated row's speed stands in for {row['stands_in_for']}")
    return lines + [""] + notes if notes else lines
