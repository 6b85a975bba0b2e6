#!/usr/bin/env bash
# The main job on a fresh machine: set up ./.venv, convert the bundled proxy checkpoint (a tiny
# SDPose-architecture model trained on drawn figures, in the exact public checkpoint layout) to an INT8
# model folder calibrated on drawn-figure crops, run the edge runtime on the bundled figures video, and
# score the keypoints against the video's exact ground truth. Real users pass their own checkpoint folder
# instead (see README); the proxy exists because no real weights can be downloaded here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WORK=${SDPOSE_DEMO_DIR:-work_dirs/demo}
PROXY=samples/proxy
SIZE=$(.venv/bin/python -c "import json; h, w = json.load(open('$PROXY/proxy.json'))['input_size_hw']; print(f'{h}x{w}')")
mkdir -p "$WORK"
rm -rf "$WORK/models" "$WORK/out" "$WORK/calib" "$WORK/calib_images"
# calibration crops from drawn figures (another seed than the video: calibration never sees the test frames)
.venv/bin/python scripts/make_figures_video.py --calib-images "$WORK/calib_images" --count 32
.venv/bin/sdpose-convert calib --images "$WORK/calib_images" --detections "$WORK/calib_images/detections.json" \
    --input-size "$SIZE" --out "$WORK/calib"
.venv/bin/sdpose-convert convert --checkpoint "$PROXY" --calib "$WORK/calib" --precision int8 \
    --input-size "$SIZE" --out "$WORK/models"
.venv/bin/sdpose-edge run --models "$WORK/models" --source samples/figures.mp4 \
    --detections samples/figures_detections.json --output "$WORK/out" --openpose --save-video
.venv/bin/python scripts/score_figures.py "$WORK/out/predictions.jsonl" --gt samples/figures_gt.npz
echo
echo "Model folder (IRs + report.md): $WORK/models"
echo "Results: $WORK/out/overlay.mp4 (skeletons drawn), $WORK/out/predictions.jsonl, $WORK/out/openpose/, $WORK/out/summary.json"
