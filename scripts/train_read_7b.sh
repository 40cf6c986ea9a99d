#!/usr/bin/env bash
# READ-7B on ReasonSeg from SESAME-7B. Paths come from the environment, never from this file:
#   READ_DATA_ROOT (datasets), READ_SESAME_7B (merged SESAME-LLaVA-v1.5-7B folder), READ_LLAVA_7B (llava-hf base),
#   NUM_GPUS or HOSTFILE (+ MASTER_ADDR, READ_SHARED_OUTPUT=1; see scripts/_launch.sh). Extra arguments are config
#   overrides, e.g. train.lr=3e-4 train.max_steps=4000.
exec "$(dirname "$0")/_launch.sh" configs/train/read_7b_reasonseg.yaml "$@"
