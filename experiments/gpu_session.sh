#!/usr/bin/env bash
# One short GPU session, prepared to run unattended within a fixed wall-clock budget:
#   0. (STUDY=1, first) experiments/gpu_study.py: DCIC and the Idempotence decoder with the
#      CelebA-HQ DDPM UNet at 256² (seconds per image, a 5x5 grid's images/s, memory, bfloat16),
#      then bench_unet.py's train step against diffusers with that UNet's layout at 256²;
#   1. trains the shipped CNN codec ladders (bmshj2018 and mbt2018-mean, q1-q4, N=M=64) on
#      2x-downsampled photos (experiments/train_ladder.py), keeping their parameters as .npz;
#   2. experiments/bench_unet.py: our UNet's train step against diffusers' UNet2DModel on the same
#      GPU, at a realistic ADM-style size;
#   3. experiments/bench_dcic.py: the decoder against its compute floor, 3x3 grid vs nine calls,
#      and the 768x512 decode's peak memory;
#   4. (TRANSFORMER_MIN > 0) the transformer and hybrid codec ladders (swint-charm, tcm; N=48, M=64);
#   5. (PRIOR_MIN > 0) the shipped diffusion prior's architecture trained on the GPU for PRIOR_MIN
#      minutes (constant learning rate after warm-up, so the run cut off at step k equals
#      `--steps k`), exported to $OUT/prior.tar (tar xf it: prior_export/).
# Every part is cut off at the budget (BUDGET seconds from the start); a part that fails does not
# stop the next, except a failed first ladder, which ends the session early (something basic is
# wrong: fix it and run again, without spending the rest of the lease).
#
#   OUT=runs/gpu BUDGET=540 bash experiments/gpu_session.sh
# Optional: WHEELS=dir of wheels to install first (packages the machine lacks), DATA=folder of
# training photos (default: runs/photos_half, made by experiments/half_photos.py),
# LADDER_MIN=minutes per codec ladder, LADDER_ARGS=more train_ladder.py flags (they win),
# TRANSFORMER_MIN=minutes per transformer ladder (0: skip), PRIOR_MIN=minutes of prior training
# (0: skip), BENCH=all|memory|none (memory: only bench_dcic's 768x512 memory part, ADM-like UNet),
# STUDY=1 (the GPU study first; about 10 minutes).
# Parts run in the order: study, prior, transformer ladders, CNN ladders, benchmarks.
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s)
BUDGET=${BUDGET:-540}
OUT=${OUT:-runs/gpu_session}
DATA=${DATA:-runs/photos_half}
LADDER_MIN=${LADDER_MIN:-3.0}
TRANSFORMER_MIN=${TRANSFORMER_MIN:-0}
PRIOR_MIN=${PRIOR_MIN:-0}
BENCH=${BENCH:-all}
STUDY=${STUDY:-0}
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

if [ "$STUDY" = 1 ]; then
  log "gpu_study"
  timeout $(($(left) - 10)) python3 experiments/gpu_study.py 2>&1 | squeeze | tee "$OUT/gpu_study.txt"
  log "gpu_study rc=${PIPESTATUS[0]}"
  if [ "$(left)" -gt 90 ]; then
    log "bench_unet, the CelebA-HQ DDPM layout at 256²"
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 timeout $(( $(left) > 200 ? 150 : $(left) - 30 )) \
      python3 experiments/bench_unet.py --base-channels 128 --channel-mult 1,1,2,2,4,4 --image-size 256 \
      --batch 8 --num-res-blocks 2 --attention-levels 4 --scale-shift 0 --steps 10 --warmup 2 \
      --sample-size 256 --sample-batch 1 2>&1 | tee "$OUT/bench_unet_celebahq256.txt"
    log "bench_unet rc=${PIPESTATUS[0]}"
  fi
fi

if [ "$PRIOR_MIN" != 0 ]; then
  # The shipped prior's recipe (experiments/train_shipped_prior.sh: photos 000-044, 045-049 held
  # out for experiments/prior_quality.py), on the carried photos, with a GPU-sized batch, cut off
  # after PRIOR_MIN minutes.
  log "prior ($PRIOR_MIN min)"
  RUNS=/tmp/prior PHOTOS="$DATA" BATCH="${PRIOR_BATCH:-64}" STEPS=10000000 CKPT_EVERY="${PRIOR_CKPT:-1000}" \
    LOG="$OUT/train_prior.txt" PYTHON=python3 TIMEOUT="$(python3 -c "print(int($PRIOR_MIN * 60))")" \
    bash experiments/train_shipped_prior.sh > /dev/null
  # Exported to /tmp and returned as one tar: the lease hands back flat files only (orbax's
  # nested checkpoint folders were left behind on the 2026-11-26 lease).
  python3 -c "from dcic_jax.diffusion.prior_files import export_prior; print('exported', export_prior('/tmp/prior', '/tmp/prior_export'))" \
    2>&1 | tail -3 | tee -a "$OUT/train_prior.txt"
  tar cf "$OUT/prior.tar" -C /tmp prior_export && log "prior exported to $OUT/prior.tar"
  log "prior done"
fi

for codec in $([ "$TRANSFORMER_MIN" = 0 ] || echo tcm swint-charm); do
  if [ "$(left)" -lt 120 ]; then log "ladder $codec skipped: $(left) s left"; continue; fi
  log "ladder $codec ($TRANSFORMER_MIN min)"
  # --no-export: the .npz is what comes back (exported here, train_ladder.py --from-npz); each
  # export and its Kodak-crop check cost ~25 s of GPU time on the 2026-11-26 lease.
  timeout $(($(left) - 30)) python3 experiments/train_ladder.py --codec "$codec" --qualities 1,2,3,4 \
    --N 48 --M 64 --data-dir "$DATA" --minutes "$TRANSFORMER_MIN" --workdir /tmp/ladder --out /tmp/exports \
    --no-export --overhead "${TRANSFORMER_OVERHEAD:-15}" --params-npz "$OUT/$codec.npz" 2>&1 | squeeze | tee "$OUT/train_$codec.txt"
  log "ladder $codec rc=${PIPESTATUS[0]}"
done

for codec in $([ "$LADDER_MIN" = 0 ] || echo bmshj2018 mbt2018-mean); do  # LADDER_MIN=0: none
  if [ "$(left)" -lt 120 ]; then log "ladder $codec skipped: $(left) s left"; continue; fi
  log "ladder $codec ($LADDER_MIN min)"
  timeout $(($(left) - 30)) python3 experiments/train_ladder.py --codec "$codec" --qualities 1,2,3,4 \
    --N 64 --M 64 --data-dir "$DATA" --minutes "$LADDER_MIN" --workdir /tmp/ladder --out /tmp/exports \
    --params-npz "$OUT/$codec.npz" ${LADDER_ARGS:-} 2>&1 | squeeze | tee "$OUT/train_$codec.txt"
  rc=${PIPESTATUS[0]}
  log "ladder $codec rc=$rc"
  if [ "$rc" != 0 ] && [ "$codec" = bmshj2018 ]; then log "first CNN ladder failed: stopping"; exit 1; fi
done

if [ "$BENCH" = memory ] && [ "$(left)" -gt 60 ]; then
  log "bench_dcic memory"
  timeout $(($(left) - 10)) python3 experiments/bench_dcic.py --skip decode,grid \
    --channel-mult 1,1,2,2,4,4 --attention-levels 3,4 --num-res-blocks 2 2>&1 | tee "$OUT/bench_dcic_memory.txt"
  log "bench_dcic memory rc=${PIPESTATUS[0]}"
fi
if [ "$BENCH" = all ] && [ "$(left)" -gt 60 ]; then
  log "bench_unet"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 timeout $(( $(left) > 200 ? 100 : $(left) - 30 )) \
    python3 experiments/bench_unet.py --base-channels 128 --channel-mult 1,2,2,2 --image-size 64 \
    --batch 32 --num-res-blocks 2 --attention-levels 2,3 --steps 20 --warmup 3 --sample-batch 8 \
    2>&1 | tee "$OUT/bench_unet.txt"
  log "bench_unet rc=${PIPESTATUS[0]}"
fi
if [ "$BENCH" = all ] && [ "$(left)" -gt 60 ]; then
  log "bench_dcic"
  timeout $(($(left) - 10)) python3 experiments/bench_dcic.py --size 256 --steps 20 \
    --base-channels 64 --channel-mult 1,2,2,2 --attention-levels 3 --repeats 3 --grid-mode xt \
    2>&1 | tee "$OUT/bench_dcic.txt"
  log "bench_dcic rc=${PIPESTATUS[0]}"
fi
log "done"
