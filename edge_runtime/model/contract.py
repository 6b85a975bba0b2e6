"""The pose model's contract, apart from compiling: what the model folder's rt_info says the chain takes and gives
(crop size, heatmap size, keypoints, codec) and the run's choices about it (crop padding, flip test, where heatmaps
are decoded), with the stages around the chain:

- preprocess: UDP affine crop of each box (mmpose GetBBoxCenterScale padding + TopdownAffine use_udp) at the IR's
  input size, u8 BGR (the IR converts to RGB [-1, 1] itself);
- infer: the chain, run by a runner (a local compiled chain, or a KServe server), batch by batch, flip-averaged;
- postprocess: UDP heatmap decoding (DARK-UDP) in crop px, then back to image px.

:class:`PoseContract` compiles nothing; :class:`ContractRunner` is the base of both runners
(:class:`edge_runtime.model.estimator.PoseEstimator`, :class:`edge_runtime.serving.remote.RemotePoseEstimator`):
they build the contract from the folder and give it their chain (``_run_chain``) and, for ``decode="graph"`` on
heatmaps received here, the compiled decoder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.model.codec import decode_heatmaps
from edge_runtime.model.geometry import check_boxes_xyxy, check_padding, keypoints_to_image, udp_warp_matrix, warp_crop
from edge_runtime.model.keypoints import flip_indices
from edge_runtime.model.model_info import PoseModelInfo
from edge_runtime.model.models import ModelFolder

#: where heatmaps are decoded (the ``decode`` setting); the default is config.DEFAULTS'
DECODERS = ("graph", "numpy")

#: crops [n,h,w,3] u8 -> heatmaps [n,K,H,W] f32 (or keypoints [n,K,3] when the chain decodes)
ChainFn = Callable[[np.ndarray], np.ndarray]


def check_image(image_bgr: Any, name: str = "image_bgr") -> np.ndarray:
    """Validate an image [H,W,3] uint8 BGR; InputError otherwise."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3 \
            or image_bgr.dtype != np.uint8 or image_bgr.shape[0] < 1 or image_bgr.shape[1] < 1:
        desc = f"{image_bgr.dtype} {image_bgr.shape}" if isinstance(image_bgr, np.ndarray) else type(image_bgr).__name__
        raise InputError(f"{name}: expected a uint8 BGR image [H,W,3], got {desc}")
    return image_bgr


def check_boxes(boxes_xyxy: Any, name: str = "boxes_xyxy") -> np.ndarray:
    """Validate boxes [N,4] or [N,5] (x1, y1, x2, y2[, score]) image px -> float32 [N,4]
    (:func:`edge_runtime.model.geometry.check_boxes_xyxy`; an empty input gives [0,4])."""
    if np.asarray(boxes_xyxy).size == 0:
        return np.zeros((0, 4), np.float32)
    return check_boxes_xyxy(boxes_xyxy, name, allow_score=True).reshape(-1, 4).astype(np.float32)


def check_decode(decode: "str | None") -> str:
    """The ``decode`` setting (None: :data:`edge_runtime.config.DEFAULTS`); InputError if unknown."""
    if decode is None:
        from edge_runtime.config import DEFAULTS

        decode = DEFAULTS.decode
    if decode not in DECODERS:
        raise InputError(f"decode: expected one of {' | '.join(DECODERS)}, got {decode!r}")
    return decode


def check_max_batch(max_batch: Any) -> int:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InputError(f"max_batch: expected a positive integer, got {max_batch}")
    return max_batch


class PoseContract:
    """The pose chain's contract (typed :class:`PoseModelInfo` from the folder's rt_info) and the run's choices.

    Attributes: info, input_size (w, h) crop px, heatmap_size (w, h), num_keypoints K, scheme, blur_kernel_size
    (the codec's), padding (bbox padding), flip_test, max_batch (crops per chain call in :meth:`infer`), decode,
    chain_keypoints (the runner's chain returns keypoints [N,K,3] crop px + score instead of heatmaps; set by the
    runner), decoder (heatmaps [N,K,H,W] -> keypoints [N,K,3], a compiled graph decoder; None: numpy decoding).
    """

    def __init__(self, info: PoseModelInfo, padding: "float | None" = None, flip_test: bool = False,
                 max_batch: int = 1, decode: "str | None" = None) -> None:
        self.max_batch = check_max_batch(max_batch)
        self.decode: str = check_decode(decode)
        self.info = info
        self.input_size: tuple[int, int] = info.input_size_wh
        self.heatmap_size: tuple[int, int] = info.heatmap_size_wh
        self.num_keypoints: int = info.num_keypoints
        self.scheme: str = info.scheme
        #: the folder's codec record decides the decoder (UDPHeatmap + DARK-UDP, its blur kernel)
        self.blur_kernel_size: int = info.blur_kernel_size
        self.padding: float = check_padding(info.bbox_padding if padding is None else padding)
        self.flip_test = bool(flip_test)
        self._flip_perm = flip_indices(self.num_keypoints) if self.flip_test else None
        self.chain_keypoints = False
        self.decoder: "ChainFn | None" = None

    def variant(self) -> dict[str, Any]:
        """Which variant of the model this is (recorded at conversion): crop-size preset ("full", "balanced", "fast",
        "custom"; None for folders from before presets) and attention token downsampling."""
        return {"preset": self.info.preset, "input_size_hw": [self.input_size[1], self.input_size[0]],
                "heatmap_size_hw": [self.heatmap_size[1], self.heatmap_size[0]],
                "token_downsample": self.info.token_downsample,
                "token_downsample_levels": list(self.info.token_downsample_levels),
                "vae_token_downsample": self.info.vae_token_downsample}

    def flip_back(self, heatmaps_flipped: np.ndarray) -> np.ndarray:
        """Heatmaps [N,K,H,W] of horizontally flipped crops -> heatmaps in the unflipped crop frame
        (mirror along W and swap left/right channels; no shift, as UDP needs none)."""
        perm = self._flip_perm if self._flip_perm is not None else flip_indices(self.num_keypoints)
        return np.ascontiguousarray(heatmaps_flipped[:, perm, :, ::-1])

    def flip_average(self, heatmaps: np.ndarray, heatmaps_flipped: np.ndarray) -> np.ndarray:
        """Flip test: heatmaps [N,K,H,W] of crops and of the same crops mirrored -> their average."""
        return 0.5 * (heatmaps + self.flip_back(heatmaps_flipped))

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

    def infer(self, crops: np.ndarray, run_chain: ChainFn) -> np.ndarray:
        """crops [N,h,w,3] u8 BGR -> heatmaps [N,K,h/4,w/4] f32 (flip-averaged if flip_test), or keypoints
        [N,K,3] (crop px x, y, score) when the chain decodes (``chain_keypoints``); ``run_chain`` runs the chain on
        at most ``max_batch`` crops at a time."""
        w, h = self.input_size
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (h, w, 3) or crops.dtype != np.uint8:
            raise InputError(f"crops: expected uint8 [N,{h},{w},3], got {crops.dtype} {crops.shape}")
        hw, hh = self.heatmap_size
        per_crop = (self.num_keypoints, 3) if self.chain_keypoints else (self.num_keypoints, hh, hw)
        out = np.empty((len(crops), *per_crop), np.float32)
        for start in range(0, len(crops), self.max_batch):
            batch = np.ascontiguousarray(crops[start:start + self.max_batch])
            heatmaps = run_chain(batch)
            if self.flip_test:
                flipped = run_chain(np.ascontiguousarray(batch[:, :, ::-1]))
                heatmaps = self.flip_average(heatmaps, flipped)
            out[start:start + len(batch)] = heatmaps
        return out

    def decode_crops(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """heatmaps [N,K,H,W] -> keypoints [N,K,2] decoded crop px, scores [N,K], with the ``decode`` decoder."""
        if self.decoder is not None:
            decoded = self.decoder(np.ascontiguousarray(heatmaps))
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

    def estimate(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray,
                 run_chain: ChainFn) -> tuple[np.ndarray, np.ndarray]:
        """image_bgr [H,W,3] u8, boxes_xyxy [N,4|5] image px -> keypoints [N,K,2] image px, scores [N,K]."""
        boxes = check_boxes(boxes_xyxy)
        if len(boxes) == 0:
            check_image(image_bgr)
            return np.zeros((0, self.num_keypoints, 2), np.float32), np.zeros((0, self.num_keypoints), np.float32)
        return self.postprocess(self.infer(self.preprocess(image_bgr, boxes), run_chain), boxes)


def folder_contract(models_dir: "str | Path", chain: "str | None", core: Any, flip_test: bool, max_batch: int,
                    padding: "float | None", decode: "str | None") -> "tuple[ModelFolder, PoseContract]":
    """The model folder (index and pose metadata read; nothing compiled) and its :class:`PoseContract`."""
    check_max_batch(max_batch)  # bad settings are named before the folder is read
    check_decode(decode)
    folder = ModelFolder(models_dir, chain=chain, core=core)
    contract = PoseContract(folder.pose_info, padding=padding, flip_test=flip_test, max_batch=max_batch, decode=decode)
    return folder, contract


def _contract_field(name: str, doc: str) -> property:
    def get(self: "ContractRunner") -> Any:
        return getattr(self.contract, name)
    return property(get, doc=doc)


class ContractRunner:
    """What the local and the remote pose runners share: the model folder (read), its :class:`PoseContract`, and
    the synchronous API ``preprocess`` / ``infer`` / ``postprocess`` / ``__call__`` (rtmlib's split, which the
    async pipeline runs on its own backends) around the chain the subclass runs (``_run_chain``)."""

    def __init__(self, folder: Any, contract: PoseContract) -> None:
        self.folder = folder
        self.contract = contract
        self.core = folder.core
        self.meta: dict[str, Any] = folder.pose_meta
        self.chain: str = folder.chain
        self.kinds: tuple[str, ...] = folder.kinds

    info = _contract_field("info", "the typed contract (sizes, codec, padding, variant) the runtime computes with")
    input_size = _contract_field("input_size", "crop size (w, h) px")
    heatmap_size = _contract_field("heatmap_size", "heatmap size (w, h)")
    num_keypoints = _contract_field("num_keypoints", "keypoints K")
    scheme = _contract_field("scheme", "wholebody / body")
    blur_kernel_size = _contract_field("blur_kernel_size", "the codec's DARK blur kernel")
    padding = _contract_field("padding", "person-box padding of the crop")
    flip_test = _contract_field("flip_test", "flip test on")
    max_batch = _contract_field("max_batch", "crops per synchronous chain call")
    decode = _contract_field("decode", "graph | numpy")
    chain_keypoints = _contract_field("chain_keypoints", "the chain's last request returns keypoints [N,K,3]")
    _decoder = _contract_field("decoder", "the compiled graph decoder of heatmaps decoded here (or None)")

    def _run_chain(self, crops: np.ndarray) -> np.ndarray:
        """crops [n,h,w,3] u8 -> heatmaps [n,K,h/4,w/4] f32 (or keypoints [n,K,3]) through the chain."""
        raise NotImplementedError

    def _variant(self) -> dict[str, Any]:
        return self.contract.variant()

    def flip_back(self, heatmaps_flipped: np.ndarray) -> np.ndarray:
        return self.contract.flip_back(heatmaps_flipped)

    def flip_average(self, heatmaps: np.ndarray, heatmaps_flipped: np.ndarray) -> np.ndarray:
        return self.contract.flip_average(heatmaps, heatmaps_flipped)

    def preprocess(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        return self.contract.preprocess(image_bgr, boxes_xyxy)

    def infer(self, crops: np.ndarray) -> np.ndarray:
        return self.contract.infer(crops, self._run_chain)

    def decode_crops(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.contract.decode_crops(heatmaps)

    def postprocess(self, heatmaps: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.contract.postprocess(heatmaps, boxes_xyxy)

    def __call__(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image_bgr [H,W,3] u8, boxes_xyxy [N,4|5] image px -> keypoints [N,K,2] image px, scores [N,K]."""
        return self.contract.estimate(image_bgr, boxes_xyxy, self._run_chain)
