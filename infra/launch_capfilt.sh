#!/usr/bin/env bash
# Launch CapFilt on GPU nodes, the way training is launched. Every rank takes its rank and local GPU
# from the launcher's environment and claims input shards on the shared output folder, so ranks may
# start late, die (their shards are taken over after capfilt.lease_seconds) or be added mid-run; the
# rank that sees the last shard done writes the manifest. Re-running the same command resumes.
#
#   infra/launch_capfilt.sh deepspeed [hostfile] [blip capfilt args...]   # every GPU of every host
#   infra/launch_capfilt.sh torchrun  [blip capfilt args...]              # run on each node (below)
#   infra/launch_capfilt.sh local N   [blip capfilt args...]              # N local ranks (laptop, one node)
#
# torchrun: on each of NNODES nodes, with the same MASTER_ADDR / MASTER_PORT and that node's NODE_RANK:
#   NNODES=4 NODE_RANK=0 MASTER_ADDR=node-1 infra/launch_capfilt.sh torchrun --output /shared/scores ...
# Slurm job arrays and Kubernetes Indexed Jobs: infra/capfilt-slurm-array.sbatch, infra/capfilt-k8s-indexed-job.yaml.
#
# The output folder (and the inputs) must be the same path on every node: a shared file system.
set -euo pipefail
how="${1:?launcher: deepspeed | torchrun | local}"
shift
case "$how" in
  deepspeed)
    hostfile="${1:-infra/hostfile}"
    shift $(( $# >= 1 ? 1 : 0 ))
    nodes="$(grep -cv '^\s*\(#\|$\)' "$hostfile")"
    exec python -m deepspeed.launcher.runner --hostfile "$hostfile" --num_nodes "$nodes" --no_local_rank \
      --master_port "${MASTER_PORT:-29500}" --module blip.cli capfilt "$@" ;;
  torchrun)
    # the ranks never talk to each other (claims live on the shared folder): the rendezvous only
    # numbers them. A dead node's torchrun agent is not waited for by the job, only by torchrun's exit barrier
    exec python -m torch.distributed.run --nnodes "${NNODES:-1}" --node-rank "${NODE_RANK:-0}" \
      --nproc-per-node "${GPUS_PER_NODE:-gpu}" --master-addr "${MASTER_ADDR:-127.0.0.1}" \
      --master-port "${MASTER_PORT:-29500}" -m blip.cli capfilt "$@" ;;
  local)
    procs="${1:?local N: the number of ranks}"
    shift
    exec python -m blip.cli capfilt --procs "$procs" "$@" ;;
  *)
    echo "unknown launcher '$how': deepspeed | torchrun | local" >&2
    exit 2 ;;
esac
