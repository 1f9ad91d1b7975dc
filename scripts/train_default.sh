#!/usr/bin/env bash
# Reproduce the embedded default model (models/glus-tiny-synth) on CPU, in two recipe stages:
#  1. training/synth_tiny.yaml: the tiny architecture from scratch on 600 generated videos (~1 h);
#  2. training/synth_tiny_grounding.yaml: vision pre-training on 2,000 generated videos, then the
#     grounding map and a finer vision input, end to end, then the key-frame selector (~1 h).
# The data is generated under data/ on first use; runs land in runs/. Stage 1 is skipped when its
# model (runs/synth_tiny/model) exists. Extra arguments go to both stages, e.g. --no-progress.
set -euo pipefail
cd "$(dirname "$0")/.."
GLUS=${GLUS:-.venv/bin/glus-ros}
if [ ! -f runs/synth_tiny/model/model.safetensors ]; then
  "$GLUS" train --config training/synth_tiny.yaml "$@"
fi
"$GLUS" train --config training/synth_tiny_grounding.yaml --export models/glus-tiny-synth --export-dtype fp16 "$@"
