#!/usr/bin/env bash
# The GPU check: matrices/ci.yaml on a GPU with AMP (bf16 where supported), channels_last and,
# with --compile, torch.compile, beside the same matrix on the CPU and the committed CPU
# baseline (images/s and test accuracy per cell, then the regression gate). Without CUDA it
# says so in one line and exits 0. A few minutes on one GPU.
#
#   slurm/gpu-check.sh [--compile]                       # on a GPU node
#   sbatch --gpus=1 --cpus-per-task=4 --mem=16G --time=15 slurm/gpu-check.sh --compile
#SBATCH --job-name=bench-gpu-check
#SBATCH --output=bench-gpu-check-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
exec bench doctor --gpu "$@"
