"""Temporal smoothing of output keypoints (``--smooth one-euro|none``): a One Euro filter per track and keypoint.

The One Euro filter (Casiez, Roussel, Vogel, CHI 2012) is an exponential low-pass whose cutoff rises with speed:
slow motion is smoothed hard (jitter removed), fast motion passes with little lag. Per sample at time ``t``
(``dt`` = seconds since the track's previous sample, from the frames' timestamps, never frame counts)::

    alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))
    v_hat     = v_hat + alpha(d_cutoff_hz) * ((x - x_hat) / dt - v_hat)           speed estimate
    fc        = min_cutoff_hz + beta * |v_hat| / box_size                             adaptive cutoff
    x_hat     = x_hat + alpha(fc) * (x - x_hat)

Units, so that one setting fits every box size and frame rate:

- ``min_cutoff_hz``, ``d_cutoff_hz``: Hz (the frame rate enters only through ``dt``);
- ``beta``: Hz per (box size per second): the speed is measured in box sizes per second, ``box_size`` being the
  longer side of the person's box in that frame (as PCK's normalisation), so a near and a far person moving
  alike are smoothed alike. The speed is the norm of the keypoint's 2-D velocity (x and y share one cutoff).

Lag bound: ``fc >= min_cutoff_hz``, so every sample closes at least ``alpha_min = alpha(min_cutoff_hz)`` of the
gap to the input; after a step the remaining gap after ``n`` samples is at most ``(1 - alpha_min) ** n`` of the
step, without overshoot (:func:`step_lag_bound`). The speed term only shortens this.

What passes through unchanged: results with an ``error`` and no persons, results without timestamps (still
images have no time base), persons whose ``track_id`` is negative, non-finite keypoints (their filter restarts).
Keypoint scores are never changed. Low-score keypoints are filtered like the others (they are not drawn, and a
point that becomes visible again jumps, which the speed term follows within a few frames); their score does not
weight the filter, so a score hovering around the threshold cannot switch smoothing on and off.
A track that is absent from a frame has its state dropped (memory is bounded by the persons of one frame per
source), so a track that comes back starts afresh; a timestamp that does not increase (a looped file, a camera
clock reset) restarts every filter of that source.

Written by hand in numpy (about 60 lines): the one One Euro package on PyPI (``oneeurofilter`` 0.2.1, 2024)
would be a new runtime dependency, which ``edge_runtime`` does not take (openvino, numpy, cv2, yaml and the
standard library only), and the published filter measures speed in absolute units, not box sizes per second;
here all keypoints of a track are filtered in one vectorised step.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from edge_runtime.config import linked
from edge_runtime.errors import InputError

SMOOTH_METHODS = ("none", "one-euro")


@dataclasses.dataclass(frozen=True)
class SmoothConfig:
    """``method``: "none" | "one-euro"; the One Euro parameters (see the module docstring for their units). The
    fields are the ``smooth*`` settings (their defaults; a library call smooths nothing unless asked, ``sdpose-edge
    run`` smooths by default); checked here (the YAML and the command line are checked by the settings)."""

    method: str = linked("smooth", default="none")
    min_cutoff_hz: float = linked("smooth_min_cutoff_hz")
    beta: float = linked("smooth_beta")
    d_cutoff_hz: float = linked("smooth_d_cutoff_hz")

    def __post_init__(self) -> None:
        if self.method not in SMOOTH_METHODS:
            raise InputError(f"smooth: expected one of {' | '.join(SMOOTH_METHODS)}, got {self.method!r}")
        for name in ("min_cutoff_hz", "d_cutoff_hz"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise InputError(f"{name}: expected a positive number of Hz, got {value!r}")
        if not isinstance(self.beta, (int, float)) or isinstance(self.beta, bool) or not self.beta >= 0:
            raise InputError(f"smooth_beta: expected a non-negative number, got {self.beta!r}")


def smoothing_alpha(cutoff_hz: "float | np.ndarray", dt_s: float) -> "float | np.ndarray":
    """The exponential smoothing factor of a first-order low-pass with cutoff ``cutoff_hz`` at step ``dt_s``."""
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz) * dt_s))


def step_lag_bound(config: SmoothConfig, dt_s: float, tolerance: float) -> int:
    """Samples after which the output is within ``tolerance`` (a share of the step) of a step's new value."""
    alpha = float(smoothing_alpha(config.min_cutoff_hz, dt_s))
    return max(1, math.ceil(math.log(tolerance) / math.log(1.0 - alpha)))


@dataclasses.dataclass
class _TrackFilter:
    """One track's state: filtered keypoints x_hat [K,2] image px and their speed v_hat [K,2] px/s."""

    x_hat: np.ndarray
    v_hat: np.ndarray


class OneEuroSmoother:
    """Smooths :class:`~edge_runtime.running.results.FrameResult` keypoints per (source, track_id) and keypoint."""

    def __init__(self, config: SmoothConfig) -> None:
        self.config = config
        self._tracks: dict[str, dict[int, _TrackFilter]] = {}   # stream (source) -> track_id -> state
        self._last_t: dict[str, float] = {}                     # stream -> seconds of its last result

    def tracked(self, stream: str = "") -> int:
        """Tracks with filter state for the source ``stream`` (bounded by the persons of its last frame)."""
        return len(self._tracks.get(stream, {}))

    def __call__(self, result: Any, stream: str = "") -> Any:
        """The result with smoothed keypoints (new arrays; ``result`` itself is not changed). ``stream`` names the
        source the result belongs to (track ids and timestamps are per source)."""
        if result.timestamp_ms is None or (result.error is not None and len(result.track_ids) == 0):
            return result
        t = float(result.timestamp_ms) / 1000.0
        last = self._last_t.get(stream)
        self._last_t[stream] = t
        old = self._tracks.get(stream, {}) if last is not None and t > last else {}
        dt = t - last if last is not None else 0.0
        new: dict[int, _TrackFilter] = {}
        keypoints = np.array(result.keypoints, np.float32, copy=True)
        for i, track_id in enumerate(np.asarray(result.track_ids).tolist()):
            if track_id < 0 or keypoints.shape[1] == 0 or track_id in new:
                continue
            box = result.boxes_xyxy[i]
            size = max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0)
            state = self._step(old.get(track_id), keypoints[i].astype(np.float64), dt, size)
            new[track_id] = state
            keypoints[i] = state.x_hat
        self._tracks[stream] = new
        return dataclasses.replace(result, keypoints=keypoints)

    def _step(self, state: "_TrackFilter | None", x: np.ndarray, dt: float, box_size: float) -> _TrackFilter:
        """One sample x [K,2] image px of one track, ``dt`` seconds after its previous one."""
        finite = np.isfinite(x).all(axis=1)
        if state is None or dt <= 0.0:
            return _TrackFilter(x.copy(), np.zeros_like(x))
        cfg = self.config
        prev = np.where(finite[:, None] & np.isfinite(state.x_hat).all(axis=1)[:, None], state.x_hat, x)
        v_hat = state.v_hat + smoothing_alpha(cfg.d_cutoff_hz, dt) * ((x - prev) / dt - state.v_hat)
        v_hat[~finite] = 0.0
        cutoff = cfg.min_cutoff_hz + cfg.beta * np.linalg.norm(v_hat, axis=1) / box_size   # [K] Hz
        alpha = smoothing_alpha(cutoff, dt)[:, None]
        x_hat = np.where(finite[:, None], prev + alpha * (x - prev), x)
        return _TrackFilter(x_hat, v_hat)


def build_smoother(config: "SmoothConfig | None") -> "OneEuroSmoother | None":
    """The smoother of ``config`` (None for ``method == "none"``: results pass through untouched)."""
    if config is None or config.method == "none":
        return None
    return OneEuroSmoother(config)
