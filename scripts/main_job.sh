#!/usr/bin/env bash
# The main job on the embedded default model, CPU only: generate a small synthetic referring-video
# set, segment one clip with `glus-ros segment`, then score the model on the whole set with
# `glus-ros eval --model`. Outputs land in out/main_job/.
set -euo pipefail
cd "$(dirname "$0")/.."
GLUS=.venv/bin/glus-ros
OUT=out/main_job
rm -rf "$OUT"
"$GLUS" synth --out "$OUT/data" --videos 4 --seed 20261122 --split valid
read -r VIDEO EXPR < <(.venv/bin/python - "$OUT/data/valid/meta_expressions.json" <<'PY'
import json, sys
videos = json.load(open(sys.argv[1]))["videos"]
name = sorted(videos)[0]
first = videos[name]["expressions"][sorted(videos[name]["expressions"], key=int)[0]]
print(name, first["exp"])
PY
)
echo "segmenting $VIDEO: \"$EXPR\""
"$GLUS" segment --video "$OUT/data/valid/JPEGImages/$VIDEO" --expr "$EXPR" --out "$OUT/segment/$VIDEO"
"$GLUS" eval --model tiny --data "$OUT/data" --split valid --out "$OUT/eval_pred"
echo "main job done: masks + overlay in $OUT/segment/$VIDEO, scores in $OUT/eval_pred/eval_valid.csv"
