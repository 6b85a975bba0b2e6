"""Errors raised for bad user input (files, fields, shapes).

Every message names the file or field and says what was expected, so that a user
never has to read a traceback from deep inside OpenVINO or OpenCV.
"""


class SDPoseError(Exception):
    """Base class of every error sdpose-edge raises on purpose."""


class ModelFolderError(SDPoseError):
    """The model folder, an IR in it, or its metadata is missing or malformed."""


class InputError(SDPoseError):
    """An input file (image, video, detections JSON, config) is missing or malformed."""
