"""Calibration sets for the INT8 passes: person crops (pose IRs) and frames (detector IR).

``sdpose-convert calib`` builds one (:func:`calib_data.builder.build_calibration_set`);
:func:`load_calibration_set` reads one (``"default"`` = the small set shipped in ``calib_data/default``).
"""
from .builder import BuildParams, build_calibration_set
from .reader import CalibrationSet, default_calibration_dir, load_calibration_set

__all__ = ["BuildParams", "CalibrationSet", "build_calibration_set", "default_calibration_dir",
           "load_calibration_set"]
