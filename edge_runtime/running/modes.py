"""The options of the two coordinators: :class:`PipelineConfig` (file mode, :mod:`edge_runtime.running.pipeline`) and
:class:`LiveConfig` (live feeds and ``--schedule-poses``, :mod:`edge_runtime.running.live`), checked alike."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from edge_runtime.errors import InputError
from edge_runtime.model.keypoints import DEFAULT_SCORE_THRESHOLD, PART_NAMES
from edge_runtime.running.smoothing import SmoothConfig
from edge_runtime.running.tracking import DEFAULT_BOX_EXPANSION, DEFAULT_TRACK_IOU
from edge_runtime.running.tracks import TrackConfig


def _check_common(config: Any, positive: Sequence[str], optional_positive: Sequence[str]) -> None:
    """Positive integers, optional positive integers, a positive (or None) request timeout; parts as a tuple."""
    for name in positive:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name}: expected a positive integer, got {value!r}")
    for name in optional_positive:
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"{name}: expected a positive integer or None, got {value!r}")
    timeout = config.request_timeout_s
    if timeout is not None and not timeout > 0:
        raise InputError(f"request_timeout_s: expected a positive number or None, got {timeout!r}")
    config.parts = tuple(config.parts)


@dataclasses.dataclass
class PipelineConfig:
    """Scheduling and output options of a :class:`Pipeline` (see ``configs/edge.yaml``).

    mode: "file" (every frame, in order), the only mode of :class:`Pipeline`; live feeds run in
        :class:`edge_runtime.running.live.LiveRunner` (``LiveConfig``).
    batch: crops per pose request (>= 1). detect_every: run the detector every N frames (>= 1).
    max_frames: stop after this many frames read from the source (None: all).
    max_inflight_frames: frames admitted at once (None: 2 x pose requests + 2).
    flip_test: also infer mirrored crops and average the heatmaps.
    parts: keypoint groups kept in the records (others get score 0): subset of body, feet, face, hands.
    score_threshold: keypoints above it count as visible (carried boxes, drawing).
    track_iou_threshold, track_box_expansion: IoU track IDs and keypoint->box expansion between detections.
    max_persons: keep the N highest-scoring boxes per frame (None: all; default 20). Crops are built per
        request, so memory does not grow with the number of boxes.
    request_timeout_s: a request without an answer after this long fails its frames (a lost device) and
        its slot is not reused (None: wait for ever).
    progress: show a progress bar (file mode).
    chain_slots: split chain only: at most this many vae_encoder + pose requests in flight together
        (None: each model up to its own request count; both stages then compete for the same cores).
    smooth: temporal smoothing of the output keypoints (:class:`~edge_runtime.running.smoothing.SmoothConfig`; default
        none).
    """

    mode: str = "file"
    batch: int = 1
    detect_every: int = 1
    max_frames: "int | None" = None
    max_inflight_frames: "int | None" = None
    flip_test: bool = False
    parts: "tuple[str, ...]" = PART_NAMES
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    track_iou_threshold: float = DEFAULT_TRACK_IOU
    track_box_expansion: float = DEFAULT_BOX_EXPANSION
    max_persons: "int | None" = 20
    progress: bool = False
    chain_slots: "int | None" = None
    request_timeout_s: "float | None" = 600.0
    smooth: SmoothConfig = dataclasses.field(default_factory=SmoothConfig)

    def __post_init__(self) -> None:
        if self.mode != "file":
            raise InputError(f"mode: Pipeline processes files (mode 'file'), got {self.mode!r}; live feeds run in "
                             "edge_runtime.running.live.LiveRunner")
        _check_common(self, ("batch", "detect_every"), ("max_frames", "max_inflight_frames", "max_persons",
                                                         "chain_slots"))


@dataclasses.dataclass
class LiveConfig:
    """Options of a :class:`LiveRunner`.

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

    mode: str = "live"
    batch: int = 1
    detect_every: int = 1
    pose_budget: "float | None" = None
    max_frames: "int | None" = None
    max_persons: "int | None" = 20
    flip_test: bool = False
    parts: "tuple[str, ...]" = PART_NAMES
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    pace_live_files: bool = True
    live_queue_size: int = 1
    request_timeout_s: "float | None" = 600.0
    chain_slots: "int | None" = None
    smooth: SmoothConfig = dataclasses.field(default_factory=SmoothConfig)
    inference_nice: int = 0
    propagation: "str | None" = None
    hold_frames: "int | None" = None
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.delay_ms, bool) or not isinstance(self.delay_ms, (int, float)) or not self.delay_ms >= 0:
            raise InputError(f"delay_ms (--delay-ms): expected a non-negative number of milliseconds, got "
                             f"{self.delay_ms!r}")
        delayed = self.mode == "live" and self.delay_ms > 0
        if self.propagation is None:
            self.propagation = "two-sided" if self.mode == "file" or delayed else "forward"
        if self.propagation not in ("forward", "two-sided"):
            raise InputError(f"propagation: expected 'forward' or 'two-sided', got {self.propagation!r}")
        if self.propagation == "two-sided" and self.mode != "file" and not delayed:
            raise InputError("propagation: two-sided in live mode needs delay_ms > 0 (--delay-ms: output cannot wait "
                             "for the next pose otherwise)")
        if self.track.flow_model is None:  # dense flow where points fail: measured better for two-sided files;
            # live mode keeps point flow, which the coordinator affords on every frame of a camera
            dense = self.propagation == "two-sided" and self.mode == "file"
            self.track = dataclasses.replace(self.track, flow_model="dense" if dense else "points")
        if self.mode not in ("live", "file"):
            raise InputError(f"mode: expected 'live' or 'file', got {self.mode!r}")
        _check_common(self, ("batch", "detect_every", "live_queue_size"), ("max_frames", "max_persons",
                                                                           "chain_slots", "hold_frames"))
        if self.pose_budget is not None and not 0.0 < float(self.pose_budget) <= 1.0:
            raise InputError(f"pose_budget: expected a share of person-frames in (0, 1], got {self.pose_budget!r}")
        if not isinstance(self.inference_nice, int) or isinstance(self.inference_nice, bool) or not \
                0 <= self.inference_nice <= 19:
            raise InputError(f"inference_nice: expected an integer in [0, 19], got {self.inference_nice!r}")

    def held_frames(self) -> int:
        """Two-sided: the most frames held per source (``hold_frames``, or 3 keyframe intervals)."""
        if self.hold_frames is not None:
            return self.hold_frames
        if self.mode == "live":  # held by age (delay_ms); this only bounds memory
            return 256
        if self.pose_budget is None:
            return 16
        return int(min(256, max(16, round(3.0 / float(self.pose_budget)))))
