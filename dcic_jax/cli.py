"""Command line: python -m dcic_jax compress IN.png OUT.dcic --checkpoint DIR [--seed S]
                 python -m dcic_jax decompress IN.dcic OUT.png [--checkpoint DIR]

User errors (bad files, wrong model, bad flags) print one line and exit with status 2; outputs
are written atomically, so a failed run never leaves a partial file.
"""
import argparse
import json
import pathlib
import sys

from dcic_jax.errors import UserError

SHIPPED = pathlib.Path(__file__).resolve().parent.parent / "checkpoints"


def find_checkpoint(header) -> pathlib.Path:
  """The shipped export whose fingerprint matches the file's header."""
  want = header.fingerprint.hex()
  for info_path in sorted(SHIPPED.glob("*/codec.json")):
    if json.loads(info_path.read_text()).get("fingerprint") == want:
      return info_path.parent
  raise UserError(f"no checkpoint in {SHIPPED} matches this file (codec {header.codec_id!r}, "
                  f"fingerprint {want}); pass --checkpoint DIR")


def _compress(args) -> None:
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.data.images import load_rgb
  from dcic_jax.entropy.bitstream import write_atomic
  image = load_rgb(args.input)
  codec = codec_lib.load(args.checkpoint)
  data = codec.compress(image, seed=args.seed)
  write_atomic(args.output, data)
  h, w = image.shape[:2]
  print(f"{args.output}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp ({w}x{h}, {codec.codec_id})")


def _decompress(args) -> None:
  from dcic_jax.codecs import codec as codec_lib
  from dcic_jax.data.images import save_png_atomic
  from dcic_jax.entropy import bitstream
  data = bitstream.read_file(args.input)
  header, _ = bitstream.unpack(data)
  ckpt = args.checkpoint or find_checkpoint(header)
  decoded = codec_lib.load(ckpt).decompress(data)
  save_png_atomic(args.output, decoded.image)
  print(f"{args.output}: {header.width}x{header.height} base reconstruction ({header.codec_id})")


def _seed(text: str) -> int:
  try:
    v = int(text, 0)
  except ValueError:
    raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
  if not 0 <= v < 2**64:
    raise argparse.ArgumentTypeError(f"seed must be in [0, 2**64), got {v}")
  return v


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m dcic_jax", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("compress", help="image -> .dcic file")
  c.add_argument("input")
  c.add_argument("output")
  c.add_argument("--checkpoint", required=True, help="codec export directory (e.g. checkpoints/bmshj2018-q3)")
  c.add_argument("--seed", type=_seed, default=0, help="decoder noise seed stored in the header (0..2**64-1)")
  c.set_defaults(fn=_compress)
  d = sub.add_parser("decompress", help=".dcic file -> PNG")
  d.add_argument("input")
  d.add_argument("output")
  d.add_argument("--checkpoint", default=None, help="codec export directory (default: the shipped one that matches)")
  d.set_defaults(fn=_decompress)
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    args.fn(args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
