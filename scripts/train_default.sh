#!/usr/bin/env bash
# Reproduce the embedded default model (models/glus-tiny-synth) on CPU, in twelve recipe stages:
#  1. training/synth_tiny.yaml: the tiny architecture from scratch on 600 generated videos (~1 h);
#  2. training/experiments/synth_tiny_grounding.yaml: vision pre-training on 2,000 generated videos, then the
#     grounding map and a finer vision input, end to end, then the key-frame selector (~1 h);
#  3. training/experiments/synth_tiny_spatial.yaml: the grounding map's spatial terms (position and relation words)
#     and its pick term, end to end on the same videos, then the key-frame selector (~25 min);
#  4. training/experiments/synth_tiny_spatial_round2.yaml: a second round of stage 3 on its output (~15 min);
#  5. training/experiments/synth_tiny_spatial_round3.yaml: a third round, the learning rate decaying to 5% (~15 min);
#  6. training/experiments/synth_tiny_motion.yaml: the map's motion field and relation anchors (~25 min);
#  7. training/experiments/synth_tiny_motion_round2.yaml: motion-field pre-training, then stage 6 again (~35 min);
#  8. training/experiments/synth_tiny_motion_round3.yaml: stage 6's recipe a third time, 1,000 steps (~20 min);
#  9. training/experiments/synth_tiny_motion_round4.yaml: and a fourth, at half the learning rate (~20 min);
# 10. training/experiments/synth_tiny_motion_round5.yaml: a fifth, at a third of it (~20 min);
# 11. training/experiments/synth_tiny_motion_round6.yaml: and a sixth (~20 min);
# 12. training/experiments/synth_tiny_count_adapter.yaml: the counting adapter over the frozen eleventh stage (~21 min).
# The data is generated under data/ on first use; runs land in runs/. A stage is skipped when its
# model (runs/<name>/model) exists. Extra arguments go to every stage, e.g. --no-progress.
set -euo pipefail
cd "$(dirname "$0")/.."
GLUS=${GLUS:-.venv/bin/glus-ros}
for stage in synth_tiny synth_tiny_grounding synth_tiny_spatial synth_tiny_spatial_round2 synth_tiny_spatial_round3 \
             synth_tiny_motion synth_tiny_motion_round2 synth_tiny_motion_round3 synth_tiny_motion_round4 \
             synth_tiny_motion_round5 synth_tiny_motion_round6; do
  if [ ! -f "runs/$stage/model/model.safetensors" ]; then
    recipe="training/experiments/$stage.yaml"
    [ -f "$recipe" ] || recipe="training/$stage.yaml"   # stage 1 (synth_tiny) is a user-facing recipe
    "$GLUS" train --config "$recipe" "$@"
  fi
done
"$GLUS" train --config training/experiments/synth_tiny_count_adapter.yaml --export models/glus-tiny-synth --export-dtype fp16 "$@"
