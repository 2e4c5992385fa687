#!/usr/bin/env bash
# Trains the shipped codecs (checkpoints/<id>-q<1..4>) on ../shared/data/photos, logging to
# checkpoints/train_log.txt. q3 of bmshj2018 first; mbt2018-mean q3 warm-starts its transforms
# from it; the other qualities fine-tune from their codec's q3.
#   bash experiments/train_shipped_codecs.sh        (about an hour on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/shipped}
STEPS=${STEPS:-1500}
FT_STEPS=${FT_STEPS:-400}
LOG=checkpoints/train_log.txt
mkdir -p checkpoints "$RUNS"
run() {  # codec quality steps [init_from]
  echo "=== $1 q$2: $3 steps ${4:+(warm start from $4)} ===" | tee -a "$LOG"
  python -m dcic_jax.main --config="configs/train_codec.py:$1,$2" --workdir="$RUNS/$1-q$2" \
    --config.train_codec.steps="$3" ${4:+--config.train_codec.init_from="$4"} 2>&1 \
    | tr '\r' '\n' | grep -E "^(train|warm|resumed|exported|error)|Error" | awk 'NR % 20 == 0 || !/^train/' | tee -a "$LOG"
}
run bmshj2018 3 "$STEPS"
run mbt2018-mean 3 "$STEPS" "$RUNS/bmshj2018-q3/codec"
for cid in bmshj2018 mbt2018-mean; do
  for q in 4 2 1; do
    run "$cid" "$q" "$FT_STEPS" "$RUNS/$cid-q3/codec"
  done
done
