#!/usr/bin/env bash
# READ-7B referring segmentation (refCOCO family + FP-RefCOCO + R-RefCOCO + VQA) from the SESAME-7B release, as both
# commands of the official train_read.sh (configs/train/read_7b_referseg.yaml).
#   Env: READ_DATA_ROOT, READ_SESAME_7B (merged SESAME-LLaVA-v1.5-7B folder, also its tokenizer), READ_LLAVA_7B
#   (llava-hf base, for CLIP), NUM_GPUS or HOSTFILE (+ MASTER_ADDR, READ_SHARED_OUTPUT=1; see scripts/_launch.sh).
#   Extra arguments are config overrides.
exec "$(dirname "$0")/_launch.sh" configs/train/read_7b_referseg.yaml "$@"
