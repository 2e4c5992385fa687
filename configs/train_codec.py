"""Train one shipped rate point of a small codec on the shared photos.

  python -m dcic_jax.main --config=configs/train_codec.py:bmshj2018,3 --workdir=runs/bmshj2018-q3

The argument is "<codec id>,<quality 1-4>"; quality picks λ from CompressAI's MSE ladder.
experiments/train_ladder.py trains all four rate points of a CNN codec in one process (how the
shipped ones were made, on a GPU: checkpoints/README.md); experiments/train_shipped_transformers.sh
trains the Transformer ("swint-charm") and hybrid ("tcm") codecs, whose extra fields
(codecs/transformer.py TransformerConfig) are added below.
"""
from configs import base

TRANSFORMER_CODECS = ("swint-charm", "tcm")
LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130}  # CompressAI's MSE λ for qualities 1-4


def get_config(arg: str = "bmshj2018,3"):
  codec_id, quality = arg.split(",")
  quality = int(quality)
  config = base.get_config()
  config.codec.id = codec_id
  config.train_codec.lmbda = LAMBDAS[quality]
  config.train_codec.data_dir = "../shared/data/photos"
  # 64x64 crops (batch 16) are cheap on a CPU, but alone they are not enough: z is then 1x1 and
  # the hyper path never sees spatial context, so whole images code ~5 dB worse than crops.
  # experiments/train_ladder.py (the shipped CNN codecs) overrides them with 256x256 crops.
  config.train_codec.crop_size = 64
  config.train_codec.batch_size = 16
  config.codec.N, config.codec.M = 64, 64  # the shipped CNN codecs (transformers: 48, 64 below)
  if codec_id in TRANSFORMER_CODECS:
    # Small shipped sizes (fields of codecs/transformer.py TransformerConfig).
    config.codec.N, config.codec.M = 48, 64
    config.codec.window = 4          # attention window side at every stage (64x64 crops: 4x4 at y)
    config.codec.depth = 2           # blocks per stage: one W-MSA, one SW-MSA
    config.codec.head_dim = 16       # channels per attention head
    config.codec.mlp_ratio = 2       # MLP width of the attention blocks, in multiples of C
    config.codec.slices = 4          # channel-wise AR slices of y (M=64: 16 channels each)
    config.codec.context_hidden = 16  # hidden width of the slice networks
    config.codec.lrp = True          # latent residual prediction
  config.export_dir = f"checkpoints/{codec_id}-q{quality}"  # where the trained codec is exported
  return config
