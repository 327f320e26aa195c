#!/usr/bin/env bash
# Entry point of a compose sweep worker: one GPU per worker replica.
#
# Docker cannot give replicas different GPUs: a device reservation `count: N` becomes the device
# list 0..N-1 in every container, so `count: 1` puts every replica on GPU 0. The workers are
# therefore started with all GPUs visible, and each one claims a GPU that no other worker on
# this host holds: an flock on /gpu-locks/gpuI.lock (a volume shared by the replicas). The lock
# file stays open in `bench` (exec keeps the descriptor), so the claim lasts exactly as long
# as the worker process and is released by the kernel however it ends (exit, crash, SIGKILL).
# Only the claimed GPU is then visible to `bench` (CUDA_VISIBLE_DEVICES).
#
#   BENCH_GPUS       GPU indices to choose from, e.g. "0,2,3" (default: every GPU nvidia-smi lists)
#   BENCH_GPU_LOCKS  lock folder shared by the workers (default /gpu-locks)
#   BENCH_GPU_POLL_S when every GPU is taken (more workers than GPUs), wait this long between
#                    tries (default 30); 0 means exit with status 3 instead of waiting
set -euo pipefail

locks="${BENCH_GPU_LOCKS:-/gpu-locks}"
poll="${BENCH_GPU_POLL_S:-30}"

if [ -n "${BENCH_GPUS:-}" ]; then
    gpus="${BENCH_GPUS//,/ }"
elif command -v nvidia-smi >/dev/null 2>&1; then
    gpus="$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr -d ' ' | tr '\n' ' ' || true)"
else
    gpus="$(python -c 'import torch; print(*range(torch.cuda.device_count()))' 2>/dev/null || true)"
fi
gpus="$(echo $gpus)"    # one space between indices, none around

if [ -z "$gpus" ]; then
    echo "bench-gpu-worker: no GPU visible (is the NVIDIA container toolkit installed?); running on CPU" >&2
    exec bench "$@"
fi

mkdir -p "$locks"
waited=0
while :; do
    for i in $gpus; do
        exec {fd}>>"$locks/gpu$i.lock"
        if flock -n "$fd"; then
            export CUDA_VISIBLE_DEVICES="$i"
            echo "bench-gpu-worker: this worker uses GPU $i (of: $gpus)" >&2
            exec bench "$@"     # keeps fd open: the lock is held until bench exits
        fi
        exec {fd}>&-
    done
    if [ "$poll" = 0 ]; then
        echo "bench-gpu-worker: every GPU ($gpus) is held by another worker; start at most one worker per GPU (WORKERS)" >&2
        exit 3
    fi
    if [ "$waited" = 0 ]; then
        echo "bench-gpu-worker: every GPU ($gpus) is held by another worker (more WORKERS than GPUs?); waiting for one to become free" >&2
        waited=1
    fi
    sleep "$poll"
done
