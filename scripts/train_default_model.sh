#!/usr/bin/env bash
# Reproduce the embedded default model models/glus-tiny-synth on CPU (data generated on first use):
#  1. training/synth_tiny.yaml            the tiny architecture from scratch on the synthetic benchmark
#  2. training/synth_tiny_grounding.yaml  + grounding map, finer vision input (continues 1)
#  3. training/synth_tiny_points.yaml     + attending point head, counting questions (continues 2);
#                                          key-frame selector; exported in fp16 as the default
# Each stage resumes from its last checkpoint when re-run (--resume).
set -euo pipefail
cd "$(dirname "$0")/.."
GLUS=.venv/bin/glus-ros
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
"$GLUS" train --config training/synth_tiny.yaml --resume
"$GLUS" train --config training/synth_tiny_grounding.yaml --resume
"$GLUS" train --config training/synth_tiny_points.yaml --resume --export models/glus-tiny-synth --export-dtype fp16
