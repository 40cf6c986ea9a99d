#!/usr/bin/env bash
# Shared launcher: deepspeed on NUM_GPUS local GPUs (default: all visible), or on the nodes of HOSTFILE.
# Usage: scripts/_launch.sh CONFIG [key=value ...]
#
# One node:  NUM_GPUS (default: every visible GPU), MASTER_PORT (optional).
# Several nodes (HOSTFILE set; docs/TRAINING.md, "Multi-node"):
#   HOSTFILE            deepspeed hostfile, one "hostname slots=N" line per node (relative: to the current
#                       directory)
#   MASTER_ADDR         address of the first node, reachable from every node (required)
#   MASTER_PORT         rendezvous port (default 29500)
#   READ_SHARED_OUTPUT  must be 1: the run's output_dir is the same shared path on every node (required)
#   Every READ_* and HF_* variable, and PYTHONPATH, is written to .deepspeed_env (or $DS_ENV_FILE) in the
#   repository root, which the deepspeed launcher exports on every node; the other nodes would otherwise fall back
#   to the configs' defaults.
set -euo pipefail
# A relative HOSTFILE is taken from the directory the script is run in, not the repository root.
if [ -n "${HOSTFILE:-}" ] && [ "${HOSTFILE#/}" = "$HOSTFILE" ]; then HOSTFILE="$PWD/$HOSTFILE"; fi
die() { echo "error: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: $0 CONFIG [key=value ...]"
cd "$(dirname "$0")/.."
config="$1"; shift

if [ -n "${HOSTFILE:-}" ]; then
  [ -f "$HOSTFILE" ] || die "HOSTFILE=$HOSTFILE is not a file"
  [ -n "${MASTER_ADDR:-}" ] || die "multi-node launch (HOSTFILE set) needs MASTER_ADDR: the address of the first" \
    "node of $HOSTFILE, reachable from every node"
  master_port="${MASTER_PORT:-29500}"
  [[ "$master_port" =~ ^[0-9]+$ ]] || die "MASTER_PORT=$master_port is not a port number"
  if [ "${READ_SHARED_OUTPUT:-}" != "1" ]; then
    die "multi-node launch needs READ_SHARED_OUTPUT=1, your confirmation that output_dir is the same shared path" \
      "on every node: rank 0 writes the checkpoints and every rank reads them back on resume."
  fi
  # The launcher reads KEY=VALUE lines (split at the first "=", value stripped) and quotes a value itself, in double
  # quotes, for the remote shell: a value must be written raw (quotes of ours would arrive as literal characters),
  # and a value the remote shell would alter inside double quotes, or that breaks the line format, is refused.
  env_file="${DS_ENV_FILE:-.deepspeed_env}"
  names=()
  for name in ${!READ_@} ${!HF_@}; do names+=("$name"); done
  if [ -n "${PYTHONPATH:-}" ]; then names+=(PYTHONPATH); fi
  lines=""
  for name in "${names[@]}"; do
    value="${!name}"
    # The launcher itself exports PYTHONPATH as <repository root>:PYTHONPATH; keep that value.
    if [ "$name" = PYTHONPATH ]; then value="$(pwd -P):$value"; fi
    case "$value" in
      *$'\n'* | *$'\r'*) die "$name contains a newline; it cannot be passed to the other nodes" ;;
      *'"'* | *'$'* | *'`'* | *\\*)
        die "$name contains one of \" \$ \` \\ which the remote shell would alter; it cannot be passed to the" \
          "other nodes" ;;
      [[:space:]]* | *[[:space:]]) die "$name has leading or trailing white space, which the launcher strips" ;;
    esac
    lines+="$name=$value"$'\n'
  done
  # Lines of another origin (NCCL_*, ...) in an existing file are kept; ours are replaced.
  kept=""
  if [ -f "$env_file" ]; then
    kept="$(grep -Ev '^[[:space:]]*(READ_[A-Za-z0-9_]*|HF_[A-Za-z0-9_]*|PYTHONPATH)=' "$env_file" | grep -v '^[[:space:]]*$' || true)"
    if [ -n "$kept" ]; then kept+=$'\n'; fi
  fi
  (umask 077; printf '%s%s' "$kept" "$lines" > "$env_file.tmp")  # may hold HF_TOKEN: owner-only
  mv -f "$env_file.tmp" "$env_file"
  echo "multi-node: $env_file exports ${names[*]:-nothing} on every node; master $MASTER_ADDR:$master_port" >&2
  exec deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$master_port" \
    train.py --config "$config" "$@"
fi
: "${NUM_GPUS:=$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
exec deepspeed --num_gpus "$NUM_GPUS" ${MASTER_PORT:+--master_port "$MASTER_PORT"} train.py --config "$config" "$@"
