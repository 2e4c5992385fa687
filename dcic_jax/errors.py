"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(Exception):
  """Bad input from the user (a file, a flag, a config value): reported as one clear line."""


class BitstreamError(UserError):
  """A .dcic file that cannot be decoded (truncated, corrupted, wrong model, wrong version...)."""


def exit_code(fn, *args) -> int:
  """Run fn(*args) for a command line: a UserError becomes one `error:` line and status 2."""
  import sys
  try:
    fn(*args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0
