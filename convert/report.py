"""The conversion / fidelity report of a model folder: ``report.json`` (the dict :mod:`convert.validate` builds)
and its human-readable ``report.md``. ``validate --against`` (:mod:`convert.variant_check`) adds its section to
the same files.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from convert import int8_paths as paths_mod
from convert.fidelity import BASELINE_HINT, FIDELITY_HINT

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_VERSION = 1


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _peak(entry: dict[str, Any]) -> str:
    """Peak RSS of a conversion stage: GB (GiB); reports before issue 28 have no GiB (their GB were GiB)."""
    gb, gib = entry.get("peak_rss_gb"), entry.get("peak_rss_gib")
    return _fmt(gb, 2) + (f" ({_fmt(gib, 2)})" if gib is not None else "")


def render_markdown(report: dict[str, Any]) -> str:
    """Human-readable report.md from the report dict."""
    lines = _md_head(report) + _md_components(report) + _md_end_to_end(report) + _md_detector(report)
    return "\n".join(lines) + "\n"


def _md_head(report: dict[str, Any]) -> list[str]:
    """Title and what was measured how: reference, chain, CPU, hints, held-out crops, notes."""
    lines = [f"# Conversion report: {report['models']}", ""]
    lines.append(f"- reference: {report.get('reference') or 'none (fidelity not measured)'}")
    lines.append(f"- chain: {report.get('chain')}; OpenVINO {report.get('openvino')}")
    comp = report.get("compile", {})
    cpu = report.get("cpu") or {}
    if cpu:
        lines.append(f"- CPU: {cpu.get('name')}; INT8 path {cpu.get('int8_path')} ({cpu.get('int8_isa')}); bf16 "
                     f"{'yes' if cpu.get('bf16') else 'no'}; OPTIMIZATION_CAPABILITIES "
                     f"{', '.join(cpu.get('capabilities') or [])}"
                     + (f"; capped by ONEDNN_MAX_CPU_ISA={cpu['isa_cap']}" if cpu.get("isa_cap") else ""))
    lines.append(f"- fidelity compiled with INFERENCE_PRECISION_HINT={comp.get('fidelity_hint')}; latency: "
                 f"median of {comp.get('latency_runs')} batch-1 runs, LATENCY hint, precision hints "
                 f"{', '.join(comp.get('latency_hints', []))}")
    for hint, why in (comp.get("unsupported_hints") or {}).items():
        lines.append(f"- {hint} hint: {why}")
    held = report.get("held_out") or {}
    if held:
        lines.append(f"- held-out: {held.get('held_out_crops')} of {held.get('crops_total')} crops of calibration "
                     f"set '{held.get('name')}' ({held.get('split')})")
    for note in report.get("notes", []):
        lines.append(f"- note: {note}")
    return lines


def _md_components(report: dict[str, Any]) -> list[str]:
    """The per-component table: precision, size, latency by hint, fidelity."""
    lines: list[str] = []
    lines += ["", "## Components", "",
              "| component | precision | size MB (FP32) | latency ms by hint (FP32 ref) | fidelity |",
              "|---|---|---|---|---|"]
    for kind, c in report.get("components", {}).items():
        lat = ", ".join(f"{h}: {v:.1f}" for h, v in (c.get("latency_ms") or {}).items()) or "-"
        ref_lat = ", ".join(f"{h}: {v:.1f}" for h, v in (c.get("reference_latency_ms") or {}).items())
        fid = c.get("fidelity") or {}
        if "latent_cosine" in fid:
            fid_s = f"latent cosine mean {_fmt(fid['latent_cosine'].get('mean'), 5)}"
        elif "heatmap_cosine" in fid:
            kd = fid.get("keypoint_displacement", {})
            fid_s = (f"heatmap cosine mean {_fmt(fid['heatmap_cosine'].get('mean'), 5)}; kp mean "
                     f"{_fmt(kd.get('mean_px'), 2)} px, p95 {_fmt(kd.get('p95_px'), 2)} px, within 1 hm px "
                     f"{_fmt(kd.get('within_1_heatmap_px'), 3)}")
        elif "raw_output_cosine" in fid:
            fid_s = (f"score cosine mean {_fmt(fid['score_cosine'].get('mean'), 5)}; box IoU mean "
                     f"{_fmt(fid.get('box_iou_mean'), 3)} over {fid.get('reference_boxes')} FP32 boxes, top-"
                     f"{fid.get('top_k')} IoU {_fmt(fid.get('top_k_box_iou_mean'), 3)}")
        else:
            fid_s = "-"
        size = f"{c.get('size_mb', 0):.1f}"
        if c.get("reference_size_mb") is not None:
            size += f" ({c['reference_size_mb']:.1f})"
        lines.append(f"| {kind} | {c.get('precision')} | {size} | {lat}" + (f" ({ref_lat})" if ref_lat else "")
                     + f" | {fid_s} |")
    return lines


def _md_end_to_end(report: dict[str, Any]) -> list[str]:
    """End-to-end fidelity vs FP32 (and the bf16 baseline)."""
    lines: list[str] = []
    fid = report.get("fidelity") or {}
    e2e = fid.get("end_to_end")
    lines += ["", "## End to end (crop -> heatmaps -> keypoints, vs FP32)", ""]
    if e2e:
        kd = e2e["keypoint_displacement"]
        base = fid.get("reference_bf16_baseline") or {}
        lines += [f"- heatmap cosine: mean {_fmt(e2e['heatmap_cosine']['mean'], 5)}, min "
                  f"{_fmt(e2e['heatmap_cosine']['min'], 5)} over {fid.get('held_out_crops')} held-out crops",
                  f"- keypoint displacement (crop px): mean {_fmt(kd.get('mean_px'), 3)}, median "
                  f"{_fmt(kd.get('median_px'), 3)}, p95 {_fmt(kd.get('p95_px'), 3)}, max {_fmt(kd.get('max_px'), 3)}; "
                  f"within 1 heatmap px ({_fmt(kd.get('heatmap_px'), 1)} crop px): "
                  f"{_fmt(100 * kd.get('within_1_heatmap_px', 0), 1)} % of {kd.get('count')} keypoints "
                  f"({kd.get('excluded')} excluded: FP32 channel without a positive peak)",
                  f"- mean |score difference|: {_fmt(e2e.get('score_abs_diff_mean'), 5)}"]
        if base.get("status"):
            lines.append(f"- baseline: {base['status']}")
        elif base:
            bk = base["keypoint_displacement"]
            lines.append(f"- baseline, FP32 IRs run with the {BASELINE_HINT} hint vs {FIDELITY_HINT} (no quantization): "
                         f"heatmap cosine mean {_fmt(base['heatmap_cosine'].get('mean'), 5)}; keypoint displacement "
                         f"mean {_fmt(bk.get('mean_px'), 3)}, median {_fmt(bk.get('median_px'), 3)}, p95 "
                         f"{_fmt(bk.get('p95_px'), 3)}; within 1 heatmap px "
                         f"{_fmt(100 * bk.get('within_1_heatmap_px', 0), 1)} %")
    else:
        lines.append(f"- {fid.get('status', 'not measured')}")
    return lines


def _md_detector(report: dict[str, Any]) -> list[str]:
    """The INT8 paths, the detector's fidelity and the conversion's stages."""
    lines: list[str] = []
    if report.get("int8_paths"):
        lines += paths_mod.render_markdown(report["int8_paths"])
    det = report.get("detector") or {}
    lines += ["", "## Detector", ""]
    if "raw_output_cosine" in det:
        lines.append(f"- {det['frames']} {det['source']}: raw output cosine mean "
                     f"{_fmt(det['raw_output_cosine'].get('mean'), 5)}, class-score cosine mean "
                     f"{_fmt(det['score_cosine'].get('mean'), 5)}")
        lines.append(f"- score >= {det['conf_threshold']}: {det['reference_boxes']} FP32 boxes vs {det['boxes']}; "
                     f"box IoU mean {_fmt(det.get('box_iou_mean'), 4)}, share IoU>=0.5 "
                     f"{_fmt(det.get('box_matched_iou50'), 3)}")
        lines.append(f"- top {det['top_k']} person boxes per frame (no threshold): IoU mean "
                     f"{_fmt(det.get('top_k_box_iou_mean'), 4)}, share IoU>=0.5 {_fmt(det.get('top_k_matched_iou50'), 3)}")
    else:
        lines.append(f"- {det.get('status', 'not measured')}")
    conv = report.get("conversion")
    if conv:
        lines += ["", "## Conversion", "", "| stage | wall s | peak RSS GB (GiB) |", "|---|---|---|"]
        for st in conv.get("stages", []):
            lines.append(f"| {st['stage']} | {st['wall_s']:.1f} | {_peak(st)} |")
        lines.append(f"| total | {conv.get('wall_s', 0):.1f} | {_peak(conv)} |")
    return lines


def write_report(folder: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``folder``; returns both paths."""
    folder = Path(folder)
    js = folder / REPORT_JSON
    md = folder / REPORT_MD
    js.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    md.write_text(render_markdown(report), encoding="utf-8")
    logger.info("wrote %s and %s", js, md)
    return js, md
