#!/usr/bin/env bash
# Shared launcher: deepspeed on NUM_GPUS local GPUs (default: all visible), or on the nodes of HOSTFILE.
# Usage: scripts/_launch.sh CONFIG [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config="$1"; shift
if [ -n "${HOSTFILE:-}" ]; then
  exec deepspeed --hostfile "$HOSTFILE" ${MASTER_PORT:+--master_port "$MASTER_PORT"} train.py --config "$config" "$@"
fi
: "${NUM_GPUS:=$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
exec deepspeed --num_gpus "$NUM_GPUS" ${MASTER_PORT:+--master_port "$MASTER_PORT"} train.py --config "$config" "$@"
