"""Workstation-side conversion of SDPose checkpoints into OpenVINO IR (needs torch, diffusers, nncf)."""
