"""The interactive distortion–perception explorer of report.html, and of a `decompress --grid` folder.

One .dcic file decodes to a plane of reconstructions; choosing a decoder setting means looking at
them. The page gets, per rate and image, sliders over the decoded (K_D, K_P) points, the decode
beside the original and the base reconstruction (one zoom/pan for all, and a before/after wipe),
the D–P plane with the selection, the Pareto front and the base codec, and the metrics of the
selected point. Everything is in the page (data as JSON, explorer.js and explorer.css inlined)
except the images, which are referenced relative to the page, so the folder can be zipped and
opened from file:// anywhere.
"""
import html
import json
import math
import os
import pathlib
import re
import urllib.parse

from dcic_jax.report import curves as curves_lib

ASSETS = pathlib.Path(__file__).resolve().parent
MSE = ("MSE (8-bit)", "mse", False)


def _clean(v):
  return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _with_mse(values: dict) -> dict:
  """The metrics of one point or image, nan as null, MSE from PSNR (the plane's distortion)."""
  out = {k: _clean(float(v)) for k, v in values.items()
         if isinstance(v, (int, float)) and not isinstance(v, bool)}
  if out.get("psnr") is not None:
    out["mse"] = 255.0**2 * 10 ** (-out["psnr"] / 10)
  return out


def _entry(point: dict, keys) -> dict:
  """{"m": mean and set metrics, "img": {image: per-image metrics}} of a measured point."""
  merged = {k: curves_lib.metric(point, k) for k in keys}
  return {"m": _with_mse(merged),
          "img": {n: _with_mse(v) for n, v in point.get("per_image", {}).items()}}


def _href(path: pathlib.Path, page_dir: pathlib.Path) -> str | None:
  """`path` relative to the page, URL-quoted; None when the file does not exist."""
  if not path.is_file():
    return None
  return urllib.parse.quote(pathlib.PurePath(os.path.relpath(path, page_dir)).as_posix())


def _rate(name, bpp, bpp_image, points, base) -> dict:
  return {"name": name, "bpp": _clean(bpp), "bpp_image": bpp_image, "base": base,
          "kd": sorted({p["k_d"] for p in points}), "kp": sorted({p["k_p"] for p in points}),
          "points": sorted(points, key=lambda p: (p["k_d"], p["k_p"]))}


def _axes(metrics) -> dict:
  keys = [k for _, k, _ in metrics]
  x = curves_lib.perception_metric(metrics)[1]
  return {"x": x if x in keys else keys[0], "y": "mse" if "mse" in keys else keys[-1]}


def _metric_list(metrics) -> list[dict]:
  return [{"key": k, "title": t, "higher": h} for t, k, h in metrics]


def workdir_data(workdir, measurements: dict, page_dir) -> dict:
  """The explorer's data for a workdir: every rate with a (K_D, K_P) grid, every image."""
  workdir, page_dir = pathlib.Path(workdir), pathlib.Path(page_dir)
  images = sorted(p.stem for p in (workdir / "originals").glob("*.png"))
  metrics = curves_lib.available_metrics(measurements)
  keys = [k for _, k, _ in metrics]
  if any(k == "psnr" for k in keys):
    metrics = metrics + [MSE]
  rates = []
  for name in sorted((n for n, m in measurements.items() if len(m["points"]) > 1),
                     key=lambda n: measurements[n]["bpp"]):
    m = measurements[name]
    boundary = {v: k for k, v in curves_lib.boundary_points(m["points"]).items()}
    points = []
    for pname, p in m["points"].items():
      if pname == "base":
        continue
      folder = workdir / "decoded" / name / pname
      points.append({"name": pname, "k_d": p["k_d"], "k_p": p["k_p"],
                     "label": boundary.get(pname, ""), **_entry(p, keys),
                     "src": {n: _href(folder / f"{n}.png", page_dir) for n in images}})
    base = {**_entry(m["points"]["base"], keys),
            "src": {n: _href(workdir / "base" / name / f"{n}.png", page_dir) for n in images}}
    rates.append(_rate(name, m["bpp"], m.get("bpp_per_image", {}), points, base))
  return {"metrics": _metric_list(metrics), "axes": _axes(metrics), "images": images,
          "original": {n: _href(workdir / "originals" / f"{n}.png", page_dir) for n in images},
          "rates": rates}


def grid_dir_data(out_dir, original=None) -> dict:
  """The explorer's data for one file's `decompress --grid ... --out-dir DIR` results.

  settings.json lists the points. With the original image (`original`, copied into DIR as
  original.png so the folder stays self-contained) every point and the base reconstruction
  (base.png, written by decompress --grid) are measured against it; without it, only the
  rate is known.
  """
  from dcic_jax.errors import UserError
  out_dir = pathlib.Path(out_dir)
  settings_path = out_dir / "settings.json"
  try:
    settings = json.loads(settings_path.read_text())
    listed = [(float(p["k_d"]), float(p["k_p"]), str(p["file"])) for p in settings["points"]]
    if not listed:
      raise ValueError("no points")
  except OSError:
    raise UserError(f"{out_dir} has no settings.json: give the --out-dir of "
                    "`decompress --grid`") from None
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{settings_path}: not the settings.json of `decompress --grid` "
                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
  from dcic_jax.data.images import load_rgb
  name = pathlib.Path(str(settings.get("input", out_dir.name))).stem
  decodes = {f: load_rgb(out_dir / f) for _, _, f in listed}
  h, w = next(iter(decodes.values())).shape[:2]
  nbytes = settings.get("bytes")
  bpp = 8 * nbytes / (h * w) if isinstance(nbytes, int) else None
  base_path = out_dir / "base.png"
  reference, orig_src = None, None
  if original is not None:
    from dcic_jax.io import save_png
    reference = load_rgb(original)
    if reference.shape[:2] != (h, w):
      raise UserError(f"--original {original} is {reference.shape[1]}x{reference.shape[0]} but "
                      f"the decodes are {w}x{h}")
    save_png(out_dir / "original.png", reference)
    orig_src = _href(out_dir / "original.png", out_dir)
  points = [{"name": pathlib.Path(f).stem, "k_d": k_d, "k_p": k_p, "label": "",
             "src": {name: _href(out_dir / f, out_dir)},
             "measured": _measure(reference, decodes[f], name)} for k_d, k_p, f in listed]
  base = None
  if base_path.is_file():
    base = {"src": {name: _href(base_path, out_dir)},
            "measured": _measure(reference, load_rgb(base_path), name)}
  measured = [p["measured"] for p in points] + ([base["measured"]] if base else [])
  metrics = curves_lib.metrics_of(measured)
  keys = [k for _, k, _ in metrics]
  if "psnr" in keys:
    metrics = metrics + [MSE]
  for entry in points + ([base] if base else []):
    entry.update(_entry(entry.pop("measured"), keys))
  return {"metrics": _metric_list(metrics),
          "axes": _axes(metrics) if metrics else {"x": "", "y": ""},
          "images": [name], "original": {name: orig_src} if orig_src else None,
          "rates": [_rate(name, bpp, {name: bpp}, points, base)]}


def _measure(reference, image, name: str) -> dict:
  """A measured point (the layout of measurements/<rate>.json) of one decode; {} without the
  original."""
  if reference is None:
    return {}
  from dcic_jax import score
  r = score.score([reference], [image], seed=0, names=[name])
  return {"mean": r["mean"], "set": r["set"],
          "per_image": {name: {k: v for k, v in r["images"][0].items() if k != "image"}}}


def section_html(data: dict) -> str:
  """The explorer as one HTML fragment: its container, its data, its CSS and its script."""
  payload = (json.dumps(data, allow_nan=False, separators=(",", ":"))
             .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
  css = (ASSETS / "explorer.css").read_text()
  js = (ASSETS / "explorer.js").read_text()
  return (f'<style>{css}</style><div id="dx"></div>'
          f'<script type="application/json" id="dx-data">{payload}</script><script>{js}</script>')


def write_grid_report(out_dir, original=None) -> pathlib.Path:
  """DIR/report.html: the explorer of one file's decoded grid."""
  from dcic_jax.io import write_bytes
  out_dir = pathlib.Path(out_dir)
  data = grid_dir_data(out_dir, original)
  title = f"DCIC grid of {data['images'][0]}"
  note = ("Metrics against the original image." if data["original"] else
          "No original given (report DIR --original IMAGE measures every point against it).")
  page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}</style></head><body>"
          f"<h1>{html.escape(title)}</h1><p>{html.escape(note)}</p>{section_html(data)}"
          "</body></html>\n")
  path = out_dir / "report.html"
  write_bytes(path, page.encode())
  return path


def page_files(page: pathlib.Path) -> list[pathlib.Path]:
  """The page and every file it loads (its <img> sources and the explorer's images): what a
  reader downloads to see all of it."""
  text = page.read_text()
  refs = set()
  refs.update(html.unescape(m) for m in re.findall(r'<img[^>]* src="([^"]+)"', text))
  block = re.search(r'<script type="application/json" id="dx-data">(.*?)</script>', text, re.S)
  if block:
    data = json.loads(block.group(1))
    srcs = [s for r in data["rates"] for p in r["points"] + ([r["base"]] if r["base"] else [])
            for s in p["src"].values()] + list((data["original"] or {}).values())
    refs.update(s for s in srcs if s)
  files = {(page.parent / urllib.parse.unquote(r)).resolve() for r in refs}
  return [page] + sorted(files)
