"""The inference stages both coordinators share (:class:`~edge_runtime.running.pipeline.Pipeline`, file mode, and
:class:`~edge_runtime.running.live.LiveRunner`, live feeds and ``--schedule-poses``); the coordinators keep only their
policy (which frame, which person, when).

- :class:`BoxStage`: the person boxes of a frame, from a detections table (at once) or from the detector
  (queued, pre-processed and sent when the detector has a free request, post-processed on completion).
- :class:`PoseStage`: a person's keypoints: crops made when a request is sent and batched ``batch`` per request,
  the flip test (each crop also mirrored; the two heatmaps paired by their job, whichever requests they went
  in), the split chain's pump (vae_encoder -> latents -> pose, the second stage first), the ``chain_slots``
  rule, decoding, and failing the work of a stage whose every request stopped answering.

Neither raises into the coordinator's loop: every failure comes back as a value (:class:`FoundBoxes` /
:class:`PoseOutcome` with ``error`` set). Both submit through the coordinator's ``submit(stage, inputs,
userdata)`` (its :class:`~edge_runtime.running.backends.RequestBook`) and hand completions back through
``complete(event)``.

Coordinates: boxes_xyxy [N,4] image px; crops [N,h,w,3] u8 BGR crop px; heatmaps [N,K,H/4,W/4]; keypoints [K,2]
image px; scores [K].
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edge_runtime.errors import SDPoseError
from edge_runtime.running.backends import Completion, RequestBook
from edge_runtime.running.metrics import Reservoirs

logger = logging.getLogger(__name__)

#: submit(stage, inputs, userdata): the coordinator's way to a backend
Submit = Callable[[str, np.ndarray, Any], None]

DEAD_STAGE = "no inference request left (every request of the {} stage stopped answering)"


def _ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000.0


# ============================================================================ boxes
@dataclasses.dataclass
class FoundBoxes:
    """The person boxes of one frame, or why there are none (``error``)."""

    boxes_xyxy: np.ndarray   # [N,4] image px
    scores: np.ndarray       # [N]
    origin: str              # "detections" | "detector"
    error: "str | None" = None

    @classmethod
    def failed(cls, error: str) -> "FoundBoxes":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), "detector", error)


def table_entry(table: "dict[str, np.ndarray]", frame: Any) -> "np.ndarray | None":
    """A frame's rows [M,5] (x1, y1, x2, y2, score image px) of a detections table, keyed by the frame's name or
    its index as a string; None when the table has neither."""
    rows = table.get(frame.name)
    return rows if rows is not None else table.get(str(frame.index))


class BoxStage:
    """Person boxes from a detections table (:meth:`lookup`) or the detector (:meth:`request`, :meth:`pump`,
    :meth:`complete`). ``missing`` counts the frames a table had no entry for, per ``name`` (a source)."""

    def __init__(self, detector: Any, book: RequestBook, submit: Submit, lat: Reservoirs) -> None:
        self.detector, self._book, self._submit, self._lat = detector, book, submit, lat
        self._queue: "collections.deque[tuple[np.ndarray, Any]]" = collections.deque()  # (image, userdata)
        self.missing: "collections.Counter[str]" = collections.Counter()

    def lookup(self, table: "dict[str, np.ndarray]", frame: Any, name: str = "") -> FoundBoxes:
        """The boxes ``table`` gives ``frame`` (none, counted and warned once per ``name``, when it has no entry)."""
        rows = table_entry(table, frame)
        if rows is None:
            if self.missing[name] == 0:
                examples = ", ".join(repr(k) for k in list(table)[:3])
                logger.warning("%s--detections has no entry for frame %d (keys tried: %r, %r; the file has e.g. "
                               "%s): recorded with zero persons (further misses are counted in the summary)",
                               f"{name}: " if name else "", frame.index, frame.name, str(frame.index),
                               examples or "no keys")
            self.missing[name] += 1
            rows = np.zeros((0, 5), np.float32)
        return FoundBoxes(rows[:, :4], rows[:, 4], "detections")

    def request(self, image_bgr: np.ndarray, userdata: Any) -> None:
        """Detect on ``image_bgr`` [H,W,3] u8: sent by :meth:`pump` when the detector has a free request."""
        self._queue.append((image_bgr, userdata))

    def busy(self) -> bool:
        """Frames waiting for the detector or being detected."""
        return bool(self._queue) or self._book.inflight["detector"] > 0

    def pump(self) -> "list[tuple[Any, FoundBoxes]]":
        """Send waiting frames while the detector has free requests; returns the frames whose pre-processing
        failed (userdata, boxes with ``error``)."""
        failed = []
        while self._queue and self._book.free("detector") > 0:
            image, userdata = self._queue.popleft()
            t = time.perf_counter()
            try:
                tensor, meta = self.detector.preprocess(image)
            except SDPoseError as exc:
                failed.append((userdata, FoundBoxes.failed(f"detector preprocessing failed: {exc}")))
                continue
            self._lat["detector_pre"].append(_ms_since(t))
            self._submit("detector", tensor, (userdata, meta))
        return failed

    def complete(self, event: Completion) -> "tuple[Any, FoundBoxes]":
        """A detector completion -> (userdata, its boxes, or the request's / post-processing's error)."""
        userdata, meta = event.userdata
        if event.error is not None:
            return userdata, FoundBoxes.failed(event.error)
        t = time.perf_counter()
        try:
            boxes, scores = self.detector.postprocess(event.output, meta)
        except SDPoseError as exc:
            return userdata, FoundBoxes.failed(f"detector postprocessing failed: {exc}")
        self._lat["detector_post"].append(_ms_since(t))
        return userdata, FoundBoxes(boxes, scores, "detector")

    def fail_dead(self) -> "list[tuple[Any, FoundBoxes]]":
        """Every request of the detector stopped answering: the waiting frames fail."""
        if not self._queue or not self._book.dead("detector"):
            return []
        failed = [(userdata, FoundBoxes.failed(DEAD_STAGE.format("detector"))) for _, userdata in self._queue]
        self._queue.clear()
        return failed


# ============================================================================ poses
@dataclasses.dataclass(eq=False)
class PoseJob:
    """One person to pose: the crop of ``box`` in ``image``. ``key`` is the coordinator's (it comes back with
    the outcome); the rest is the stage's bookkeeping."""

    key: Any
    image: np.ndarray          # BGR u8 [H,W,3]
    box: np.ndarray            # [4] image px
    crop: "np.ndarray | None" = None                                           # [h,w,3] until every variant is sent
    sent: int = 0                                                              # variants sent
    heat: "dict[bool, np.ndarray]" = dataclasses.field(default_factory=dict)  # flipped -> [K,H,W], until paired
    done: bool = False                                                         # its outcome was given


@dataclasses.dataclass
class PoseOutcome:
    """What became of a :class:`PoseJob`: keypoints [K,2] image px and scores [K], or ``error`` and the ``stage``
    it failed in ("crop", a chain stage, or "decode")."""

    job: PoseJob
    keypoints: "np.ndarray | None" = None
    scores: "np.ndarray | None" = None
    error: "str | None" = None
    stage: str = ""


@dataclasses.dataclass(frozen=True)
class _Crop:
    job: PoseJob
    flipped: bool


class PoseStage:
    """Pose jobs through the estimator's chain (module docstring). One per run: it holds the crops waiting for
    a request and the latents waiting for the second stage of the split chain.

    ``batch``: crops per request; ``flip_test``: each job also as a mirrored crop; ``chain_slots`` (split chain):
    at most this many requests in flight and latents waiting, together (None: each stage up to its requests)."""

    def __init__(self, estimator: Any, book: RequestBook, submit: Submit, lat: Reservoirs, batch: int = 1,
                 flip_test: bool = False, chain_slots: "int | None" = None) -> None:
        self.estimator, self._book, self._submit, self._lat = estimator, book, submit, lat
        self.stages: tuple[str, ...] = tuple(estimator.kinds)
        self.first, self.heat = self.stages[0], self.stages[-1]
        self.split = len(self.stages) == 2
        self.batch, self.flip_test, self.chain_slots = batch, flip_test, chain_slots
        self.variants = (False, True) if flip_test else (False,)
        self._crops: "collections.deque[_Crop]" = collections.deque()
        self._latents: "collections.deque[tuple[np.ndarray, list[_Crop]]]" = collections.deque()

    # ------------------------------------------------------------------ state
    @property
    def queued(self) -> int:
        """Crops waiting for a request."""
        return len(self._crops)

    def dead(self) -> bool:
        """Every request of a stage of the chain stopped answering."""
        return any(self._book.dead(s) for s in self.stages)

    def in_chain(self) -> int:
        """Requests of the chain in flight plus latents waiting for the second stage."""
        return sum(self._book.inflight[s] for s in self.stages) + len(self._latents)

    def room(self) -> bool:
        """The first stage may take a request now: it has a free request; the second stage has a request for
        every waiting latent (it is the bottleneck: don't pile up latents); and within ``chain_slots``."""
        if self._book.free(self.first) <= 0:
            return False
        if not self.split:
            return True
        if len(self._latents) >= self._book.backends[self.heat].capacity:
            return False
        return self.chain_slots is None or self.in_chain() < self.chain_slots

    # ------------------------------------------------------------------ submission
    def add(self, jobs: Iterable[PoseJob]) -> None:
        """Queue the jobs' crops (each also mirrored with the flip test); :meth:`pump` sends them."""
        for job in jobs:
            self._crops.extend(_Crop(job, flipped) for flipped in self.variants)

    def pump(self, more_coming: bool = False) -> list[PoseOutcome]:
        """Send what can go now: waiting latents to the second stage first (keeps the fewest alive), then crops,
        ``batch`` per request while :meth:`room` (``more_coming``: hold a partial batch back). Returns the jobs
        whose crop failed."""
        while self.split and self._latents and self._book.free(self.heat) > 0:
            latents, crops = self._latents.popleft()
            self._submit(self.heat, latents, crops)
        failed: list[PoseOutcome] = []
        while self._crops and self.room():
            if len(self._crops) < self.batch and more_coming:
                break  # wait for a full batch
            failed += self._send_batch()
        return failed

    def _crop_of(self, job: PoseJob) -> np.ndarray:
        """The job's crop [h,w,3], made once for both variants."""
        if job.crop is None:
            job.crop = self.estimator.preprocess(job.image, job.box[None])[0]
        crop = job.crop
        job.sent += 1
        if job.sent == len(self.variants):
            job.crop = None
        return crop

    def _send_batch(self) -> list[PoseOutcome]:
        items, crops, failed = [], [], []
        t = time.perf_counter()
        while self._crops and len(items) < self.batch:
            item = self._crops.popleft()
            if item.job.done:
                continue  # its other variant failed
            try:
                crop = self._crop_of(item.job)
            except SDPoseError as exc:
                failed.append(self._fail(item.job, f"crop failed: {exc}", "crop"))
                continue
            items.append(item)
            crops.append(crop[:, ::-1] if item.flipped else crop)
        self._lat["crop"].append(_ms_since(t))
        if items:
            self._submit(self.first, np.stack(crops), items)
        return failed

    # ------------------------------------------------------------------ completions
    def complete(self, event: Completion) -> list[PoseOutcome]:
        """A completion of a chain stage -> the outcomes of the jobs it finished (none while a job waits for its
        other variant, or when the first stage of the split chain hands latents on)."""
        items: list[_Crop] = event.userdata
        if event.error is not None:
            return self._fail_all(items, event.error, event.stage)
        if self.split and event.stage == self.first:
            self._latents.append((event.output, items))
            return []
        return self._decode(items, event.output)

    def _pair(self, items: Sequence[_Crop], heatmaps: np.ndarray) -> "tuple[list[PoseJob], np.ndarray | None]":
        """The jobs whose every variant is back, and their heatmaps (flip-averaged) [n,K,H,W]."""
        if not self.flip_test:
            jobs = [item.job for item in items]
            keep = [i for i, job in enumerate(jobs) if not job.done]
            return [jobs[i] for i in keep], heatmaps[keep] if keep else None
        jobs = []
        for item, heat in zip(items, heatmaps):
            if item.job.done:
                continue
            item.job.heat[item.flipped] = heat
            if len(item.job.heat) == 2:
                jobs.append(item.job)
        if not jobs:
            return [], None
        plain = np.stack([job.heat.pop(False) for job in jobs])
        mirrored = np.stack([job.heat.pop(True) for job in jobs])
        return jobs, self.estimator.flip_average(plain, mirrored)

    def _decode(self, items: Sequence[_Crop], heatmaps: np.ndarray) -> list[PoseOutcome]:
        jobs, heat = self._pair(items, heatmaps)
        if not jobs:
            return []
        t = time.perf_counter()
        try:
            kpts, scores = self.estimator.postprocess(heat, np.stack([job.box for job in jobs]))
        except SDPoseError as exc:
            return [self._fail(job, f"decoding failed: {exc}", "decode") for job in jobs]
        self._lat["decode"].append(_ms_since(t))
        for job in jobs:
            job.done = True
        return [PoseOutcome(job, kpts[i], scores[i]) for i, job in enumerate(jobs)]

    def _fail(self, job: PoseJob, error: str, stage: str) -> PoseOutcome:
        job.done, job.crop = True, None
        job.heat.clear()
        return PoseOutcome(job, error=error, stage=stage)

    def _fail_all(self, items: Iterable[_Crop], error: str, stage: str) -> list[PoseOutcome]:
        """Each job of ``items`` fails once (its other variant, wherever it is, is then skipped)."""
        return [self._fail(item.job, error, stage) for item in items if not item.job.done]

    def fail_dead(self) -> list[PoseOutcome]:
        """A stage whose every request stopped answering: the work waiting for it fails."""
        out: list[PoseOutcome] = []
        if self._crops and self._book.dead(self.first):
            items = list(self._crops)
            self._crops.clear()
            out += self._fail_all(items, DEAD_STAGE.format(self.first), self.first)
        while self.split and self._latents and self._book.dead(self.heat):
            _, items = self._latents.popleft()
            out += self._fail_all(items, DEAD_STAGE.format(self.heat), self.heat)
        return out
