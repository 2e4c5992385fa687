#!/usr/bin/env bash
# Trains the Transformer ("swint-charm") and hybrid Transformer–CNN ("tcm") codecs on a CPU
# (checkpoints/<id>-q3 and -q1), logging to checkpoints/transformer_train_log.txt. Sizes:
# configs/train_codec.py (N=48, M=64, window 4, 2 blocks per stage, 4 channel-wise slices with
# LRP). Per codec: q3 (from scratch, or warm-started from INIT3), then q1 warm-started from q3.
# Finished workdirs are skipped, so re-running resumes where it stopped. The shipped swint-charm
# came from (2026-11-26, ~80 min of this 2-core CPU; checkpoints/README.md):
#   python experiments/half_photos.py ../shared/data/photos runs/photos_half
#   CODECS=swint-charm STEPS=1500 FT_STEPS=1000 CROP=192 BATCH=4 DATA=runs/photos_half \
#     INIT3=runs/transformers/swint-charm-q1/codec LR3=3e-4 LR1=2e-4 RUNS=runs/transformers9 \
#     nice -n 10 bash experiments/train_shipped_transformers.sh
# INIT3 there is the workdir of the earlier 64x64-crop placeholders (the defaults below: 150 + 75
# steps, then q1 continued to 400 steps with QUALITIES=1 FT_STEPS=400). Crops of 64x64 are cheap
# but leave z at 1x1, and such models code whole images badly; 192x192 keeps z at 3x3. XLA's
# default optimisation level is used: level 0 compiles faster but steps ~3x slower here.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/transformers}
STEPS=${STEPS:-150}
FT_STEPS=${FT_STEPS:-75}
CROP=${CROP:-64}
BATCH=${BATCH:-8}
CODECS=${CODECS:-"tcm swint-charm"}
QUALITIES=${QUALITIES:-"3 1"}  # which rate points to (re)run: q3 from scratch, q1 from q3
DATA=${DATA:-../shared/data/photos}  # training photos (random crops)
INIT3=${INIT3:-}    # warm start for q3 (a codec export or workdir); empty: from scratch
LR3=${LR3:-5e-4}    # peak learning rate of q3
LR1=${LR1:-2e-4}    # peak learning rate of q1 (fine-tuned from q3)
LOG=checkpoints/transformer_train_log.txt
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$RUNS/xla_cache}
mkdir -p checkpoints "$RUNS"
# Only the codec stages of the pipeline (train + export): the later pipeline stages (prior, DCIC
# decode) are not needed to make a checkpoint and would cost more than the training here.
train_export() {  # config-arg workdir key=value...
  python - "$@" <<'PY'
import ast, sys
from configs import train_codec
from dcic_jax.codecs.codec import export_trained
from dcic_jax.train import train_codec as train
config = train_codec.get_config(sys.argv[1])
for kv in sys.argv[3:]:
  k, v = kv.split("=", 1)
  node = config
  *path, leaf = k.split(".")
  for p in path:
    node = node[p]
  node[leaf] = type(node[leaf])(ast.literal_eval(v) if not isinstance(node[leaf], str) else v)
_, params = train(config, sys.argv[2] + "/codec")
export_trained(config, params, config.export_dir)
print(f"exported codec to {config.export_dir}")
PY
}
run() {  # codec quality steps init_from [extra key=value...]
  local cid=$1 q=$2 steps=$3 init=$4
  shift 4
  echo "=== $cid q$q: $steps steps, ${CROP}x$CROP crops of $DATA, batch $BATCH ${init:+(warm start from $init)} $* ===" | tee -a "$LOG"
  train_export "$cid,$q" "$RUNS/$cid-q$q" train_codec.steps="$steps" train_codec.crop_size="$CROP" \
    train_codec.batch_size="$BATCH" train_codec.data_dir="$DATA" train_codec.log_every=10 train_codec.ckpt_every=100 \
    ${init:+train_codec.init_from="$init"} "$@" 2>&1 \
    | tr '\r' '\n' | grep -E "^(train|warm|resumed|exported|error)|Error" | awk '/^train/ {last = $0; if (++n % 10 == 0) print; next} {print} END {if (last) print last}' | tee -a "$LOG"
}
if [[ " $QUALITIES " == *" 3 "* ]]; then
  for cid in $CODECS; do
    run "$cid" 3 "$STEPS" "$INIT3" train_codec.lr="$LR3" train_codec.warmup_steps=20
  done
fi
if [[ " $QUALITIES " == *" 1 "* ]]; then
  for cid in $CODECS; do
    run "$cid" 1 "$FT_STEPS" "$RUNS/$cid-q3/codec" train_codec.lr="$LR1" train_codec.warmup_steps=10
  done
fi
