"""Classical image codecs as RD baselines, rated from the bytes they actually write.

Every codec maps (uint8 [H, W, 3], quality) -> bytes -> uint8 [H, W, 3]; the rate is always
8 * len(bytes) / (H * W), container/header bytes included, so it is comparable with our files.
A codec whose library (or binary) is missing here is kept in the registry but marked unavailable
with a one-line note, so callers can report it as skipped instead of crashing.
"""
import dataclasses
import io
import math
import shutil
import subprocess
from typing import Callable

import numpy as np
from PIL import Image, features

try:  # imagecodecs is optional: without it only the Pillow codecs remain.
  import imagecodecs
except ImportError:  # pragma: no cover - depends on the environment
  imagecodecs = None


@dataclasses.dataclass(frozen=True)
class Codec:
  """One codec plus the quality knob that at_bpp searches over.

  `increasing` says whether a larger `quality` gives a larger file (False for JPEG XL's distance);
  `integer` whether the knob only takes whole values.
  """
  name: str
  encode: Callable[[np.ndarray, float], bytes]
  decode: Callable[[bytes], np.ndarray]
  qmin: float
  qmax: float
  increasing: bool = True
  integer: bool = True
  available: bool = True
  note: str = ""


def bpp(data: bytes, height: int, width: int) -> float:
  return 8.0 * len(data) / (height * width)


def _check_image(image) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"Codecs want uint8 [H, W, 3], got {image.dtype} {image.shape}.")
  return np.ascontiguousarray(image)


def _as_rgb8(image) -> np.ndarray:
  """Decoders may return RGBA, grey or 16-bit arrays; baselines compare on 8-bit RGB."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  if image.shape[-1] == 4:
    image = image[..., :3]
  if image.dtype != np.uint8:
    raise ValueError(f"Decoder returned {image.dtype}, expected uint8.")
  return np.ascontiguousarray(image)


# --- Pillow codecs ------------------------------------------------------------------------------

def _pil_encode(image, fmt, **kw) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(_check_image(image), "RGB").save(buf, format=fmt, **kw)
  return buf.getvalue()


def _pil_decode(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as im:
    return _as_rgb8(np.asarray(im.convert("RGB")))


def _jpeg_encode(image, quality):
  # 4:2:0 and optimised Huffman tables: the usual "libjpeg default, done well" anchor.
  return _pil_encode(image, "JPEG", quality=int(quality), subsampling="4:2:0", optimize=True)


def _webp_encode(image, quality):
  # method=4 is cwebp's default speed/size trade-off; lossy, 4:2:0.
  return _pil_encode(image, "WEBP", quality=int(quality), method=4, lossless=False)


# --- imagecodecs codecs ------------------------------------------------------------------------

def _j2k_encode(image, quality):
  # imagecodecs' `level` is OpenJPEG's target PSNR (dB) for one quality layer; raw .j2k
  # codestream (no JP2 box overhead, ~85 bytes), irreversible 9/7 wavelet with colour transform.
  return imagecodecs.jpeg2k_encode(_check_image(image), level=float(quality), codecformat="j2k",
                                   reversible=False, numthreads=1)


def _j2k_decode(data):
  return _as_rgb8(imagecodecs.jpeg2k_decode(data))


def _avif_encode(image, quality):
  # level 0..100 maps to libavif's quality; speed 6 is libavif's default-ish balance.
  return imagecodecs.avif_encode(_check_image(image), level=int(quality), speed=6, numthreads=1)


def _avif_decode(data):
  return _as_rgb8(imagecodecs.avif_decode(data, numthreads=1))


def _jxl_encode(image, distance):
  # Butteraugli distance: larger = smaller file; effort 7 is cjxl's default; bare codestream.
  return imagecodecs.jpegxl_encode(_check_image(image), distance=float(distance), effort=7,
                                   usecontainer=False, numthreads=1)


def _jxl_decode(data):
  return _as_rgb8(imagecodecs.jpegxl_decode(data, numthreads=1))


def _ic_available(name: str) -> tuple[bool, str]:
  if imagecodecs is None:
    return False, "imagecodecs is not installed"
  try:
    ok = bool(getattr(imagecodecs, name).available)
  except Exception as e:  # noqa: BLE001 - any failure just means "not usable here"
    return False, f"imagecodecs.{name} unusable: {e}"
  return ok, "" if ok else f"imagecodecs {imagecodecs.__version__} was built without {name}"


# --- HEVC intra via ffmpeg ---------------------------------------------------------------------

def _hevc_encode(image, crf):
  """One yuv444p frame through libx265 in a raw Annex-B stream: the rate is the bitstream only."""
  image = _check_image(image)
  h, w = image.shape[:2]
  cmd = [shutil.which("ffmpeg"), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", f"{w}x{h}", "-i", "-", "-frames:v", "1", "-c:v", "libx265",
         "-pix_fmt", "yuv444p", "-crf", str(int(crf)), "-preset", "medium",
         "-x265-params", "lossless=0:log-level=error:keyint=1", "-f", "hevc", "-"]
  out = subprocess.run(cmd, input=image.tobytes(), capture_output=True, check=True)
  # The decoder needs the size back; a 4-byte header is counted in the rate (it is real bytes).
  return h.to_bytes(2, "big") + w.to_bytes(2, "big") + out.stdout


def _hevc_decode(data):
  h, w = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
  cmd = [shutil.which("ffmpeg"), "-v", "error", "-f", "hevc", "-i", "-", "-frames:v", "1",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
  out = subprocess.run(cmd, input=data[4:], capture_output=True, check=True)
  return np.frombuffer(out.stdout[:h * w * 3], np.uint8).reshape(h, w, 3).copy()


def _hevc_available() -> tuple[bool, str]:
  ffmpeg = shutil.which("ffmpeg")
  if ffmpeg is None:
    return False, "ffmpeg not found on PATH"
  try:
    encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True,
                              text=True, timeout=20).stdout
  except (OSError, subprocess.SubprocessError) as e:
    return False, f"ffmpeg unusable: {e}"
  return ("libx265" in encoders), ("" if "libx265" in encoders else "ffmpeg lacks libx265")


# --- registry ----------------------------------------------------------------------------------

def _build_registry() -> dict[str, Codec]:
  webp_ok = features.check("webp")
  j2k_ok, j2k_note = _ic_available("JPEG2K")
  avif_ok, avif_note = _ic_available("AVIF")
  jxl_ok, jxl_note = _ic_available("JPEGXL")
  hevc_ok, hevc_note = _hevc_available()
  codecs = [
      Codec("jpeg", _jpeg_encode, _pil_decode, 1, 95),
      Codec("webp", _webp_encode, _pil_decode, 0, 100, available=webp_ok,
            note="" if webp_ok else "Pillow built without WebP"),
      Codec("jpeg2000", _j2k_encode, _j2k_decode, 15.0, 60.0, integer=False,
            available=j2k_ok, note=j2k_note),
      Codec("avif", _avif_encode, _avif_decode, 0, 100, available=avif_ok, note=avif_note),
      Codec("jpegxl", _jxl_encode, _jxl_decode, 0.1, 25.0, increasing=False, integer=False,
            available=jxl_ok, note=jxl_note),
      Codec("hevc_intra", _hevc_encode, _hevc_decode, 0, 51, increasing=False,
            available=hevc_ok, note=hevc_note),
  ]
  return {c.name: c for c in codecs}


REGISTRY: dict[str, Codec] = _build_registry()


def get(name: str) -> Codec:
  try:
    return REGISTRY[name]
  except KeyError:
    raise KeyError(f"Unknown codec {name!r}; known: {', '.join(REGISTRY)}.") from None


def available_codecs(registry=None) -> list[Codec]:
  return [c for c in (REGISTRY if registry is None else registry).values() if c.available]


def skipped_codecs(registry=None) -> list[Codec]:
  return [c for c in (REGISTRY if registry is None else registry).values() if not c.available]


def roundtrip(codec: Codec, image, quality) -> tuple[float, np.ndarray, bytes]:
  """(bpp, decoded, bytes) at one quality setting."""
  image = _check_image(image)
  if not codec.available:
    raise RuntimeError(f"Codec {codec.name} is unavailable: {codec.note}")
  data = codec.encode(image, quality)
  decoded = codec.decode(data)
  if decoded.shape != image.shape:
    raise ValueError(f"{codec.name} decoded {decoded.shape}, expected {image.shape}.")
  return bpp(data, *image.shape[:2]), decoded, data


def at_bpp(codec: Codec, image, target_bpp: float, max_steps: int = 12, rel_tol: float = 0.005,
           cache=None):
  """(bpp, decoded, quality) with the real bpp closest to `target_bpp` among the probes.

  Illinois regula falsi on log-rate over the quality knob (rate is monotone in it up to
  encoder noise): far fewer encodes than plain bisection, which matters for AVIF/JPEG XL on
  Kodak. Stops once within `rel_tol` of the target, when the knob bracket is adjacent/tiny, or
  after `max_steps`; outside the codec's range the nearest end wins. Pass one `cache` dict for
  the same image and codec across several targets so probes are shared.
  """
  image = _check_image(image)
  if not codec.available:
    raise RuntimeError(f"Codec {codec.name} is unavailable: {codec.note}")
  if not target_bpp > 0:
    raise ValueError(f"target_bpp must be positive, got {target_bpp}.")
  h, w = image.shape[:2]
  probes = {} if cache is None else cache

  def rate(q):
    if q not in probes:
      probes[q] = codec.encode(image, q)
    return bpp(probes[q], h, w)

  # Work in a knob `t` where larger t always means a larger file.
  sign = 1 if codec.increasing else -1
  lo, hi = (codec.qmin, codec.qmax) if codec.increasing else (-codec.qmax, -codec.qmin)
  r_lo, r_hi = rate(sign * lo), rate(sign * hi)
  log_target = math.log(target_bpp)
  # Rates come in steps (JPEG 2000 truncation points), so a float bracket this narrow is done.
  min_step = 1 if codec.integer else 1e-3 * (codec.qmax - codec.qmin)
  side = 0  # Illinois: halve the stale end's residual when the same end moves twice in a row
  f_lo, f_hi = math.log(max(r_lo, 1e-12)) - log_target, math.log(max(r_hi, 1e-12)) - log_target
  for _ in range(max_steps):
    if not r_lo < target_bpp < r_hi or hi - lo <= min_step:
      break
    if min(target_bpp - r_lo, r_hi - target_bpp) <= rel_tol * target_bpp:
      break
    frac = min(max(-f_lo / (f_hi - f_lo), 0.02), 0.98)
    mid = lo + frac * (hi - lo)
    if codec.integer:
      mid = min(max(round(mid), lo + 1), hi - 1)
    else:
      mid = round(mid, 4)
    r_mid = rate(sign * mid)
    f_mid = math.log(max(r_mid, 1e-12)) - log_target
    if f_mid < 0:
      lo, r_lo, f_lo = mid, r_mid, f_mid
      if side == -1:
        f_hi /= 2
      side = -1
    else:
      hi, r_hi, f_hi = mid, r_mid, f_mid
      if side == 1:
        f_lo /= 2
      side = 1
  best = min(probes, key=lambda q: (abs(bpp(probes[q], h, w) - target_bpp), q))
  decoded = codec.decode(probes[best])
  if decoded.shape != image.shape:
    raise ValueError(f"{codec.name} decoded {decoded.shape}, expected {image.shape}.")
  return bpp(probes[best], h, w), decoded, best


def sweep(name: str, image, targets) -> list[tuple[float, np.ndarray, float]]:
  """at_bpp for several targets on one image, sharing probes; by name so it pickles for pools."""
  codec, cache = get(name), {}
  return [at_bpp(codec, image, t, cache=cache) for t in targets]


__all__ = ["Codec", "REGISTRY", "get", "available_codecs", "skipped_codecs", "roundtrip",
           "at_bpp", "sweep", "bpp"]
