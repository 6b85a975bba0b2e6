"""The typed contract of a pose model folder: what the converter writes into ``rt_info`` and the runtime reads.

:class:`PoseModelInfo` is the metadata of the IRs of the pose chain (``vae_encoder``, ``pose``, ``vae_pose``:
they share every field but ``kind``). The exporter builds one and writes :meth:`PoseModelInfo.to_rt_info`;
``ModelFolder.pose_info`` reads it back with :meth:`PoseModelInfo.from_rt_info`, which checks the fields the
runtime needs and names the IR when one is missing or wrong. Fields the runtime does not interpret
(versions, preprocessing, quantization records, ...) travel in ``extra``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from edge_runtime.model.codec import DEFAULT_CODEC, blur_kernel_from_codec
from edge_runtime.errors import ModelFolderError
from edge_runtime.model.geometry import DEFAULT_PADDING

#: num_keypoints the runtime knows skeletons, flip pairs and parts for
KNOWN_KEYPOINTS = {17: "body", 133: "wholebody"}
_REQUIRED = ("scheme", "num_keypoints", "input_width", "input_height", "heatmap_width", "heatmap_height")


@dataclasses.dataclass(frozen=True)
class PoseModelInfo:
    """rt_info ``sdpose`` metadata of one IR of the pose chain. Sizes are px; ``*_size_wh`` give (w, h)."""

    kind: str
    scheme: str
    num_keypoints: int
    input_height: int
    input_width: int
    heatmap_height: int
    heatmap_width: int
    bbox_padding: float = DEFAULT_PADDING
    codec: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_CODEC))
    precision: str = "fp32"
    quantized: bool = False
    preset: str | None = None
    token_downsample: int = 1
    token_downsample_levels: tuple[int, ...] = ()
    vae_token_downsample: int = 1
    checkpoint_sha256: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def input_size_wh(self) -> tuple[int, int]:
        return self.input_width, self.input_height

    @property
    def heatmap_size_wh(self) -> tuple[int, int]:
        return self.heatmap_width, self.heatmap_height

    @property
    def blur_kernel_size(self) -> int:
        """The DARK blur kernel the codec record asks for."""
        return blur_kernel_from_codec(dict(self.codec))

    @classmethod
    def from_rt_info(cls, meta: Mapping[str, Any], source: str = "<model>") -> "PoseModelInfo":
        """Typed info from :func:`edge_runtime.model.metadata.read_metadata` output; ModelFolderError naming
        ``source`` when a required field is missing, a size is not positive, K is unknown or the codec is not
        one the runtime decodes. ``bbox_padding`` defaults to 1.25 (folders from before it was recorded)."""
        missing = [f for f in _REQUIRED if f not in meta]
        if missing:
            raise ModelFolderError(f"{source}: rt_info sdpose metadata lacks field(s) {missing}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in meta.items() if k in names}
        known.setdefault("kind", "pose")
        try:
            for key in ("num_keypoints", "input_height", "input_width", "heatmap_height", "heatmap_width",
                        "token_downsample", "vae_token_downsample"):
                if key in known:
                    known[key] = int(known[key])
            if "bbox_padding" in known:
                known["bbox_padding"] = float(known["bbox_padding"])
            known["token_downsample_levels"] = tuple(int(v) for v in known.get("token_downsample_levels") or ())
        except (TypeError, ValueError) as exc:
            raise ModelFolderError(f"{source}: rt_info sdpose field is not a number ({exc})") from exc
        info = cls(**known, extra={k: v for k, v in meta.items() if k not in names})
        w, h, k = info.input_width, info.input_height, info.num_keypoints
        hw, hh = info.heatmap_width, info.heatmap_height
        if min(w, h, k, hw, hh) <= 0:
            raise ModelFolderError(f"{source}: sizes in rt_info must be positive (input {w}x{h}, heatmap "
                                   f"{hw}x{hh}, num_keypoints {k})")
        if k not in KNOWN_KEYPOINTS:
            raise ModelFolderError(f"{source}: num_keypoints {k} is neither 17 (SDPose-Body, COCO) nor 133 "
                                   "(SDPose-Wholebody, COCO-WholeBody); the runtime's skeletons, flip pairs and "
                                   "parts know only these")
        if not info.bbox_padding > 0:
            raise ModelFolderError(f"{source}: rt_info bbox_padding {info.bbox_padding} must be positive")
        blur_kernel_from_codec(dict(info.codec), source)
        return info

    def to_rt_info(self) -> dict[str, Any]:
        """The flat field -> value mapping :func:`edge_runtime.model.metadata.write_metadata` stores."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["codec"] = dict(self.codec)
        out["token_downsample_levels"] = list(self.token_downsample_levels)
        out.update(self.extra)
        return {k: v for k, v in out.items() if v is not None}


#: rt_info kind of the person detector IR
DETECTOR_KIND = "detector"
#: letterbox border value (ultralytics' LetterBox)
DEFAULT_PAD_VALUE = 114


@dataclasses.dataclass(frozen=True)
class DetectorModelInfo:
    """rt_info ``sdpose`` metadata of the person detector IR (letterboxed square input, YOLO head output)."""

    input_height: int
    input_width: int
    class_names: tuple[str, ...] = ()
    person_class: int = 0
    pad_value: int = DEFAULT_PAD_VALUE
    precision: str = "fp32"
    quantized: bool = False
    kind: str = DETECTOR_KIND
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_rt_info(cls, meta: Mapping[str, Any], source: str = "<model>") -> "DetectorModelInfo":
        """Typed info; ModelFolderError naming ``source`` for another kind, a person class outside the class
        names or malformed fields. The input size is taken from the IR's shape when the metadata lacks it."""
        if meta.get("kind") != DETECTOR_KIND:
            raise ModelFolderError(f"{source}: rt_info sdpose/kind is {meta.get('kind')!r}, expected "
                                   f"'{DETECTOR_KIND}'")
        letterbox = meta.get("letterbox") or {}
        try:
            info = cls(input_height=int(meta.get("input_height", 0)), input_width=int(meta.get("input_width", 0)),
                       class_names=tuple(str(n) for n in meta.get("class_names") or ()),
                       person_class=int(meta.get("person_class", 0)),
                       pad_value=int(letterbox.get("pad_value", DEFAULT_PAD_VALUE)) if isinstance(letterbox, Mapping)
                       else DEFAULT_PAD_VALUE,
                       precision=str(meta.get("precision", "fp32")), quantized=bool(meta.get("quantized", False)),
                       extra=_detector_extra(meta))
        except (TypeError, ValueError) as exc:
            raise ModelFolderError(f"{source}: rt_info sdpose detector field is malformed ({exc})") from exc
        if info.class_names and not 0 <= info.person_class < len(info.class_names):
            raise ModelFolderError(f"{source}: person_class {info.person_class} is outside the "
                                   f"{len(info.class_names)} class names")
        return info

    def to_rt_info(self) -> dict[str, Any]:
        """The flat field -> value mapping :func:`edge_runtime.model.metadata.write_metadata` stores."""
        out: dict[str, Any] = {"kind": self.kind, "input_height": self.input_height, "input_width": self.input_width,
                               "class_names": list(self.class_names), "person_class": self.person_class,
                               "num_classes": len(self.class_names), "precision": self.precision,
                               "quantized": self.quantized}
        out.update(self.extra)
        letterbox = dict(out.get("letterbox") or {})
        letterbox["pad_value"] = self.pad_value
        out["letterbox"] = letterbox
        return out


_DETECTOR_FIELDS = ("kind", "input_height", "input_width", "class_names", "person_class", "num_classes",
                    "precision", "quantized")


def _detector_extra(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The detector fields the runtime does not interpret (the letterbox record without its pad value)."""
    extra = {k: v for k, v in meta.items() if k not in _DETECTOR_FIELDS}
    if isinstance(extra.get("letterbox"), Mapping):
        extra["letterbox"] = {k: v for k, v in extra["letterbox"].items() if k != "pad_value"}
    return extra
