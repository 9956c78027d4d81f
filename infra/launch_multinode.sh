#!/usr/bin/env bash
# Launch a training stage on several GPU nodes with the DeepSpeed launcher.
#
#   infra/launch_multinode.sh <stage> [hostfile] [extra blip args...]
#   e.g. infra/launch_multinode.sh pretrain infra/hostfile --data data/human/train data/web
#
# The engine builds its DeepSpeed config from params.yaml (train.zero_stage, train.bf16, the stage's
# batch and accumulation); infra/deepspeed/*.json show the same settings as files for other tools.
# Pick the preset with `dvc exp run -S preset=base` or edit params.yaml before launching.
set -euo pipefail
stage="${1:?stage: pretrain | finetune_captioner | finetune_filter}"
hostfile="${2:-infra/hostfile}"
shift $(( $# >= 2 ? 2 : 1 ))
nodes="$(grep -cv '^\s*\(#\|$\)' "$hostfile")"
exec python -m deepspeed.launcher.runner --hostfile "$hostfile" --num_nodes "$nodes" --no_local_rank \
  --master_port "${MASTER_PORT:-29500}" --module blip.cli "$stage" "$@"
