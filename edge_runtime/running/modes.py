"""The options of the two coordinators: :class:`PipelineConfig` (file mode, :mod:`edge_runtime.running.pipeline`) and
:class:`LiveConfig` (live feeds and ``--schedule-poses``, :mod:`edge_runtime.running.live`), checked alike.

A field that is an ``sdpose-edge run`` setting is :func:`edge_runtime.config.linked` to it: the setting's default
and check (one of each, in :class:`edge_runtime.config.RunSettings`); ``sdpose-edge run`` builds these configs with
:func:`edge_runtime.settings.schema.from_settings`."""
from __future__ import annotations

import dataclasses
from typing import Any

from edge_runtime.config import linked
from edge_runtime.errors import InputError
from edge_runtime.running.smoothing import SmoothConfig
from edge_runtime.running.tracks import TrackConfig
from edge_runtime.settings.schema import check_fields, positive_int


def _check(config: Any) -> None:
    """Every setting field by its setting's check (a positive or None request timeout, ...); parts as a tuple."""
    check_fields(config)
    config.parts = tuple(config.parts)


@dataclasses.dataclass
class PipelineConfig:
    """Scheduling and output options of a :class:`Pipeline`: every frame, in order (file mode; live feeds run in
    :class:`edge_runtime.running.live.LiveRunner`, ``LiveConfig``). The linked fields are the settings of the same
    names (defaults and checks: ``configs/edge.yaml``, :class:`edge_runtime.config.RunSettings`).

    batch: crops per pose request (>= 1). detect_every: run the detector every N frames (>= 1).
    max_frames: stop after this many frames read from the source (None: all).
    max_inflight_frames: frames admitted at once (None: 2 x pose requests + 2).
    flip_test: also infer mirrored crops and average the heatmaps.
    parts: keypoint groups kept in the records (others get score 0): subset of body, feet, face, hands.
    score_threshold: keypoints above it count as visible (carried boxes, drawing).
    track_iou_threshold, track_box_expansion: IoU track IDs and keypoint->box expansion between detections.
    max_persons: keep the N highest-scoring boxes per frame (None: all). Crops are built per request, so memory
        does not grow with the number of boxes.
    request_timeout_s: a request without an answer after this long fails its frames (a lost device) and
        its slot is not reused (None: wait for ever).
    progress: show a progress bar (file mode).
    chain_slots: split chain only: at most this many vae_encoder + pose requests in flight together
        (None: each model up to its own request count; both stages then compete for the same cores).
    smooth: temporal smoothing of the output keypoints (:class:`~edge_runtime.running.smoothing.SmoothConfig`; default
        none).
    """

    batch: int = linked("batch")
    detect_every: int = linked("detect_every")
    max_frames: "int | None" = linked("max_frames")
    max_inflight_frames: "int | None" = linked("max_inflight_frames")
    flip_test: bool = linked("flip_test")
    parts: "tuple[str, ...]" = linked("parts")
    score_threshold: float = linked("score_threshold")
    track_iou_threshold: float = linked("track_iou_threshold")
    track_box_expansion: float = linked("track_box_expansion")
    max_persons: "int | None" = linked("max_persons", nullable=True)
    progress: bool = linked("progress", default=False)  # a library call draws no bar; sdpose-edge run does
    chain_slots: "int | None" = linked("chain_slots")
    request_timeout_s: "float | None" = linked("request_timeout_s", nullable=True)
    smooth: SmoothConfig = dataclasses.field(default_factory=SmoothConfig)

    def __post_init__(self) -> None:
        _check(self)


@dataclasses.dataclass
class LiveConfig:
    """Options of a :class:`LiveRunner`; the linked fields are the settings of the same names, as in
    :class:`PipelineConfig`.

    mode: "live" (newest frame wins, output at once) or "file" (every frame, held until its poses are back).
    batch: crops per pose request (never waits to fill a batch). detect_every: detector every N frames.
    pose_budget: share of person-frames recomputed, e.g. 0.1 (None: as fast as the pose requests allow).
    max_frames: per source. max_persons: highest-scoring detections kept per frame.
    flip_test, parts, score_threshold: as in file mode. track: :class:`TrackConfig`.
    pace_live_files: video files given in live mode play at their own fps (a simulated camera).
    live_queue_size: frames waiting per source in live mode. request_timeout_s: see PipelineConfig.
    chain_slots: split chain: at most this many pose requests (crops on their way through vae_encoder and
        pose) at once; 1 runs the two models strictly one after the other, so that with ``release_memory``
        only one model's buffers exist at a time (None: each model up to its own requests).
    smooth: temporal smoothing of the output keypoints, as in PipelineConfig.
    inference_nice: add this to the nice value of every thread of the process but the coordinator and the capture
        threads (the inference threads), so that capture and output win the CPU (0: leave priorities alone;
        Linux; :mod:`edge_runtime.model.compile_choice`).
    propagation: "forward" (poses carried forward from their keyframe only) or "two-sided" (each frame also takes
        the next keyframe's pose carried backward, :mod:`edge_runtime.running.twosided`; live mode needs
        ``delay_ms`` > 0); None: two-sided in file mode and in live mode with ``delay_ms`` > 0, else forward.
    hold_frames: two-sided: frames held at most per source waiting for their next keyframe (the memory
        bound); None: files 3 keyframe intervals of the pose budget (3 / pose_budget, at least 16, at most 256),
        live mode 256.
    delay_ms: live mode: hold each frame's output up to this many ms of the source's clock, so that a pose that
        comes back within it is blended two-sided (0: output at once, forward only). Ignored in file mode.
    """

    mode: str = linked("mode", default="live")
    batch: int = linked("batch")
    detect_every: int = linked("detect_every")
    pose_budget: "float | None" = linked("pose_budget")
    max_frames: "int | None" = linked("max_frames")
    max_persons: "int | None" = linked("max_persons", nullable=True)
    flip_test: bool = linked("flip_test")
    parts: "tuple[str, ...]" = linked("parts")
    score_threshold: float = linked("score_threshold")
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    pace_live_files: bool = True
    live_queue_size: int = linked("live_queue_size")
    request_timeout_s: "float | None" = linked("request_timeout_s", nullable=True)
    chain_slots: "int | None" = linked("chain_slots")
    smooth: SmoothConfig = dataclasses.field(default_factory=SmoothConfig)
    inference_nice: int = linked("inference_nice", default=0)  # resolved (the setting's null: the runtime's choice)
    propagation: "str | None" = linked("propagation")
    hold_frames: "int | None" = None
    delay_ms: float = linked("delay_ms")

    def __post_init__(self) -> None:
        _check(self)
        if self.hold_frames is not None and not positive_int(self.hold_frames):
            raise InputError(f"hold_frames: expected a positive integer or None, got {self.hold_frames!r}")
        if self.pose_budget is not None and not float(self.pose_budget) > 0.0:
            raise InputError(f"pose_budget: expected a share of person-frames in (0, 1], got {self.pose_budget!r}")
        delayed = self.mode == "live" and self.delay_ms > 0
        if self.propagation is None:
            self.propagation = "two-sided" if self.mode == "file" or delayed else "forward"
        if self.propagation == "two-sided" and self.mode != "file" and not delayed:
            raise InputError("propagation: two-sided in live mode needs delay_ms > 0 (--delay-ms: output cannot wait "
                             "for the next pose otherwise)")
        if self.track.flow_model is None:  # dense flow where points fail: measured better for two-sided files;
            # live mode keeps point flow, which the coordinator affords on every frame of a camera
            dense = self.propagation == "two-sided" and self.mode == "file"
            self.track = dataclasses.replace(self.track, flow_model="dense" if dense else "points")

    def held_frames(self) -> int:
        """Two-sided: the most frames held per source (``hold_frames``, or 3 keyframe intervals)."""
        if self.hold_frames is not None:
            return self.hold_frames
        if self.mode == "live":  # held by age (delay_ms); this only bounds memory
            return 256
        if self.pose_budget is None:
            return 16
        return int(min(256, max(16, round(3.0 / float(self.pose_budget)))))
