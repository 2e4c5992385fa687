"""Classical-codec baselines (JPEG, WebP, JPEG 2000, AVIF, JPEG XL, HEVC intra) from real bytes."""
from dcic_jax.baselines.classical import (REGISTRY, Codec, at_bpp, available_codecs, bpp, get,
                                          roundtrip, skipped_codecs, sweep)

__all__ = ["REGISTRY", "Codec", "at_bpp", "available_codecs", "bpp", "get", "roundtrip",
           "skipped_codecs", "sweep"]
