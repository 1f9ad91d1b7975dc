#!/usr/bin/env bash
# Reproduce the embedded default model (models/glus-tiny-synth) on CPU, in four recipe stages:
#  1. training/synth_tiny.yaml: the tiny architecture from scratch on 600 generated videos (~1 h);
#  2. training/synth_tiny_grounding.yaml: vision pre-training on 2,000 generated videos, then the
#     grounding map and a finer vision input, end to end, then the key-frame selector (~1 h);
#  3. training/synth_tiny_spatial.yaml: the grounding map's spatial terms (position and relation words)
#     and its pick term, end to end on the same videos, then the key-frame selector (~25 min);
#  4. training/synth_tiny_spatial_round2.yaml: a second round of stage 3 on its output (~15 min).
# The data is generated under data/ on first use; runs land in runs/. A stage is skipped when its
# model (runs/<name>/model) exists. Extra arguments go to every stage, e.g. --no-progress.
set -euo pipefail
cd "$(dirname "$0")/.."
GLUS=${GLUS:-.venv/bin/glus-ros}
if [ ! -f runs/synth_tiny/model/model.safetensors ]; then
  "$GLUS" train --config training/synth_tiny.yaml "$@"
fi
if [ ! -f runs/synth_tiny_grounding/model/model.safetensors ]; then
  "$GLUS" train --config training/synth_tiny_grounding.yaml "$@"
fi
if [ ! -f runs/synth_tiny_spatial/model/model.safetensors ]; then
  "$GLUS" train --config training/synth_tiny_spatial.yaml "$@"
fi
"$GLUS" train --config training/synth_tiny_spatial_round2.yaml --export models/glus-tiny-synth --export-dtype fp16 "$@"
