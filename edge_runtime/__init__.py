"""sdpose-edge device runtime: openvino, numpy, opencv and pyyaml only (never torch, never convert/).

Public API::

    udp_warp_matrix(bbox_xyxy, input_size=(w, h), padding=1.25) -> [2,3] image->crop
    decode_heatmaps(heatmaps, input_size=(w, h)) -> (keypoints, scores)   # crop-input px
    keypoints_to_image(keypoints, bbox_xyxy, input_size=(w, h), padding=1.25)  # crop px -> image px
    PoseEstimator(models_dir)(image_bgr, boxes_xyxy) -> (keypoints [N,K,2], scores [N,K])
"""
from edge_runtime.model.codec import decode_heatmaps
from edge_runtime.errors import InputError, ModelFolderError, SDPoseError
from edge_runtime.model.estimator import PoseEstimator
from edge_runtime.model.models import CompileOptions, ModelFolder
from edge_runtime.model.geometry import bbox_xyxy_to_center_scale, keypoints_to_image, udp_warp_matrix, warp_crop

__all__ = [
    "CompileOptions",
    "ModelFolder",
    "InputError",
    "ModelFolderError",
    "PoseEstimator",
    "SDPoseError",
    "bbox_xyxy_to_center_scale",
    "decode_heatmaps",
    "keypoints_to_image",
    "udp_warp_matrix",
    "warp_crop",
]
