"""Measure a codec on real images: file bits (the rate), estimated bits, PSNR and MS-SSIM.

Every rate here is the size of a real .dcic file (header included) over the image's pixels;
the entropy models' estimate is reported beside it, never instead of it.
"""
import dataclasses
import pathlib
import time

import numpy as np
import tqdm

from dcic_jax import io
from dcic_jax.codecs.codec import Codec
from dcic_jax.data.images import load_rgb
from dcic_jax.entropy import bitstream
from dcic_jax.metrics.image import quality


@dataclasses.dataclass(frozen=True)
class Row:
  image: str
  codec: str
  bpp: float           # real: 8 * file bytes / (H * W)
  bpp_est: float       # entropy-model estimate (hard rounding, float h_s), no header
  psnr: float          # dB on 8-bit RGB
  ms_ssim: float
  latents_exact: bool  # decoded z and y symbols equal the encoder's, element for element
  enc_s: float
  dec_s: float
  header_bpp: float = 0.0  # the part of bpp outside the latent strings (container header + CRC)


def evaluate_codec(codec: Codec, name: str, image_paths, out_dir=None, seed: int = 0) -> list[Row]:
  rows = []
  for path in tqdm.tqdm(list(image_paths), desc=f"evaluate {name}", leave=False):
    image = load_rgb(path)
    h, w = image.shape[:2]
    t0 = time.perf_counter()
    data, z_sym, y_sym = codec.compress_with_symbols(image, seed=seed)
    t1 = time.perf_counter()
    decoded = codec.decompress(data)
    t2 = time.perf_counter()
    exact = bool(np.array_equal(np.round(decoded.y_hat - decoded.mu), y_sym)
                 and np.array_equal(np.round(decoded.z_hat - codec.medians), z_sym))
    bits = codec.estimate_bits(image)
    p, m = quality(image, decoded.image)
    if out_dir is not None:
      out = pathlib.Path(out_dir)
      out.mkdir(parents=True, exist_ok=True)
      io.write_bytes(out / f"{pathlib.Path(path).stem}.dcic", data)
      io.save_png(out / f"{pathlib.Path(path).stem}.png", decoded.image)
    header_bytes = len(data) - sum(len(s) for s in bitstream.unpack(data)[1])
    rows.append(Row(pathlib.Path(path).name, name, 8 * len(data) / (h * w), sum(bits.values()) / (h * w),
                    p, m, exact, t1 - t0, t2 - t1, 8 * header_bytes / (h * w)))
  return rows


def summarize(rows: list[Row]) -> dict:
  """Mean of every numeric column (rates averaged per image, as in CompressAI's tables)."""
  keys = ["bpp", "bpp_est", "psnr", "ms_ssim", "enc_s", "dec_s"]
  out = {k: float(np.nanmean([getattr(r, k) for r in rows])) for k in keys}
  out["all_latents_exact"] = all(r.latents_exact for r in rows)
  out["n"] = len(rows)
  return out


def markdown_table(summaries: dict[str, dict]) -> str:
  lines = ["| codec | images | bpp (file) | bpp (est.) | overhead | PSNR dB | MS-SSIM | latents exact | enc s | dec s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for name, s in summaries.items():
    over = 100 * (s["bpp"] / s["bpp_est"] - 1) if s.get("bpp_est") else float("nan")
    lines.append(f"| {name} | {s['n']} | {s['bpp']:.4f} | {s.get('bpp_est', float('nan')):.4f} | {over:+.2f}% | "
                 f"{s['psnr']:.2f} | {s['ms_ssim']:.4f} | {s.get('all_latents_exact', '')} | "
                 f"{s.get('enc_s', float('nan')):.3f} | {s.get('dec_s', float('nan')):.3f} |")
  return "\n".join(lines)


if __name__ == "__main__":
  import sys
  from dcic_jax.score import main
  sys.exit(main())
