#!/usr/bin/env bash
# READ-7B referring segmentation (refCOCO family + FP-RefCOCO + R-RefCOCO + VQA) from LLaVA-1.5-7B.
#   Env: READ_DATA_ROOT, READ_LLAVA_7B, READ_SAM_CKPT, NUM_GPUS or HOSTFILE.
exec "$(dirname "$0")/_launch.sh" configs/train/read_7b_referseg.yaml "$@"
