"""Published RD(P) curves from files, drawn and BD-compared beside DCIC's (config.report.baselines).

A file uses CompressAI's results layout (`results/image/<dataset>/*.json` of that project):

  {"name": "VTM", "description": "...", "results": {"bpp": [...], "psnr": [...], "ms-ssim": [...]}}

plus "lpips", "fid" and "kid" lists where the source measured them ("psnr-rgb" / "ms-ssim-rgb"
are read as PSNR / MS-SSIM; other lists such as encoding times are ignored). A value may be null
where a rate was not measured. Anything else is one `error:` line naming the file.
"""
import hashlib
import json
import math
import pathlib

from dcic_jax.errors import UserError
from dcic_jax.report.curves import Curve

# key in the file -> key of curves.METRICS
KEYS = {"psnr": "psnr", "psnr-rgb": "psnr", "ms-ssim": "ms_ssim", "ms-ssim-rgb": "ms_ssim",
        "lpips": "lpips", "fid": "fid", "kid": "kid"}


def paths(spec) -> list[pathlib.Path]:
  """config.report.baselines: a comma-separated string (or a list) of files."""
  items = spec.split(",") if isinstance(spec, str) else list(spec or ())
  return [pathlib.Path(str(p).strip()) for p in items if str(p).strip()]


def load(spec) -> list[Curve]:
  """One Curve per file, labelled by its "name" (the file stem if it has none)."""
  curves = [load_file(p) for p in paths(spec)]
  labels = [c.label for c in curves]
  if len(set(labels)) != len(labels):
    raise UserError(f"report.baselines: two files have the same name: {labels}")
  return curves


def stamp(spec) -> list[str]:
  """Digests of the files' contents: the report is rebuilt when a baseline file changes."""
  return [hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else str(p)
          for p in paths(spec)]


def load_file(path: pathlib.Path) -> Curve:
  try:
    doc = json.loads(path.read_text())
  except OSError as e:
    raise UserError(f"baseline {path}: cannot read it ({e.strerror or e})") from None
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"baseline {path}: not JSON ({str(e).splitlines()[0]})") from None
  results = doc.get("results") if isinstance(doc, dict) else None
  if not isinstance(results, dict) or "bpp" not in results:
    raise UserError(f"baseline {path}: expected CompressAI's layout "
                    '{"name": ..., "results": {"bpp": [...], "psnr": [...], ...}}')
  bpp = _numbers(path, results, "bpp")
  if not bpp or any(v is None or v <= 0 for v in bpp):
    raise UserError(f"baseline {path}: \"bpp\" needs one or more positive numbers")
  columns = {}
  for key, ours in KEYS.items():
    if key in results:
      values = _numbers(path, results, key)
      if len(values) != len(bpp):
        raise UserError(f"baseline {path}: \"{key}\" has {len(values)} values for {len(bpp)} "
                        "rates")
      columns.setdefault(ours, values)
  if not columns:
    raise UserError(f"baseline {path}: no metric among {sorted(KEYS)}")
  points = tuple({"mean": {k: (math.nan if v[i] is None else v[i]) for k, v in columns.items()}}
                 for i in range(len(bpp)))
  name = doc.get("name") or path.stem
  if not isinstance(name, str):
    raise UserError(f"baseline {path}: \"name\" must be a string")
  return Curve(name, tuple(bpp), points)


def _numbers(path, results: dict, key: str) -> list:
  values = results[key]
  ok = isinstance(values, list) and all(
      v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
      for v in values)
  if not ok:
    raise UserError(f"baseline {path}: \"{key}\" must be a list of finite numbers (null where "
                    "not measured)")
  return [None if v is None else float(v) for v in values]
