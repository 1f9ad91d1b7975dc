#!/usr/bin/env bash
# The main job on the embedded default model, CPU only, no camera, no GPU:
#  1. `glus-ros demo`: a synthetic RGB-D camera streams at 30 Hz, the tracker (lifecycle node, default
#     model) receives a referring command and publishes masks / points; overlay video, per-result JSON
#     log and latency summary land in out/main_job/demo/.
#  2. `glus-ros eval --model`: the default model scored (J, F, J&F) on a small synthetic split drawn
#     with a seed never used in training.
set -euo pipefail
cd "$(dirname "$0")/.."
GLUS=.venv/bin/glus-ros
OUT=out/main_job
MODEL=glus-tiny-synth  # the embedded default (glus_ros.model.config.DEFAULT_MODEL)
rm -rf "$OUT"
"$GLUS" demo --out "$OUT/demo"
"$GLUS" synth --out "$OUT/data" --videos 4 --seed 20261122 --split valid
"$GLUS" eval --model "$MODEL" --data "$OUT/data" --split valid --out "$OUT/eval_pred"
echo "main job done: $OUT/demo/{overlay.mp4,results.jsonl,summary.json}, scores in $OUT/eval_pred/eval_valid.csv"
