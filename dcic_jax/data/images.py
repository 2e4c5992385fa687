"""Reading images from disk as 8-bit RGB, with clear errors for what the codecs cannot take.

Image files come from outside: the size an image declares is checked against the project's pixel
limit (`limits.py`) before its pixels are decoded (Pillow opens lazily), with Pillow's own bomb
check off so that the one limit, and its one-line message, decides; anything Pillow raises while
reading is one `UserError` line. A multi-frame file (animated GIF / PNG / WebP, multi-page TIFF,
a camera's MPO JPEG) gives its first frame, with a note.
"""
import io
import pathlib
import sys
import warnings

import numpy as np
from PIL import Image

from dcic_jax import limits
from dcic_jax.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


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
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
      try:
        im = Image.open(fp)
      finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
      with im:
        limits.check(im.height, im.width, source)
        frames = getattr(im, "n_frames", 1)
        deep = _is_16_bit(im)
        im.load()
        if frames > 1:
          print(f"note: {source}: {frames} frames; coding the first", file=sys.stderr)
        return _to_rgb8(im, source, deep)
  except UserError:
    raise
  except Exception as e:  # Pillow's refusals: UnidentifiedImageError, truncated files, bad chunks, ...
    raise UserError(f"{source}: cannot read image ({type(e).__name__}: {e})") from None


def _is_16_bit(im: Image.Image) -> bool:
  """Whether the file holds 16 bits per sample that Pillow will reduce to 8 on load (16-bit RGB
  PNG / TIFF open as 8-bit "RGB"); only the raw mode of its tiles, read before load, tells."""
  rawmodes = [t[3][0] if isinstance(t[3], tuple) else t[3] for t in (im.tile or []) if len(t) > 3]
  return any(isinstance(r, str) and "16" in r for r in rawmodes)


def _to_rgb8(im: Image.Image, path, deep: bool = False) -> np.ndarray:
  mode = im.mode
  if mode in ("I;16", "I;16B", "I;16L", "I;16N") or (mode == "I" and np.asarray(im).max(initial=0) <= 65535):
    a = np.asarray(im).astype(np.float64)
    print(f"note: {path}: 16-bit grey image converted to 8-bit RGB", file=sys.stderr)
    a = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=-1)
  if deep:
    print(f"note: {path}: 16-bit {mode} image converted to 8 bits per channel", file=sys.stderr)
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


def center_crop(image_HW3: np.ndarray, size: int, setting: str = "crop") -> np.ndarray:
  """The size×size centre of an image; one UserError line naming `setting` if it is smaller."""
  h, w = image_HW3.shape[:2]
  if min(h, w) < size:
    raise UserError(f"{setting} {size} is larger than an image ({h}x{w})")
  top, left = (h - size) // 2, (w - size) // 2
  return image_HW3[top:top + size, left:left + size]


def resize_short(image_HW3: np.ndarray, side: int) -> np.ndarray:
  """Bicubic resize so that the short side is `side` pixels (aspect ratio kept)."""
  h, w = image_HW3.shape[:2]
  scale = side / min(h, w)
  size = (max(side, round(w * scale)), max(side, round(h * scale)))
  return np.asarray(Image.fromarray(image_HW3).resize(size, Image.BICUBIC))
