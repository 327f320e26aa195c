#!/usr/bin/env bash
# Regenerates results/ from CPU-sized runs of every model (about 15 minutes on 2 cores for the
# paper's nine, 10 more for the six newer ones). Each run: one torch thread; two runs at a time.
# Raw runs go to runs/leaderboard-cpu (git-ignored). MODELS, RUNS and OUT override the defaults
# (results/new-models was made with MODELS="lru s4d mingru minlstm dtriv nnrnn").
set -euo pipefail
RUNS=${RUNS:-runs/leaderboard-cpu}
OUT=${OUT:-results}
MODELS=${MODELS:-"scurnn scornn lstm gru exprnn ornn fcurnn urnn eurnn lru s4d mingru minlstm dtriv nnrnn"}
jobs=()
for model in $MODELS; do
  for seed in 0 1 2; do
    jobs+=("--model $model --task copying --seq-len 50 --max-steps 300 --val-every 100 --seed $seed")
    jobs+=("--model $model --task adding --seq-len 30 --max-steps 600 --val-every 200 --seed $seed")
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} sh -c \
  "bench run {} --runs-dir $RUNS --threads 1 --quiet --wandb disabled > /dev/null 2>&1 || echo 'failed: {}'"
bench leaderboard --runs-dir "$RUNS" --format md,csv --out "$OUT"   # html (the dashboard page, 5 MB with plotly inlined): add ,html
