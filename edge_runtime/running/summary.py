"""The one builder of ``summary.json``: a file-mode run (:class:`~edge_runtime.running.pipeline.Pipeline`), a live or
scheduled run (:class:`~edge_runtime.running.live.LiveRunner`: one entry per source and the totals) and the totals
over several file-mode sources (``sdpose-edge run``). The coordinators' state is read, nothing changed."""
from __future__ import annotations

from typing import Any, Mapping

from edge_runtime.media.feeds import connection_totals
from edge_runtime.media.sources import mask_credentials

#: the per-source counts that totals add up
COUNT_KEYS = ("frames_in", "frames_out", "frames_ok", "frames_skipped", "frames_failed", "persons")


def share(count: int, slots: int) -> "float | None":
    """count / slots rounded to 4 places; None without slots."""
    return round(count / slots, 4) if slots else None


def frame_counts(frames_in: int, frames_out: int, skipped: int, failed: int, persons: int) -> dict[str, int]:
    """The :data:`COUNT_KEYS` of one source (``frames_ok``: written without error)."""
    return {"frames_in": frames_in, "frames_out": frames_out, "frames_ok": frames_out - failed,
            "frames_skipped": skipped, "frames_failed": failed, "persons": persons}


def request_figures(coordinator: Any, wall: float) -> dict[str, Any]:
    """What a run's requests did: latency per stage (ms), each stage's busy share of ``wall`` (s), the requests
    per stage and those that timed out."""
    book, t1 = coordinator._book, coordinator._t1
    return {
        "latency_ms": {k: v.summary() for k, v in sorted(coordinator._lat.items())},
        "stage_busy_share": {s: round(min(1.0, m.busy_s(t1) / wall), 4) for s, m in sorted(book.busy.items())},
        "requests": {k: b.capacity for k, b in coordinator.backends.items()},
        "requests_timed_out": book.requests.expired_count,
    }


def totals(per_source: Mapping[str, Mapping[str, Any]], extra_keys: "tuple[str, ...]" = ()) -> dict[str, Any]:
    """Totals over per-source summaries: :data:`COUNT_KEYS` (and ``extra_keys``) summed over the sources that
    finished, their connection totals, and every source's capture error ("name: error; ...", or None)."""
    done = [s for s in per_source.values() if "frames_in" in s]
    total: dict[str, Any] = {k: sum(s[k] for s in done) for k in COUNT_KEYS + tuple(extra_keys)}
    total.update(connection_totals(done))
    errors = [f"{name}: {s['capture_error']}" for name, s in per_source.items() if s.get("capture_error")]
    total["capture_error"] = "; ".join(errors) or None
    return total


def file_summary(pipe: Any) -> dict[str, Any]:
    """summary.json of a file-mode run (``pipe``: the :class:`~edge_runtime.running.pipeline.Pipeline`)."""
    cfg, wall = pipe.config, max(pipe._t1 - pipe._t0, 1e-9)
    heat = pipe.stages[-1]
    utilization = round(pipe._book.busy[heat].requests_s / (wall * pipe.backends[heat].capacity), 4)
    written = pipe._written
    return {
        "mode": "file", "chain": "+".join(pipe.stages),
        **frame_counts(pipe._status.frames_read, written, pipe._feed.skipped + pipe._discarded_at_stop,
                       pipe._failed, pipe._persons),
        "wall_s": round(wall, 3), "fps": round(written / wall, 4), "persons_per_s": round(pipe._persons / wall, 4),
        **request_figures(pipe, wall),
        "pose_busy_share": round(min(1.0, pipe._book.chain_busy.busy_s(pipe._t1) / wall), 4),
        "pose_request_utilization": utilization,
        "frames_without_detections": pipe.frames_without_detections,
        "batch": cfg.batch, "detect_every": cfg.detect_every, "interrupted": pipe._interrupted,
        **pipe._status.to_summary(),
    }


def source_summary(runner: Any, src: Any) -> dict[str, Any]:
    """One source's entry of summary.json (``runner``: the :class:`~edge_runtime.running.live.LiveRunner`)."""
    wall = max((src.t_last or runner._t1) - (src.t_first or runner._t0), 1e-9)
    active_s = max(runner._t1 - runner._t0, 1e-9)
    tracks = src.tracks.stats()
    return {
        "mode": runner.config.mode, "chain": "+".join(runner.stages), "name": src.name,
        "source": mask_credentials(src.source.description or src.name),
        **frame_counts(src.status.frames_read, src.frames_out, src.feed.skipped, src.failed, src.persons),
        "wall_s": round(wall, 3), "fps": round(src.frames_out / active_s, 4),
        "pose_recomputes": src.recomputes,
        "pose_recomputes_per_track_s": round(src.recomputes / max(tracks["tracks_created"], 1) / active_s, 4),
        "person_presence": share(src.person_present, src.person_slots),
        "pose_presence": share(src.pose_present, src.person_slots),
        "latency_ms": {k: v.summary() for k, v in sorted(src.lat.items())},
        "tracks": tracks, "detect_every": runner.config.detect_every, "pose_budget": runner.config.pose_budget,
        "frames_without_detections": runner.frames_without_detections(src),
        "propagation": runner.config.propagation, "delay_ms": runner.config.delay_ms,
        "two_sided": src.two_sided.stats() if src.two_sided is not None else None,
        "interrupted": runner._interrupted,
        **src.status.to_summary(),
    }


def live_summary(runner: Any) -> dict[str, Any]:
    """summary.json of a live run: {"total": ..., "sources": {name: ...}}."""
    cfg, wall = runner.config, max(runner._t1 - runner._t0, 1e-9)
    per = {src.name: source_summary(runner, src) for src in runner._srcs}
    total = totals(per, ("pose_recomputes",))
    slots = sum(s.person_slots for s in runner._srcs)
    total.update({
        "mode": cfg.mode, "chain": "+".join(runner.stages), "sources": len(per),
        "wall_s": round(wall, 3), "fps": round(total["frames_out"] / wall, 4),
        **request_figures(runner, wall),
        "batch": cfg.batch, "detect_every": cfg.detect_every,
        "pose_budget": cfg.pose_budget, "delay_ms": cfg.delay_ms, "interrupted": runner._interrupted,
        "inference_nice": cfg.inference_nice, "threads_reniced": runner._priority.changed,
        "person_presence": share(sum(s.person_present for s in runner._srcs), slots),
        "pose_presence": share(sum(s.pose_present for s in runner._srcs), slots),
    })
    return {"total": total, "sources": per}
