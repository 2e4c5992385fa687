"""The pixel limit: the largest image this process will decode, from a .dcic file or an image file.

Files come from outside, and a header or an image file can declare any size in a few bytes, so the
size is checked against this limit before any pixel or latent is allocated (like Pillow's
`MAX_IMAGE_PIXELS`). The default, 2**26 = 67,108,864 pixels (8192 x 8192), admits 8K (7680 x 4320)
and keeps the base decode within the memory bound stated in docs/reliability.md.

Where the limit comes from, first match wins: `configure()` (the CLI's --max-pixels, the config
field `max_pixels`), then the environment variable DCIC_MAX_PIXELS, then the default.
"""
import os

from dcic_jax.errors import UserError

DEFAULT_MAX_PIXELS = 1 << 26
ENV_VAR = "DCIC_MAX_PIXELS"
SETTING = f"--max-pixels, config max_pixels or {ENV_VAR}"  # named in every refusal

_configured: int | None = None


def parse(value, where: str) -> int:
  """A pixel limit from a flag, config or environment value: a positive integer (decimal, or 2**k)."""
  text = str(value).strip()
  try:
    n = int(text, 0) if "**" not in text else _power(text)
  except ValueError:
    raise UserError(f"{where} must be a positive integer, got {text[:40]!r}") from None
  if n < 1:
    raise UserError(f"{where} must be a positive integer, got {n}")
  return n


def _power(text: str) -> int:
  base, _, exp = text.partition("**")
  base, exp = int(base, 0), int(exp, 0)
  if not (2 <= base <= 16 and 0 <= exp <= 64):
    raise ValueError(text)
  return base**exp


def configure(max_pixels) -> None:
  """Sets the process's limit (an entry point's flag or config field); None or 0 keeps env/default."""
  global _configured
  _configured = parse(max_pixels, "config max_pixels") if max_pixels else None


def max_pixels() -> int:
  """The limit in force: configured, else $DCIC_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
  if _configured is not None:
    return _configured
  env = os.environ.get(ENV_VAR)
  return parse(env, f"${ENV_VAR}") if env else DEFAULT_MAX_PIXELS


def check(height: int, width: int, source, limit: int | None = None) -> None:
  """UserError naming the setting when a height x width image exceeds the limit."""
  limit = max_pixels() if limit is None else limit
  if height * width > limit:
    raise UserError(f"{source}: {width}x{height} image ({height * width} pixels) is over the pixel "
                    f"limit of {limit} (raise it with {SETTING})")
