"""Reading images from disk as 8-bit RGB, with clear errors for what the codecs cannot take."""
import io
import pathlib
import sys

import numpy as np
from PIL import Image, UnidentifiedImageError

from dcic_jax.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
MAX_PIXELS = 1 << 28  # refuse decompression bombs before decoding them


def load_rgb(path) -> np.ndarray:
  """Any common image file -> uint8 [H, W, 3].

  Grey and palette images are expanded to RGB, 16-bit grey is scaled to 8 bits (with a note on
  stderr), an alpha channel is dropped only if fully opaque; anything else is refused.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"no such image file: {path}")
  return _decode(path, path)


def decode_rgb(data: bytes, source: str) -> np.ndarray:
  """Encoded image bytes (from an archive or a prepared dataset) -> uint8 [H, W, 3].

  The same conversions and errors as `load_rgb`, so an image read from bytes equals the one read
  from its file; `source` names where the bytes came from in error messages.
  """
  return _decode(io.BytesIO(data), source)


def _decode(fp, source) -> np.ndarray:
  try:
    with Image.open(fp) as im:
      if im.width * im.height > MAX_PIXELS:
        raise UserError(f"{source}: {im.width}x{im.height} is too large (more than {MAX_PIXELS} pixels)")
      im.load()
      return _to_rgb8(im, source)
  except UnidentifiedImageError:
    raise UserError(f"{source}: not an image file Pillow can read") from None
  except OSError as e:
    raise UserError(f"{source}: cannot read image ({e})") from None


def _to_rgb8(im: Image.Image, path) -> np.ndarray:
  mode = im.mode
  if mode in ("I;16", "I;16B", "I;16L", "I;16N") or (mode == "I" and np.asarray(im).max(initial=0) <= 65535):
    a = np.asarray(im).astype(np.float64)
    print(f"note: {path}: 16-bit grey image converted to 8-bit RGB", file=sys.stderr)
    a = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=-1)
  if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
    rgba = np.asarray(im.convert("RGBA"))
    if rgba[..., 3].min() < 255:
      raise UserError(f"{path}: image has transparency (alpha < 255); flatten it onto a background first")
    return np.ascontiguousarray(rgba[..., :3])
  if mode in ("RGB", "L", "P", "1", "CMYK", "YCbCr", "LAB", "HSV"):
    return np.asarray(im.convert("RGB"))
  raise UserError(f"{path}: unsupported image mode {mode!r} (need 8-bit RGB, grey or palette)")


def list_images(folder) -> list[pathlib.Path]:
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise UserError(f"image folder not found: {folder}")
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  if not files:
    raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
  return files


def save_png_atomic(path, image_HW3: np.ndarray) -> None:
  """Write a PNG through a temporary file + rename, so no partial output is ever left behind."""
  from dcic_jax.entropy.bitstream import write_atomic
  import io
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image_HW3, np.uint8)).save(buf, format="PNG")
  write_atomic(path, buf.getvalue())
