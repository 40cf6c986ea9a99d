#!/usr/bin/env bash
# READ-13B, both stages: stage 1 from LLaVA-1.5-13B, then stage 2 from stage 1's best-on-validation checkpoint.
#   Env: READ_DATA_ROOT, READ_LLAVA_13B, READ_SAM_CKPT, NUM_GPUS or HOSTFILE (+ MASTER_ADDR, READ_SHARED_OUTPUT=1;
#   see scripts/_launch.sh). READ_13B_STAGE1: the checkpoint stage 2 starts from (default
#   runs/read_13b_stage1/checkpoints/best, where stage 1 keeps its best-cIoU checkpoint; a run directory means its
#   latest checkpoint). Extra arguments go to both stages.
set -euo pipefail
here="$(dirname "$0")"
"$here/_launch.sh" configs/train/read_13b_reasonseg_stage1.yaml "$@"
READ_13B_STAGE1="${READ_13B_STAGE1:-runs/read_13b_stage1/checkpoints/best}" \
  "$here/_launch.sh" configs/train/read_13b_reasonseg_stage2.yaml "$@"
