#!/usr/bin/env bash
# Trains the shipped diffusion prior (checkpoints/prior) on random 32x32 crops of the photos,
# holding out the last five (045-049) for the realism check of experiments/prior_quality.py.
# Logs to checkpoints/prior_train_log.txt; the per-100-step curve stays in $RUNS/prior/metrics.jsonl.
# Re-running resumes from the last checkpoint.
#
# The shipped prior (since 2026-11-26) is this recipe on the 2x-downsampled photos at batch 64,
# cut off at 24000 steps on one H200 (experiments/gpu_session.sh PRIOR_MIN=3, about 2.7 min):
#   python experiments/half_photos.py ../shared/data/photos runs/photos_half
#   PHOTOS=runs/photos_half BATCH=64 STEPS=24000 bash experiments/train_shipped_prior.sh
# (the learning rate is constant after warm-up, so a run cut off at step k is the run STEPS=k).
# The earlier CPU prior: the defaults below (full-size photos, batch 16), stopped at 3000 steps,
# about 95 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/shipped-prior}
STEPS=${STEPS:-6000}
PHOTOS=${PHOTOS:-../shared/data/photos}
BATCH=${BATCH:-16}
LOG=${LOG:-checkpoints/prior_train_log.txt}
EXPORT=${EXPORT:-checkpoints/prior}
CKPT_EVERY=${CKPT_EVERY:-250}
PYTHON=${PYTHON:-python}
# TIMEOUT=seconds stops training then, with no export (experiments/gpu_session.sh exports the
# last checkpoint itself: the learning rate is constant, so that is the run STEPS=<its step>).
TIMEOUT=${TIMEOUT:-}
mkdir -p "$RUNS/train-photos" "$(dirname "$LOG")"
for f in "$PHOTOS"/0[0-3][0-9].* "$PHOTOS"/04[0-4].*; do  # .png originals or half-size .webp
  ln -sf "$(realpath "$f")" "$RUNS/train-photos/$(basename "$f")"
done
echo "=== prior: $STEPS steps, batch $BATCH, on $(ls "$RUNS/train-photos" | wc -l) photos ===" | tee -a "$LOG"
${TIMEOUT:+timeout "$TIMEOUT"} "$PYTHON" -m dcic_jax.diffusion.train --images="$RUNS/train-photos" --workdir="$RUNS" --seed=0 \
  --crop=32 --batch="$BATCH" --steps="$STEPS" --base-channels=32 --channel-mult=1,2,2 \
  --num-res-blocks=1 --attention-levels= --num-heads=4 --norm-groups=16 --dropout=0 \
  --lr=5e-4 --warmup=200 --ema=0.999 --log-every=100 --checkpoint-every="$CKPT_EVERY" \
  --export="$EXPORT" 2>&1 | tr '\r' '\n' | grep -E "^(prior|exported|error)|Error" \
  | awk '/^prior/ {last = $0; if (++n % 200 == 0) print; next} {print} END {if (last) print last}' \
  | tee -a "$LOG"
