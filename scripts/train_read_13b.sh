#!/usr/bin/env bash
# READ-13B, both stages: stage 1 from LLaVA-1.5-13B, then stage 2 from stage 1's latest checkpoint.
#   Env: READ_DATA_ROOT, READ_LLAVA_13B, READ_SAM_CKPT, NUM_GPUS or HOSTFILE. Extra arguments go to both stages.
set -euo pipefail
here="$(dirname "$0")"
"$here/_launch.sh" configs/train/read_13b_reasonseg_stage1.yaml "$@"
READ_13B_STAGE1="${READ_13B_STAGE1:-runs/read_13b_stage1}" \
  "$here/_launch.sh" configs/train/read_13b_reasonseg_stage2.yaml "$@"
