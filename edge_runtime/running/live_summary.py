"""The live coordinator's ``summary.json``: one entry per source and the totals (:class:`edge_runtime.running.live.LiveRunner`
state read, nothing changed)."""
from __future__ import annotations

from typing import Any

from edge_runtime.media.feeds import connection_totals
from edge_runtime.media.sources import mask_credentials


def share(count: int, slots: int) -> "float | None":
    """count / slots rounded to 4 places; None without slots."""
    return round(count / slots, 4) if slots else None


def source_summary(runner: Any, src: Any) -> dict[str, Any]:
    """One source's entry of summary.json (``runner``: the :class:`~edge_runtime.running.live.LiveRunner`)."""
    wall = max((src.t_last or runner._t1) - (src.t_first or runner._t0), 1e-9)
    active_s = max(runner._t1 - runner._t0, 1e-9)
    tracks = src.tracks.stats()
    return {
        "mode": runner.config.mode, "chain": "+".join(runner.stages), "name": src.name,
        "source": mask_credentials(src.source.description or src.name),
        "frames_in": src.status.frames_read, "frames_out": src.frames_out,
        "frames_ok": src.frames_out - src.failed, "frames_skipped": src.feed.skipped,
        "frames_failed": src.failed, "persons": src.persons,
        "wall_s": round(wall, 3), "fps": round(src.frames_out / active_s, 4),
        "pose_recomputes": src.recomputes,
        "pose_recomputes_per_track_s": round(src.recomputes / max(tracks["tracks_created"], 1) / active_s, 4),
        "person_presence": share(src.person_present, src.person_slots),
        "pose_presence": share(src.pose_present, src.person_slots),
        "latency_ms": {k: v.summary() for k, v in sorted(src.lat.items())},
        "tracks": tracks, "detect_every": runner.config.detect_every, "pose_budget": runner.config.pose_budget,
        "frames_without_detections": src.dets_missing,
        "propagation": runner.config.propagation, "delay_ms": runner.config.delay_ms,
        "two_sided": src.two_sided.stats() if src.two_sided is not None else None,
        "interrupted": runner._interrupted,
        **src.status.to_summary(),
    }


def live_summary(runner: Any) -> dict[str, Any]:
    """summary.json of a live run: {"total": ..., "sources": {name: ...}}."""
    wall = max(runner._t1 - runner._t0, 1e-9)
    per = {src.name: source_summary(runner, src) for src in runner._srcs}
    keys = ("frames_in", "frames_out", "frames_ok", "frames_skipped", "frames_failed", "persons",
            "pose_recomputes")
    total: dict[str, Any] = {k: sum(s[k] for s in per.values()) for k in keys}
    total.update(connection_totals(per.values()))
    errors = {name: s["capture_error"] for name, s in per.items() if s["capture_error"]}
    slots = sum(s.person_slots for s in runner._srcs)
    total.update({
        "mode": runner.config.mode, "chain": "+".join(runner.stages), "sources": len(per),
        "wall_s": round(wall, 3), "fps": round(total["frames_out"] / wall, 4),
        "latency_ms": {k: v.summary() for k, v in sorted(runner._lat.items())},
        "stage_busy_share": {s: round(min(1.0, m.busy_s(runner._t1) / wall), 4) for s, m in sorted(runner._book.busy.items())},
        "requests": {k: b.capacity for k, b in runner.backends.items()},
        "requests_timed_out": runner._book.requests.expired_count,
        "batch": runner.config.batch, "detect_every": runner.config.detect_every,
        "pose_budget": runner.config.pose_budget, "delay_ms": runner.config.delay_ms,
        "interrupted": runner._interrupted,
        "inference_nice": runner.config.inference_nice, "threads_reniced": runner._priority.changed,
        "person_presence": share(sum(s.person_present for s in runner._srcs), slots),
        "pose_presence": share(sum(s.pose_present for s in runner._srcs), slots),
        "capture_error": "; ".join(f"{k}: {v}" for k, v in errors.items()) or None,
    })
    return {"total": total, "sources": per}
