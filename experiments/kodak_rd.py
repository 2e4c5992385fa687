"""RD points of codecs on Kodak from real files, next to JPEG at matched rates.

  python experiments/kodak_rd.py [--kodak ../shared/data/kodak] [--checkpoints checkpoints/bmshj2018-q1,...]

Prints (and writes to --out as Markdown + JSON): per codec the mean real bpp, estimated bpp,
file overhead, PSNR, MS-SSIM and whether every image's latents round-trip bit-exact; per image
the file vs estimated bpp; and JPEG (the baselines' Pillow 4:2:0 optimised encoder) at the bpp
of each rate point of bmshj2018, swint-charm and tcm.
"""
import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from dcic_jax import evaluate  # noqa: E402
from dcic_jax.metrics.image import quality  # noqa: E402
from dcic_jax.baselines import classical  # noqa: E402
from dcic_jax.codecs import codec as codec_lib  # noqa: E402
from dcic_jax.data.images import list_images, load_rgb  # noqa: E402
from dcic_jax.io import write_bytes  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--kodak", default=str(REPO.parent / "shared" / "data" / "kodak"))
  ap.add_argument("--checkpoints", default="", help="comma-separated exports (default: all in checkpoints/)")
  ap.add_argument("--out", default=str(REPO / "runs" / "kodak_rd"))
  ap.add_argument("--limit", type=int, default=0, help="only the first N images (smoke runs)")
  ap.add_argument("--jpeg-at", default="bmshj2018,swint-charm,tcm",
                  help="comma-separated codec-name prefixes whose rate points get a JPEG point at the same bpp")
  args = ap.parse_args()
  ckpts = [c for c in args.checkpoints.split(",") if c] or sorted(
      str(p.parent) for p in (REPO / "checkpoints").glob("*/codec.json"))
  images = list_images(args.kodak)[: args.limit or None]
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)

  summaries, per_image = {}, {}
  for ckpt in ckpts:
    name = pathlib.Path(ckpt).name
    rows = evaluate.evaluate_codec(codec_lib.load(ckpt), name, images)
    summaries[name] = evaluate.summarize(rows)
    per_image[name] = [r.__dict__ for r in rows]
    print(f"{name}: bpp {summaries[name]['bpp']:.4f}  PSNR {summaries[name]['psnr']:.2f}", flush=True)

  # JPEG at the real bpp each rate point of --jpeg-at reached on each image.
  originals = [load_rgb(p) for p in images]
  prefixes = tuple(p for p in args.jpeg_at.split(",") if p)
  for name in [n for n in per_image if prefixes and n.startswith(prefixes)]:
    jrows = []
    for im, r in zip(originals, per_image[name]):
      bpp, rec, _ = classical.at_bpp(classical.get("jpeg"), im, r["bpp"])
      p, m = quality(im, rec)
      jrows.append(dict(bpp=bpp, psnr=p, ms_ssim=m))
    summaries[f"JPEG@{name}"] = {k: float(np.nanmean([j[k] for j in jrows])) for k in ("bpp", "psnr", "ms_ssim")} | {
        "n": len(jrows)}

  lines = [f"# Kodak RD ({len(images)} images, `{args.kodak}`)", "", evaluate.markdown_table(summaries), "",
           "## File vs estimated bpp per image", "",
           "| codec | image | bpp file | bpp est. | overhead | latents exact |", "|---|---|---|---|---|---|"]
  for name, rows in per_image.items():
    for r in rows:
      lines.append(f"| {name} | {r['image']} | {r['bpp']:.4f} | {r['bpp_est']:.4f} | "
                   f"{100 * (r['bpp'] / r['bpp_est'] - 1):+.2f}% | {r['latents_exact']} |")
  report = "\n".join(lines) + "\n"
  write_bytes(out / "kodak_rd.md", report.encode())
  write_bytes(out / "kodak_rd.json", json.dumps(dict(summaries=summaries, per_image=per_image), indent=1).encode())
  print(report.split("## File")[0])
  over = [100 * (r["bpp"] / r["bpp_est"] - 1) for rows in per_image.values() for r in rows]
  print(f"overhead file vs estimate over {len(over)} files: mean {np.mean(over):+.2f}%, max {np.max(over):+.2f}%")
  for name, rows in per_image.items():
    o = [100 * (r["bpp"] / r["bpp_est"] - 1) for r in rows]
    c = [100 * ((r["bpp"] - r["header_bpp"]) / r["bpp_est"] - 1) for r in rows]  # the coder's own
    print(f"  {name}: mean {np.mean(o):+.2f}%, max {np.max(o):+.2f}%, "
          f"{sum(v > 0.5 for v in o)} of {len(o)} files above +0.5%; without the container header: "
          f"mean {np.mean(c):+.2f}%, max {np.max(c):+.2f}%")
  print(f"all latents bit-exact: {all(r['latents_exact'] for rows in per_image.values() for r in rows)}")
  print(f"written: {out / 'kodak_rd.md'}")


if __name__ == "__main__":
  main()
