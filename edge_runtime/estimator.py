"""Top-down pose estimation with a converted model folder: (image, boxes) -> keypoints, scores.

``PoseEstimator`` follows rtmlib's split ``preprocess`` / ``infer`` / ``postprocess`` (+ ``__call__``)
so that the async pipeline can run the same three stages on its own infer queues:

- preprocess: UDP affine crop of each box (mmpose GetBBoxCenterScale padding + TopdownAffine use_udp)
  at the IR's input size, u8 BGR (the IR converts to RGB [-1, 1] itself);
- infer: ``split`` chain vae_encoder -> pose, or ``fused`` chain vae_pose;
- postprocess: UDP heatmap decoding (DARK-UDP) in crop px, then back to image px.

Decoding (``decode``): ``numpy`` (:func:`edge_runtime.codec.decode_heatmaps`, after the chain) or ``graph``
(:mod:`edge_runtime.codec_graph`: the same decoder in OpenVINO operations, appended to the pose IR when it is
loaded, so the chain's last request returns ``keypoints`` [N,K,3] crop px + score instead of heatmaps; with
``flip_test`` the chain keeps its heatmaps, averaged here, and a compiled decoder alone decodes them).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from .codec import decode_heatmaps
from .codec_graph import decoder_model, with_keypoints
from .cpu import describe_runtime
from .errors import InputError
from .model_info import PoseModelInfo
from .geometry import check_boxes_xyxy, check_padding, keypoints_to_image, udp_warp_matrix, warp_crop
from .keypoints import flip_indices
from .models import CompileOptions, ModelFolder, compile_model, fit_batch, optimal_requests, static_batch_of

logger = logging.getLogger(__name__)

#: where heatmaps are decoded (the ``decode`` setting); the default is config.SCHEMA's
DECODERS = ("graph", "numpy")


def check_image(image_bgr: Any, name: str = "image_bgr") -> np.ndarray:
    """Validate an image [H,W,3] uint8 BGR; InputError otherwise."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3 \
            or image_bgr.dtype != np.uint8 or image_bgr.shape[0] < 1 or image_bgr.shape[1] < 1:
        desc = f"{image_bgr.dtype} {image_bgr.shape}" if isinstance(image_bgr, np.ndarray) else type(image_bgr).__name__
        raise InputError(f"{name}: expected a uint8 BGR image [H,W,3], got {desc}")
    return image_bgr


def check_boxes(boxes_xyxy: Any, name: str = "boxes_xyxy") -> np.ndarray:
    """Validate boxes [N,4] or [N,5] (x1, y1, x2, y2[, score]) image px -> float32 [N,4]
    (:func:`edge_runtime.geometry.check_boxes_xyxy`; an empty input gives [0,4])."""
    if np.asarray(boxes_xyxy).size == 0:
        return np.zeros((0, 4), np.float32)
    return check_boxes_xyxy(boxes_xyxy, name, allow_score=True).reshape(-1, 4).astype(np.float32)


class PoseEstimator:
    """SDPose top-down estimator on a model folder.

    Args:
        models_dir: model folder written by ``sdpose-convert export``.
        options: compile options. Default (None): ``CompileOptions(performance_hint="LATENCY")`` (CPU,
            cache in ~/.cache/sdpose-edge), because the synchronous calls here run one request at a time
            and THROUGHPUT splits the cores into streams (on a 2-core CPU: 2 streams x 1 thread, so one
            request gets 1 thread; LATENCY: 1 stream x 2 threads). The async pipeline passes THROUGHPUT.
        chain: "split" / "fused" / None (the index's default_chain).
        core: an ``openvino.Core`` to share (one is created if None).
        flip_test: also run horizontally flipped crops and average the heatmaps (mmpose flip_mode
            'heatmap', shift_heatmap=False). Doubles the pose cost.
        max_batch: largest batch of crops sent through one synchronous inference in :meth:`infer`.
            Default 1: at full size (1024x768, bf16, 2-core CPU) a batch of 2 costs the same per crop
            (12.9 s vs 6.2 s) but +1.3 GB RSS per extra crop (6.5 -> 7.8 GB).
        padding: person-box padding of the crop (None: the folder's ``bbox_padding``, 1.25 as SDPose).
        decode: "numpy" (decode_heatmaps after the chain) or "graph" (OpenVINO decoder appended to the pose IR);
            None: the ``decode`` default of :data:`edge_runtime.config.SCHEMA`.

    Attributes:
        folder (ModelFolder), meta (dict: pose IR metadata), input_size (w, h) crop px,
        heatmap_size (w, h), num_keypoints K, scheme ("wholebody"/"body"), padding (bbox padding),
        chain, kinds (component kinds in chain order), compiled {kind: openvino.CompiledModel}.
    """

    def __init__(self, models_dir: str | Path, options: CompileOptions | None = None, chain: str | None = None,
                 core: ov.Core | None = None, flip_test: bool = False, max_batch: int = 1,
                 padding: float | None = None, decode: str | None = None):
        self.options = options if options is not None else CompileOptions(performance_hint="LATENCY")
        self._read_folder(models_dir, chain=chain, core=core, flip_test=flip_test, max_batch=max_batch,
                          padding=padding, decode=decode)
        #: the chain's last request returns keypoints [N,K,3] (decoder in the pose IR) instead of heatmaps
        self.chain_keypoints: bool = self.decode == "graph" and not self.flip_test and self._computes_f32()
        self.compiled: dict[str, ov.CompiledModel] = {kind: self._compile(kind) for kind in self.kinds}
        self._decoder = self._compile_decoder() if self.decode == "graph" and not self.chain_keypoints else None
        #: what the runtime computes with: device, CPU INT8 path, precision read back from each compiled model
        self.runtime_info: dict[str, Any] = describe_runtime(
            self.core, self.options.device, self.compiled, {k: self.folder.metadata(k) for k in self.kinds},
            str(self.folder.path))
        self.runtime_info["variant"] = self._variant()
        self.folder.release()  # the compiled models hold the weights now
        logger.info("pose models: %s chain %s, %s %d keypoints, input %dx%d (preset %s, token downsampling x%d, "
                    "VAE encoder x%d), device %s (%s)", self.folder.path, self.chain, self.scheme, self.num_keypoints,
                    *self.input_size, self.info.preset or "unrecorded", self.info.token_downsample,
                    self.info.vae_token_downsample, self.options.device, self.options.performance_hint)

    def _read_folder(self, models_dir: "str | Path", chain: "str | None", core: "ov.Core | None", flip_test: bool,
                     max_batch: int, padding: "float | None", decode: "str | None" = None) -> None:
        """Read the folder's index and pose metadata (shared with the remote estimator, which compiles nothing)."""
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch: expected a positive integer, got {max_batch}")
        if decode is None:
            from .config import SCHEMA

            decode = SCHEMA["decode"][0]
        if decode not in DECODERS:
            raise InputError(f"decode: expected one of {' | '.join(DECODERS)}, got {decode!r}")
        self.decode: str = decode
        self.chain_keypoints = False
        self._decoder: Any = None
        self.core = core if core is not None else ov.Core()
        self.folder = ModelFolder(models_dir, chain=chain, core=self.core)
        self.meta: dict[str, Any] = self.folder.pose_meta
        #: the typed contract (sizes, codec, padding, variant) the runtime computes with
        self.info: PoseModelInfo = self.folder.pose_info
        self.chain: str = self.folder.chain
        self.kinds: tuple[str, ...] = self.folder.kinds
        self.input_size: tuple[int, int] = self.info.input_size_wh
        self.heatmap_size: tuple[int, int] = self.info.heatmap_size_wh
        self.num_keypoints: int = self.info.num_keypoints
        self.scheme: str = self.info.scheme
        #: the folder's codec record decides the decoder (UDPHeatmap + DARK-UDP, its blur kernel)
        self.blur_kernel_size: int = self.info.blur_kernel_size
        self.padding: float = check_padding(self.info.bbox_padding if padding is None else padding)
        self.flip_test = bool(flip_test)
        self.max_batch = int(max_batch)
        self._flip_perm = flip_indices(self.num_keypoints) if self.flip_test else None

    def _compile(self, kind: str) -> ov.CompiledModel:
        """Compile component ``kind``; the last one with the decoder appended when the chain returns keypoints."""
        model = self.folder.read_model(kind)
        if self.chain_keypoints and kind == self.kinds[-1]:
            model = with_keypoints(model, self.input_size, self.blur_kernel_size, keep_heatmaps=False)
        return compile_model(self.core, model, self.options)

    def _computes_f32(self) -> bool:
        """The pose IR computes in f32 (the decoder appended to it runs at its precision; bf16/f16 would move the
        points): the hint set, else the device's default. Otherwise the decoder runs alone, in f32."""
        precision = self.options.inference_precision
        if precision is None:
            try:
                precision = str(self.core.get_property(self.options.device, "INFERENCE_PRECISION_HINT"))
            except RuntimeError:
                precision = "unknown"
        if precision not in ("f32", str(ov.Type.f32)):
            logger.info("decode graph: the pose model computes in %s, so the decoder runs as a model of its own "
                        "in f32", precision)
            return False
        return True

    def _compile_decoder(self) -> ov.CompiledModel:
        """The graph decoder alone (heatmaps -> keypoints; always f32), for heatmaps averaged or received here."""
        import dataclasses

        model = decoder_model(self.num_keypoints, self.heatmap_size, self.input_size, self.blur_kernel_size)
        return compile_model(self.core, model, dataclasses.replace(self.options, inference_precision="f32"))

    def _variant(self) -> dict[str, Any]:
        """Which variant of the model this folder is (recorded at conversion): crop-size preset ("full",
        "balanced", "fast", "custom"; None for folders from before presets) and attention token downsampling."""
        return {"preset": self.info.preset, "input_size_hw": [self.input_size[1], self.input_size[0]],
                "heatmap_size_hw": [self.heatmap_size[1], self.heatmap_size[0]],
                "token_downsample": self.info.token_downsample,
                "token_downsample_levels": list(self.info.token_downsample_levels),
                "vae_token_downsample": self.info.vae_token_downsample}

    # ------------------------------------------------------------------ helpers for async users
    def input_name(self, kind: str) -> str:
        """Name of the (single) input of compiled component ``kind`` ("image" or "latent")."""
        return self.compiled[kind].input(0).get_any_name()

    def output_name(self, kind: str) -> str:
        """Name of the (single) output of compiled component ``kind`` ("latent" or "heatmaps")."""
        return self.compiled[kind].output(0).get_any_name()

    def num_requests(self, kind: str) -> int:
        """Infer requests to create for ``kind`` (options.num_requests or the device's optimum)."""
        return optimal_requests(self.compiled[kind], self.options)

    def flip_back(self, heatmaps_flipped: np.ndarray) -> np.ndarray:
        """Heatmaps [N,K,H,W] of horizontally flipped crops -> heatmaps in the unflipped crop frame
        (mirror along W and swap left/right channels; no shift, as UDP needs none)."""
        perm = self._flip_perm if self._flip_perm is not None else flip_indices(self.num_keypoints)
        return np.ascontiguousarray(heatmaps_flipped[:, perm, :, ::-1])

    def flip_average(self, heatmaps: np.ndarray, heatmaps_flipped: np.ndarray) -> np.ndarray:
        """Flip test: heatmaps [N,K,H,W] of crops and of the same crops mirrored -> their average."""
        return 0.5 * (heatmaps + self.flip_back(heatmaps_flipped))

    # ------------------------------------------------------------------ the three stages
    def preprocess(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """image_bgr [H,W,3] u8, boxes_xyxy [N,4|5] image px -> crops [N,h,w,3] u8 BGR (UDP warp)."""
        image_bgr = check_image(image_bgr)
        boxes = check_boxes(boxes_xyxy)
        w, h = self.input_size
        crops = np.empty((len(boxes), h, w, 3), np.uint8)
        for i, box in enumerate(boxes):
            matrix = udp_warp_matrix(box, input_size=self.input_size, padding=self.padding)
            crops[i] = warp_crop(image_bgr, matrix, self.input_size)
        return crops

    def _run_chain(self, crops: np.ndarray) -> np.ndarray:
        """crops [n,h,w,3] u8 -> heatmaps [n,K,h/4,w/4] f32 through the chain (synchronous)."""
        data: np.ndarray = crops
        count = len(crops)
        for kind in self.kinds:
            compiled = self.compiled[kind]
            data = compiled(fit_batch(data, static_batch_of(compiled)))[compiled.output(0)][:count]
        return np.asarray(data, dtype=np.float32)

    def infer(self, crops: np.ndarray) -> np.ndarray:
        """crops [N,h,w,3] u8 BGR -> heatmaps [N,K,h/4,w/4] f32 (flip-averaged if flip_test), or keypoints
        [N,K,3] (crop px x, y, score) when the chain decodes (``chain_keypoints``)."""
        w, h = self.input_size
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (h, w, 3) or crops.dtype != np.uint8:
            raise InputError(f"crops: expected uint8 [N,{h},{w},3], got {crops.dtype} {crops.shape}")
        hw, hh = self.heatmap_size
        per_crop = (self.num_keypoints, 3) if self.chain_keypoints else (self.num_keypoints, hh, hw)
        out = np.empty((len(crops), *per_crop), np.float32)
        for start in range(0, len(crops), self.max_batch):
            batch = np.ascontiguousarray(crops[start:start + self.max_batch])
            heatmaps = self._run_chain(batch)
            if self.flip_test:
                flipped = self._run_chain(np.ascontiguousarray(batch[:, :, ::-1]))
                heatmaps = self.flip_average(heatmaps, flipped)
            out[start:start + len(batch)] = heatmaps
        return out

    def decode_crops(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """heatmaps [N,K,H,W] -> keypoints [N,K,2] decoded crop px, scores [N,K], with the ``decode`` decoder."""
        if self._decoder is not None:
            decoded = self._decoder(np.ascontiguousarray(heatmaps))[0]
            return decoded[..., :2], decoded[..., 2]
        return decode_heatmaps(heatmaps, input_size=self.input_size, blur_kernel_size=self.blur_kernel_size)

    def postprocess(self, heatmaps: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """heatmaps [N,K,H,W] (or the chain's keypoints [N,K,3] crop px + score when it decodes),
        boxes_xyxy [N,4|5] image px -> keypoints [N,K,2] image px, scores [N,K]."""
        boxes = check_boxes(boxes_xyxy)
        heatmaps = np.asarray(heatmaps, dtype=np.float32)
        k = self.num_keypoints
        if len(boxes) == 0:
            return np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)
        decoded = self.chain_keypoints and heatmaps.ndim == 3 and heatmaps.shape[2:] == (3,)
        if heatmaps.shape[:2] != (len(boxes), k) or not (decoded or heatmaps.ndim == 4):
            raise InputError(f"heatmaps: expected [{len(boxes)},{k},H,W] (one per box)"
                             f"{f' or keypoints [{len(boxes)},{k},3]' if self.chain_keypoints else ''}, "
                             f"got {heatmaps.shape}")
        crop_kpts, scores = (heatmaps[..., :2], heatmaps[..., 2]) if decoded else self.decode_crops(heatmaps)
        crop_kpts = np.asarray(crop_kpts, dtype=np.float32).reshape(len(boxes), k, 2)
        scores = np.asarray(scores, dtype=np.float32).reshape(len(boxes), k)
        keypoints = keypoints_to_image(crop_kpts, boxes, input_size=self.input_size, padding=self.padding)
        return np.asarray(keypoints, dtype=np.float32), scores

    def __call__(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image_bgr [H,W,3] u8, boxes_xyxy [N,4|5] image px -> keypoints [N,K,2] image px, scores [N,K]."""
        boxes = check_boxes(boxes_xyxy)
        if len(boxes) == 0:
            check_image(image_bgr)
            return np.zeros((0, self.num_keypoints, 2), np.float32), np.zeros((0, self.num_keypoints), np.float32)
        crops = self.preprocess(image_bgr, boxes)
        return self.postprocess(self.infer(crops), boxes)

    def __repr__(self) -> str:
        return (f"PoseEstimator({str(self.folder.path)!r}, chain={self.chain!r}, scheme={self.scheme!r}, "
                f"K={self.num_keypoints}, input={self.input_size[0]}x{self.input_size[1]})")
