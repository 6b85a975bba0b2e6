#!/usr/bin/env bash
# The main job on a fresh machine: set up ./.venv, write a tiny synthetic checkpoint in the public
# SDPose layout (random weights: this demonstrates the chain, not pose accuracy), convert it to an
# INT8 model folder calibrated on the bundled calibration set, and run the edge runtime on the bundled
# multi-person sample video. Real users pass their own checkpoint folder instead (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WORK=${SDPOSE_DEMO_DIR:-work_dirs/demo}
mkdir -p "$WORK"
if [ ! -f "$WORK/checkpoint/decoder/decoder.safetensors" ]; then
    .venv/bin/sdpose-convert make-synthetic "$WORK/checkpoint" --size tiny --scheme wholebody
fi
rm -rf "$WORK/models" "$WORK/out"
.venv/bin/sdpose-convert convert --checkpoint "$WORK/checkpoint" --calib calib_data/default \
    --precision int8 --out "$WORK/models"
.venv/bin/sdpose-edge run --models "$WORK/models" --source samples/people.mp4 \
    --detections samples/people_detections.json --output "$WORK/out" --openpose --save-video
echo
echo "Model folder (IRs + report.md): $WORK/models"
echo "Results: $WORK/out/predictions.jsonl, $WORK/out/openpose/, $WORK/out/overlay.mp4, $WORK/out/summary.json"
