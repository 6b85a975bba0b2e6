"""The benchmark's outputs: ``bench.json``, ``bench.md`` and ``bench.png`` (matplotlib, when importable), the
machine description and the final log lines."""
from __future__ import annotations

import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .timing import STAGE_ORDER

logger = logging.getLogger(__name__)


def machine_info() -> dict[str, Any]:
    """CPU (OpenVINO's FULL_DEVICE_NAME and OPTIMIZATION_CAPABILITIES, /proc/cpuinfo flags), logical CPUs, RAM,
    OS and package versions (openvino, numpy, cv2; torch etc. when imported)."""
    from edge_runtime.model.cpu import cpu_info

    cpu = cpu_info().to_dict()
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "logical_cpus": os.cpu_count(), "cpu_model": cpu["name"]}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError as exc:
        logger.debug("/proc/meminfo not readable: %s", exc)
    versions: dict[str, str] = {}
    import cv2
    import openvino

    versions["openvino"] = openvino.__version__
    versions["numpy"] = np.__version__
    versions["opencv"] = cv2.__version__
    for mod in ("torch", "diffusers", "transformers", "nncf", "ultralytics"):
        if mod in sys.modules:
            versions[mod] = str(getattr(sys.modules[mod], "__version__", "?"))
    info["versions"] = versions
    info["cpu"] = cpu
    info["isa"] = list(cpu["flags"] or [])
    return info


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.2f} ms"


def _fmt_pct(fraction: float | None) -> str:
    if not fraction:
        return "–"
    pct = 100.0 * fraction
    return f"{pct:.1f}%" if pct >= 1 else f"{pct:.2f}%"


def _fmt_flops(value: int | None) -> str:
    if not value:
        return "–"
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value} FLOP"


def write_chart(report: dict[str, Any], path: Path) -> str | None:
    """Bar chart of the median latency per stage and variant (log scale, p95 whiskers, limit marked).
    Returns None when written, else the reason it was skipped (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); the chart was skipped"
    results = report["results"]
    variants = list(results)
    stages = [s for s in STAGE_ORDER if any(s in results[v] for v in variants)]
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.6 * len(stages) * max(1, len(variants)) / 2), 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    limit_drawn = False
    for i, name in enumerate(variants):
        xs, heights, errs, limits = [], [], [], []
        for j, stage in enumerate(stages):
            stats = results[name].get(stage)
            if stats is None:
                continue
            x = j + (i - (len(variants) - 1) / 2) * width
            xs.append(x)
            heights.append(stats["median_ms"])
            errs.append(max(stats["p95_ms"] - stats["median_ms"], 0.0))
            limits.append((x, stats.get("limit_ms")))
        ax.bar(xs, heights, width * 0.95, yerr=[np.zeros(len(errs)), errs], capsize=2, label=name,
               color=colors[i % len(colors)])
        for x, limit in limits:
            if limit:
                ax.hlines(limit, x - width * 0.45, x + width * 0.45, colors="black", linewidth=2,
                          label=None if limit_drawn else "compute limit (FLOPs / peak)")
                limit_drawn = True
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels(stages)
    ax.set_yscale("log")
    ax.set_ylabel("latency per call, ms (median; whisker p95; log scale)")
    size = report["settings"]["input_size_hw"]
    ax.set_title(f"SDPose stages, batch 1, {size[0]}x{size[1]} crop, {report['machine'].get('cpu_model', '')}"
                 , fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _fmt_num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def profile_markdown(profile: dict[str, Any]) -> list[str]:
    """``bench.md`` lines of the per-layer profile: per component the rows by layer type and executed
    precision, the reorders/converts line and the ten costliest nodes."""
    lines = ["", "## Per-layer profile (OpenVINO performance counters, batch 1, LATENCY hint)", "",
             "Time per inference (warm-up calls taken out); GFLOP counted on the IR; GFLOP/s over the time of the "
             "nodes with a FLOP count; of peak = that rate / the measured MatMul peak of the executed precision."]
    for name, sec in profile.items():
        lines += ["", f"### {name}: {_fmt_ms(sec['profiled_ms'])} profiled, {_fmt_ms(sec['wall_median_ms'])} "
                      f"wall (median of {sec['runs']}), hint {sec['hint']}, {sec['gflops_mapped']:.2f} of the IR's "
                      f"{sec['gflops_ir']:.2f} GFLOP mapped to runtime nodes", "",
                  "| layer type | exec precision | time | share | GFLOP | GFLOP/s | of peak | nodes |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sec["rows"]:
            lines.append(f"| {r['layer_type']} | {r['exec_precision']} | {_fmt_ms(r['time_ms'])} | "
                         f"{_fmt_pct(r['share'])} | {_fmt_num(r['gflops'], 2)} | {_fmt_num(r['achieved_gflop_s'])} | "
                         f"{_fmt_pct(r['of_peak'])} | {r['nodes']} |")
        ro = sec["reorders_converts"]
        lines += ["", f"Reorders and converts: {_fmt_ms(ro['time_ms'])} ({_fmt_pct(ro['share'])}) in {ro['nodes']} "
                      "nodes.", "", "| costliest node | type | kernel | time | share | GFLOP/s | of peak |",
                  "|---|---|---|---|---|---|---|"]
        for n in sec["top_nodes"]:
            label = n["name"] if len(n["name"]) <= 70 else "…" + n["name"][-69:]
            lines.append(f"| `{label}` | {n['layer_type']} | {n['exec_type']} | {_fmt_ms(n['time_ms'])} | "
                         f"{_fmt_pct(n['share'])} | {_fmt_num(n['achieved_gflop_s'])} | {_fmt_pct(n['of_peak'])} |")
    return lines


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """``bench.md``: settings, the stage x variant table, peaks, end to end, notes."""
    lines = ["# sdpose-edge benchmark", ""]
    m = report["machine"]
    s = report["settings"]
    lines += [f"- date: {report['created']}", f"- command: `{report['command']}`",
              f"- machine: {m.get('cpu_model', '?')}, {m.get('logical_cpus')} logical CPUs, "
              f"{m.get('ram_gb', '?')} GB RAM, ISA {', '.join(m.get('isa', []))}"
              + (f"; INT8 path {m['cpu']['int8_path']} ({m['cpu']['int8_isa']}), bf16 "
                 f"{'yes' if m['cpu']['bf16'] else 'no'}" if m.get("cpu") else ""),
              f"- versions: {', '.join(f'{k} {v}' for k, v in m.get('versions', {}).items())}",
              f"- settings: batch 1, one {s['input_size_hw'][0]}x{s['input_size_hw'][1]} crop ({s['input_source']}), "
              f"{s['runs']} runs after {s['warmup']} warm-up, variants interleaved within each stage, "
              "OpenVINO PERFORMANCE_HINT=LATENCY, no model cache", ""]
    hl = report.get("headline")
    if hl:
        base = report.get("baseline_description") or hl["baseline"]
        lines += [f"**Headline:** {hl['best_variant']} runs a crop (VAE encoder + pose + decode) in "
                  f"{_fmt_ms(hl['best_crop_median_ms'])} vs {_fmt_ms(hl['baseline_crop_median_ms'])} for "
                  f"{base}: speed-up **{hl['speedup']:.2f}x**"
                  + (f", at {_fmt_pct(hl['best_limit_fraction'])} of this machine's compute limit "
                     "(FLOPs / measured peak)." if hl.get("best_limit_fraction") else "."), ""]
    lines += ["## Latency per stage (median / p95 per call)", "",
              "| stage | variant | median | p95 | speed-up | FLOPs | limit | of limit |",
              "|---|---|---|---|---|---|---|---|"]
    results = report["results"]
    for stage in STAGE_ORDER:
        for name, per in results.items():
            st = per.get(stage)
            if st is None:
                continue
            speed = f"{st['speedup']:.2f}x" if st.get("speedup") else "–"
            frac = _fmt_pct(st.get("limit_fraction"))
            lines.append(f"| {stage} | {name} | {_fmt_ms(st['median_ms'])} | {_fmt_ms(st['p95_ms'])} | {speed} | "
                         f"{_fmt_flops(st.get('flops'))} | {_fmt_ms(st.get('limit_ms'))} | {frac} |")
    lines += ["", "speed-up: over " + (report.get("baseline") or "–") + " (median / median). "
              "limit = FLOPs / measured peak of the precision each op runs in (int8 for FakeQuantize-fed ops); "
              "of limit = limit / median (the achieved fraction of the machine's peak).", ""]
    lines += ["## Variants", "", "| variant | precision | hint | float ops in | threads | folder |",
              "|---|---|---|---|---|---|"]
    for v in report["variants"]:
        compiled = next(iter((v.get("compiled") or {}).values()), {})
        threads = v.get("num_threads") or compiled.get("INFERENCE_NUM_THREADS", "–")
        if compiled.get("NUM_STREAMS"):
            threads = f"{threads} ({compiled['NUM_STREAMS']} stream)"
        lines.append(f"| {v['name']} | {v['precision']} | {v.get('hint', '–')} | {v['compute_precision']} | "
                     f"{threads} | {v.get('folder', '–')} |")
    lines += ["", "## Measured peak (MatMul micro-benchmark, OpenVINO, LATENCY hint)", "",
              "Measured before and after the timing loop; the peak is the best single call of either.", "",
              "| precision | peak GFLOP/s | best before | best after | median call | executed as | MatMuls |",
              "|---|---|---|---|---|---|---|"]
    for prec, p in report.get("peaks", {}).items():
        lines.append(f"| {prec} | {p['gflops']:.0f} | {p.get('gflops_before', p['gflops']):.0f} | "
                     f"{p.get('gflops_after', p['gflops']):.0f} | {p['median_gflops']:.0f} | "
                     f"{p['executed_precision']} | {p['depth']} x {p['size']}^3 |")
    mem = report.get("memory_mb") or {}
    if mem.get("stages"):
        lines += ["", "## Memory of the bench process (all variants of one stage compiled at once)", "",
                  "| stage | RSS | anonymous | file-backed (mmapped weights) |", "|---|---|---|---|"]
        for row in mem["stages"]:
            m = row["after_build"]
            lines.append(f"| {row['stage']} | {m.get('rss', 0) / 1024:.1f} GB | {m.get('anon', 0) / 1024:.1f} GB | "
                         f"{m.get('file', 0) / 1024:.1f} GB |")
        peak = mem.get("bench_process", {}).get("peak")
        if peak:
            lines += ["", f"Peak RSS of the bench process: {peak / 1024:.1f} GB."]
    if report.get("profile"):
        lines += profile_markdown(report["profile"])
    e2e = report.get("end_to_end")
    lines += ["", "## End to end (file mode)", ""]
    if isinstance(e2e, dict) and "async" in e2e:
        a, sy, c = e2e["async"], e2e["sync"], e2e["cold"]
        lines += [f"models {e2e['models']}, video {e2e['video']}, {a['frames']} frames, {a['persons']} persons, "
                  f"precision hint {e2e['precision_hint']}.", "",
                  "| run | frames/s | persons/s | compile | first result | peak RSS |", "|---|---|---|---|---|---|"]
        for label, r in (("async THROUGHPUT pipeline (warm cache)", a), ("synchronous loop, LATENCY (warm cache)", sy),
                         ("async, cold start (empty cache)", c)):
            lines.append(f"| {label} | {r['fps']:.3f} | {r['persons_per_s']:.3f} | {r['compile_s']:.2f} s | "
                         f"{r.get('time_to_first_result_s', float('nan')):.2f} s | {r.get('max_rss_mb')} MB |")
        if e2e.get("throughput_ratio"):
            lines += ["", f"async / sync throughput: **{e2e['throughput_ratio']:.2f}x**. First result is timed from "
                      "process start (interpreter, imports, compile, first frame)."]
    else:
        lines.append(str(e2e or "not run (pass --video and --detections)"))
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report.get("notes", [])]
    chart = report.get("chart")
    lines += ["", f"![latency per stage]({chart})" if chart else f"Chart: {report.get('chart_skipped')}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write bench.json, bench.png (when matplotlib is importable) and bench.md into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    skipped = write_chart(report, out / "bench.png")
    if skipped is None:
        report["chart"] = "bench.png"
        written["png"] = out / "bench.png"
    else:
        report["chart"] = None
        report["chart_skipped"] = skipped
        logger.warning("%s", skipped)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    written["json"] = out / "bench.json"
    write_markdown(report, out / "bench.md")
    written["md"] = out / "bench.md"
    return written


def log_summary(report: dict[str, Any]) -> None:
    """Final result lines (stdout via logging)."""
    for name, per in report["results"].items():
        crop = per.get("crop")
        if crop:
            logger.info("%-28s crop median %s p95 %s%s", name, _fmt_ms(crop["median_ms"]), _fmt_ms(crop["p95_ms"]),
                        f" speed-up {crop['speedup']:.2f}x" if crop.get("speedup") else "")
    for name, sec in (report.get("profile") or {}).items():
        top = sec["rows"][0] if sec["rows"] else None
        logger.info("profile %-24s %s profiled; costliest %s; reorders/converts %s", name, _fmt_ms(sec["profiled_ms"]),
                    f"{top['layer_type']} {top['exec_precision']} {_fmt_pct(top['share'])}" if top else "–",
                    _fmt_pct(sec["reorders_converts"]["share"]))
    hl = report.get("headline")
    if hl:
        logger.info("headline: best per crop %s, speed-up %.2fx over %s", hl["best_variant"], hl["speedup"],
                    hl["baseline"])
