"""I/O: frame sources and capture (files, cameras, RTSP/HTTP, MJPEG), sinks (JSONL, OpenPose, video, images),
COCO results and drawing. numpy, opencv, pyyaml only."""
