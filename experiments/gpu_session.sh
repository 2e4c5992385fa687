#!/usr/bin/env bash
# One short GPU session, prepared to run unattended within a fixed wall-clock budget:
#   1. trains the shipped CNN codec ladders (bmshj2018 and mbt2018-mean, q1-q4, N=M=64) on
#      2x-downsampled photos (experiments/train_ladder.py), keeping their parameters as .npz;
#   2. experiments/bench_unet.py: our UNet's train step against diffusers' UNet2DModel on the same
#      GPU, at a realistic ADM-style size;
#   3. experiments/bench_dcic.py: the decoder against its compute floor, 3x3 grid vs nine calls,
#      and the 768x512 decode's peak memory.
# Every part is cut off at the budget (BUDGET seconds from the start); a part that fails does not
# stop the next, except a failed first ladder, which ends the session early (something basic is
# wrong: fix it and run again, without spending the rest of the lease).
#
#   OUT=runs/gpu BUDGET=540 bash experiments/gpu_session.sh
# Optional: WHEELS=dir of wheels to install first (packages the machine lacks), DATA=folder of
# training photos (default: runs/photos_half, made by experiments/half_photos.py),
# LADDER_MIN=minutes per codec ladder, LADDER_ARGS=more train_ladder.py flags (they win).
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s)
BUDGET=${BUDGET:-540}
OUT=${OUT:-runs/gpu_session}
DATA=${DATA:-runs/photos_half}
LADDER_MIN=${LADDER_MIN:-3.0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
left() { echo $((BUDGET - ($(date +%s) - T0))); }
log() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$OUT/session.txt"; }
# tqdm bars: keep one line in 20, so the log stays short.
squeeze() { tr '\r' '\n' | awk '/it\/s|s\/it/ {if (++n % 20 == 0) print; next} {print}'; }

if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl && export PYTHONPATH=/tmp/site:$PWD || { log "wheel install failed"; exit 1; }
else
  export PYTHONPATH=$PWD
fi
nvidia-smi -L 2>&1 | tee -a "$OUT/session.txt"
python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__, jax.devices())" 2>&1 | tee -a "$OUT/session.txt"

for codec in $([ "$LADDER_MIN" = 0 ] || echo bmshj2018 mbt2018-mean); do  # LADDER_MIN=0: benchmarks only
  log "ladder $codec ($LADDER_MIN min)"
  timeout $(($(left) - 30)) python3 experiments/train_ladder.py --codec "$codec" --qualities 1,2,3,4 \
    --N 64 --M 64 --data-dir "$DATA" --minutes "$LADDER_MIN" --workdir /tmp/ladder --out /tmp/exports \
    --params-npz "$OUT/$codec.npz" ${LADDER_ARGS:-} 2>&1 | squeeze | tee "$OUT/train_$codec.txt"
  rc=${PIPESTATUS[0]}
  log "ladder $codec rc=$rc"
  if [ "$rc" != 0 ] && [ "$codec" = bmshj2018 ]; then log "first ladder failed: stopping"; exit 1; fi
done

if [ "$(left)" -gt 60 ]; then
  log "bench_unet"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 timeout $(( $(left) > 200 ? 100 : $(left) - 30 )) \
    python3 experiments/bench_unet.py --base-channels 128 --channel-mult 1,2,2,2 --image-size 64 \
    --batch 32 --num-res-blocks 2 --attention-levels 2,3 --steps 20 --warmup 3 --sample-batch 8 \
    2>&1 | tee "$OUT/bench_unet.txt"
  log "bench_unet rc=${PIPESTATUS[0]}"
fi
if [ "$(left)" -gt 60 ]; then
  log "bench_dcic"
  timeout $(($(left) - 10)) python3 experiments/bench_dcic.py --size 256 --steps 20 \
    --base-channels 64 --channel-mult 1,2,2,2 --attention-levels 3 --repeats 3 --grid-mode xt \
    2>&1 | tee "$OUT/bench_dcic.txt"
  log "bench_dcic rc=${PIPESTATUS[0]}"
fi
log "done"
