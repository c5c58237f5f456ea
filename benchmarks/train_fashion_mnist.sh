#!/usr/bin/env bash
# Rebuild the Fashion-MNIST checkpoints that docs/train.md reports (and that search/compression measure
# accuracy with). Needs `apt-get install dataset-fashion-mnist`. Weights go to runs/ (not committed).
#
#   benchmarks/train_fashion_mnist.sh                        # mobilevit_xxs, 20 epochs at 32 px (docs/train.md)
#   EPOCHS=15 benchmarks/train_fashion_mnist.sh efficientformerv2_s0  # the other measured run
# The two measured runs ran side by side, one thread each (THREADS, WORKERS below); a killed run resumes
# where it stopped when the same command is run again (its last.pt is found and --resume added).
# Training evaluates the first VAL_SUBSET test images each epoch; the final `latvit validate` uses all 10000.
#
# On a CPU shared with other jobs, one thread per process is much faster than several (no spin-waiting).
set -euo pipefail
EPOCHS=${EPOCHS:-20}
SUBSET=${SUBSET:-60000}
VAL_SUBSET=${VAL_SUBSET:-2000}
SIZE=${SIZE:-32}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(mobilevit_xxs)
for model in "${models[@]}"; do
  out=runs/fmnist-${model}-${SIZE}-e${EPOCHS}-n${SUBSET}
  resume=()
  [ -f "$out/last.pt" ] && resume=(--resume)
  /usr/bin/time -f "%e s wall" python3 -m latvit train "$model" --config configs/fashion_mnist.yaml \
    --img-size "$SIZE" --epochs "$EPOCHS" --output "$out" "${resume[@]}" \
    --set threads="$THREADS" --set num_workers="$WORKERS" --set warmup_epochs=0.3 \
    --set train_subset="$SUBSET" --set val_subset="$VAL_SUBSET" --set checkpoint_every=50 --set progress=false
  python3 -m latvit validate "$out/best" --data fashion-mnist --workers "$WORKERS" --threads "$THREADS" \
    --json "$out/validate.json"
done
