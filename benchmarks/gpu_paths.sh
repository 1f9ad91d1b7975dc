#!/usr/bin/env bash
# Run every GPU path of the project once and print PASS/FAIL per path, then the GPU numbers.
# CI has no GPU, so this is how a CUDA regression is found: run it on any machine with one.
#
#   bash benchmarks/gpu_paths.sh [DEVICE]        (DEVICE: cuda (default), cuda:1, or cpu to dry-run)
#
# GLUS names the command (default .venv/bin/glus-ros, else glus-ros); PYTHON the interpreter for the
# benchmarks. Small synthetic splits are generated under $WORK (default a temporary folder); the
# per-path logs stay there. Exit code: the number of failed paths.
set -u
cd "$(dirname "$0")/.."
DEVICE=${1:-cuda}
if [ -x .venv/bin/glus-ros ]; then GLUS=${GLUS:-.venv/bin/glus-ros}; PYTHON=${PYTHON:-.venv/bin/python}
else GLUS=${GLUS:-glus-ros}; PYTHON=${PYTHON:-python3}; fi
WORK=${WORK:-$(mktemp -d -t glus_gpu.XXXXXX)}
mkdir -p "$WORK"
DATA=$WORK/data
FAILED=0

check() { # name, command...: run it, log it, one summary line
  local name=$1 t=$EPOCHREALTIME result=PASS
  shift
  "$@" > "$WORK/$name.log" 2>&1 || result=FAIL
  printf '%s %-22s %6.1f s\n' "$result" "$name" "$(awk "BEGIN{print $EPOCHREALTIME - $t}")"
  if [ $result = FAIL ]; then
    FAILED=$((FAILED + 1))
    grep -v '^INFO' "$WORK/$name.log" | tail -5 | sed 's/^/    /'
  fi
}

echo "device $DEVICE, logs in $WORK"
$GLUS synth --out "$DATA" --videos 6 --seed 1001 --split valid > "$WORK/synth.log" 2>&1 &
$GLUS synth --out "$DATA" --videos 30 --seed 1 --split train >> "$WORK/synth.log" 2>&1 &
wait
VIDEO=$DATA/valid/JPEGImages/synth_00000
EXPR="the object ending up on the left"
check eval "$GLUS" eval --model glus-tiny-synth --data "$DATA" --split valid --device "$DEVICE" --out "$WORK/eval"
check eval_key_frame "$GLUS" eval --model glus-tiny-synth --data "$DATA" --split valid --device "$DEVICE" --key-frame \
  --out "$WORK/eval_kf"
check eval_points "$GLUS" eval --model glus-tiny-synth --data "$DATA" --split valid --device "$DEVICE" --points \
  --out "$WORK/eval_points"
check segment_bf16 "$GLUS" segment --video "$VIDEO" --expr "$EXPR" --device "$DEVICE" --dtype bf16 --out "$WORK/seg"
check segment_points "$GLUS" segment --video "$VIDEO" --expr "$EXPR" --device "$DEVICE" --points --out "$WORK/seg_p"
check segment_region "$GLUS" segment --video "$VIDEO" --region 10,10,40,40 --device "$DEVICE" --out "$WORK/seg_r"
check ask "$GLUS" ask --video "$VIDEO" --question "what is on the left?" --device "$DEVICE" --out "$WORK/ask"
TRAIN=(--no-progress -o device="${DEVICE%%:*}" -o optim.max_steps=6 -o eval.every_steps=6 -o save_every=3
       -o "datasets=[{kind: synth, root: $DATA, split: train}]"
       -o "eval.dataset={kind: synth, root: $DATA, split: valid, max_videos: 2}"
       -o key_frame.expressions=8 -o key_frame.epochs=1)
check train_bf16 "$GLUS" train --config training/synth_tiny.yaml --out "$WORK/t1" "${TRAIN[@]}" \
  -o mixed_precision=bf16 --stop-at-step 3
check train_resume "$GLUS" train --config training/synth_tiny.yaml --out "$WORK/t1" "${TRAIN[@]}" \
  -o mixed_precision=bf16 --resume
check train_grounding "$GLUS" train --config training/experiments/synth_tiny_grounding.yaml --out "$WORK/t2" "${TRAIN[@]}" \
  -o model=glus-tiny-synth -o vision_pretrain.steps=10 -o vision_pretrain.held_out=5 -o vision_pretrain.eval_every=5
echo "== numbers"
check bench_segment "$PYTHON" benchmarks/segment_speed.py --device "$DEVICE" --frames 32
grep -E 'ms' "$WORK/bench_segment.log" | sed 's/^/    /'
for dtype in fp32 bf16; do
  check "bench_stream_$dtype" "$PYTHON" benchmarks/stream_latency.py --device "$DEVICE" --dtype $dtype --seconds 6
  grep -E 'latency' "$WORK/bench_stream_$dtype.log" | sed 's/^/    /'
done
echo "$FAILED path(s) failed"
exit "$FAILED"
