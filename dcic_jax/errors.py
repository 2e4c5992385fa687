"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(Exception):
  """Bad input from the user (a file, a flag, a config value): reported as one clear line."""


class BitstreamError(UserError):
  """A .dcic file that cannot be decoded (truncated, corrupted, wrong model, wrong version...)."""


def report(e: UserError) -> int:
  """Prints a UserError as one `error:` line (its whitespace, newlines included, collapsed) on
  stderr; returns the exit status 2."""
  import sys
  print("error: " + " ".join(str(e).split()), file=sys.stderr)
  return 2


def exit_code(fn, *args) -> int:
  """Run fn(*args) for a command line: a UserError becomes one `error:` line and status 2."""
  try:
    fn(*args)
  except UserError as e:
    return report(e)
  return 0
