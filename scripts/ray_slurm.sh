#!/bin/bash
# A Ray cluster inside one Slurm allocation, then a knowpack command on it (README: Running on a cluster).
#
#   sbatch scripts/ray_slurm.sh knowpack sweep configs/replicate/packing.yaml
#   sbatch --nodes=4 --gpus-per-node=8 scripts/ray_slurm.sh knowpack probe --model M --facts F --out runs/probe
#
# Ray's way of starting a cluster under Slurm: one Slurm task per node, `ray start --head` on the first node,
# `ray start --address HEAD:PORT` on the others (each `--block`, so the node stays up while the job runs),
# then the driver on the first node with --backend ray --address HEAD:PORT. Every node needs the same Python
# environment with knowpack[ray] installed (activate it below). OUT is written by the driver only, on the
# first node: it needs no shared filesystem, but the model and facts must be readable on every node (a Hub
# id with the Hub reachable, `organism`, or a path every node has).
#
#SBATCH --job-name=knowpack-ray
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=knowpack-ray-%j.out
set -euo pipefail

# source .venv/bin/activate        # the environment with knowpack[ray], the same path on every node

PORT=${RAY_PORT:-6379}
mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD=${NODES[0]}
HEAD_IP=$(srun --nodes=1 --ntasks=1 -w "$HEAD" hostname --ip-address | awk '{print $1}')
ADDRESS="$HEAD_IP:$PORT"
GPUS=${SLURM_GPUS_ON_NODE:-0}

echo "ray head on $HEAD ($ADDRESS), $((${#NODES[@]} - 1)) more nodes"
srun --nodes=1 --ntasks=1 -w "$HEAD" \
  ray start --head --node-ip-address="$HEAD_IP" --port="$PORT" \
  --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$GPUS" --include-dashboard=false --block &
sleep 15   # the head must be up before the workers join
for node in "${NODES[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$ADDRESS" --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$GPUS" --block &
done
sleep 15

# The driver: writes OUT here (resumable: resubmit the same job after a failure and finished cells are kept).
"$@" --backend ray --address "$ADDRESS"
