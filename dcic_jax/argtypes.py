"""Argument parsing shared by the command-line entry points: value types that refuse bad numbers
in one line, and a parser whose refusals are a UserError (one `error:` line, status 2)."""
import argparse
import math

from dcic_jax.errors import UserError


def number(kind=float, low=None, high=None):
  """argparse type: a finite number of `kind` in [low, high] (None: unbounded)."""
  def parse(text: str):
    try:
      v = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
    if not math.isfinite(v) or (low is not None and v < low) or (high is not None and v > high):
      what = "an integer" if kind is int else "a finite number"
      bounds = [f"{op} {b:g}" for op, b in ((">=", low), ("<=", high)) if b is not None]
      raise argparse.ArgumentTypeError(f"must be {what} {' and '.join(bounds)}, got {text}")
    return v
  return parse


def seed_type(bits: int):
  """argparse type for a seed in [0, 2**bits) (decimal or 0x...)."""
  def parse(text: str) -> int:
    try:
      v = int(text, 0)
    except ValueError:
      raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= v < 2**bits:
      raise argparse.ArgumentTypeError(f"seed must be in [0, 2**{bits}), got {v}")
    return v
  return parse


class Parser(argparse.ArgumentParser):
  """argparse with its refusals as a UserError (one `error:` line, status 2), not a usage block;
  subparsers inherit it."""

  def error(self, message: str):
    raise UserError(f"{self.prog}: {message} (see --help)")
