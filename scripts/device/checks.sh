#!/usr/bin/env bash
# The GPU checks left open by issues #18 and #16, as one call of the `device` tool (about 8 minutes of its
# 10-minute command limit; the H200 image's python3 is 3.12 with torch 2.11). Prepare here first:
#
#   bash scripts/device/wheels.sh
#   run(command="bash scripts/device/checks.sh", carry=[".whl"], timeout_s=590)
#
# A dry run of the plumbing on a CPU machine (no wheels, no nvidia-smi): CHECKS_DEVICE=cpu CHECKS_NO_WHEELS=1.
#
# Writes to $OUT (at most 8 files come back): checks.log (every step's output, nvidia-smi utilisation samples
# during the training benchmark) and one JSON per benchmark; copy those to benchmarks/results/ here.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
LOG="$OUT/checks.log"
DEVICE=${CHECKS_DEVICE:-cuda}
if [ -z "${CHECKS_NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || { echo "wheel install failed" >>"$LOG"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log its output and exit status
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" >>"$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "=== $name rc=$?" | tee -a "$LOG"
}

{ nvidia-smi; python3 -c 'import torch, torchcodec; print(torch.__version__, torchcodec.__version__, torch.cuda.is_available())'; } >>"$LOG" 2>&1
# 1. nvJPEG against libjpeg-turbo (the CUDA code path of model.tensor_jpeg has never run).
step gpu-tests 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_tensor_jpeg.py
# 2. #18: end-to-end p50 at 1024 px, JPEG in and out, over the network's own (target <= 3x; server.jpeg_codec).
step load-1024-jpeg 100 python3 benchmarks/load.py --device "$DEVICE" --size 1024 --format jpeg --concurrency 1 \
  --requests 48 --bare-iterations 48 --time-limit 30 --out "$OUT/load_cuda_1024_jpeg.json"
# 3. #18: 64 clients at 512 px, unbatched then batched.
for batch in 1 8; do
  step "load-512-c64-b$batch" 100 python3 benchmarks/load.py --device "$DEVICE" --size 512 --concurrency 64 \
    --requests 384 --bare-iterations 96 --time-limit 30 --batch-max "$batch" --out "$OUT/load_cuda_512_c64_b$batch.json"
done
# 4. #18: training step speed, with GPU utilisation sampled every second while it runs (target >= 70 %).
nvidia-smi dmon -s u -d 1 >>"$OUT/dmon.txt" 2>&1 &
dmon=$!
step train-speed 120 python3 -m benchmarks.train_speed --device "$DEVICE" --sizes 192 256 --batch-size 16 --steps 20 \
  --out "$OUT/train_speed_cuda.json"
kill "$dmon" 2>/dev/null
{ echo "=== utilisation during train-speed (nvidia-smi dmon)"; cat "$OUT/dmon.txt"; } >>"$LOG" && rm -f "$OUT/dmon.txt"
# 5. #16: large outputs' speed per megapixel on CUDA.
step large-output 120 python3 -m benchmarks.large_output --backends "$( [ "$DEVICE" = cuda ] && echo cuda || echo torch)" --speed-only --out "$OUT/large_output_cuda.json"
ls -la "$OUT" "$OUT"/* >>"$LOG" 2>&1
