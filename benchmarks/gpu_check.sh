#!/usr/bin/env bash
# One prepared GPU check (see benchmarks/gpu_check.py): every trainable model on CUDA against the CPU on a tiny
# synthetic set, 2-epoch fp32/bf16 training of each, and Sports-size SASRec and MDSRec epochs in fp32 and bf16 with
# their peak GPU memory, written to OUT_DIR/gpu_check.json. Needs a python with torch (CUDA), numpy, scipy, pyyaml
# and tqdm; runs from this checkout (PYTHONPATH=src), installs nothing, downloads nothing. Sized to finish within
# about 4 minutes on one recent GPU.
#
#   benchmarks/gpu_check.sh [OUT_DIR] [--skip-sports] [--device cpu]     (default OUT_DIR: $OUT, else ./gpu_check)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check}}
shift || true
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
PYTHONPATH=src PYTHONUNBUFFERED=1 "$python" benchmarks/gpu_check.py --out "$out" "$@"
