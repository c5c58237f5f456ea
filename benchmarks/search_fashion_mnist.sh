#!/usr/bin/env bash
# Issue #8's benchmark: EfficientFormerV2's MES search on this machine's ORT at two latency targets, on
# Fashion-MNIST, then each found model trained with `latvit train` and measured next to the zoo model.
# Needs `apt-get install dataset-fashion-mnist`. Everything goes to runs/search/ (not committed).
#
#   SIZE=32 EPOCHS=3 benchmarks/search_fashion_mnist.sh            # targets chosen from the table
#   TARGETS="0.9 1.2" benchmarks/search_fashion_mnist.sh           # explicit targets (ms)
#
# Run it on a quiet machine: the latency table and the final measurements are timings.
set -euo pipefail
SIZE=${SIZE:-32}
THREADS=${THREADS:-2}
TARGETS=${TARGETS:-}  # default: 1/3 and 2/3 of the way from the smallest to the largest subnet (predicted)
STATISTIC=${STATISTIC:-min}  # min is robust on a shared machine; median on a quiet one
SUPERNET_EPOCHS=${SUPERNET_EPOCHS:-1}
SUPERNET_SUBSET=${SUPERNET_SUBSET:-20000}
EPOCHS=${EPOCHS:-3}
SUBSET=${SUBSET:-60000}
ZOO=${ZOO:-efficientformerv2_s0}
out=runs/search
mkdir -p "$out"
lut=$out/lut-efficientformerv2-ort-$SIZE.json

/usr/bin/time -f "lut: %e s wall" python3 -m latvit lut build --space efficientformerv2 --runtime ort \
  --img-size "$SIZE" --threads "$THREADS" --statistic "$STATISTIC" --out "$lut"
if [ -z "$TARGETS" ]; then
  TARGETS=$(python3 - "$lut" "$SIZE" <<'PY'
import sys
from latvit.latency.lut import load_table
from latvit.latency.predictor import predict_latency
from latvit.models.spaces import get_space
table, size, space = load_table(sys.argv[1]), int(sys.argv[2]), get_space("efficientformerv2")
lo, hi = (predict_latency(space.spec(c, size), table).ms for c in (space.smallest(), space.largest()))
print(" ".join(f"{lo + f * (hi - lo):.2f}" for f in (1 / 3, 2 / 3)))
PY
)
  echo "targets (ms): $TARGETS"
fi

first=""
models=()
for target in $TARGETS; do
  dir=$out/v2-$SIZE-${target}ms
  # Both targets share one supernet (and its accuracy cache): train it once, copy it for the others.
  if [ -n "$first" ] && [ ! -d "$dir/supernet_sandwich" ]; then
    mkdir -p "$dir" && cp -r "$first/supernet_sandwich" "$dir/"
  fi
  /usr/bin/time -f "search $target ms: %e s wall" python3 -m latvit search --method efficientformerv2 \
    --runtime ort --lut "$lut" --target-ms "$target" --data fashion-mnist --img-size "$SIZE" \
    --supernet-epochs "$SUPERNET_EPOCHS" --train-subset "$SUPERNET_SUBSET" --threads "$THREADS" --output "$dir"
  [ -z "$first" ] && first=$dir
  models+=("$dir/spec.json")
done

# Train the found models and the zoo model with the same short schedule, one thread each, side by side.
pids=()
for spec in "${models[@]}" "$ZOO"; do
  name=$(basename "$(dirname "$spec")"); [ "$spec" = "$ZOO" ] && name=$ZOO
  run=$out/train-$name-$SIZE-e$EPOCHS
  resume=(); [ -f "$run/last.pt" ] && resume=(--resume)
  python3 -m latvit train "$spec" --config configs/fashion_mnist.yaml --img-size "$SIZE" --epochs "$EPOCHS" \
    --output "$run" "${resume[@]}" --set threads=1 --set num_workers=1 --set warmup_epochs=0.3 \
    --set train_subset="$SUBSET" --set val_subset=2000 --set progress=false > "$run.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
for spec in "${models[@]}" "$ZOO"; do
  name=$(basename "$(dirname "$spec")"); [ "$spec" = "$ZOO" ] && name=$ZOO
  python3 -m latvit validate "$out/train-$name-$SIZE-e$EPOCHS/best" --data fashion-mnist \
    --json "$out/train-$name-$SIZE-e$EPOCHS/validate.json"
done

# Latency of the found models and the zoo model, measured in one bench run on the table's runtime.
python3 -m latvit bench --models "$(IFS=,; echo "${models[*]}"),$ZOO" --runtimes ort --img-size "$SIZE" \
  --threads "$THREADS" --iters 200 --min-seconds 3 --json "$out/bench.json"
