"""The results report of a workdir: Markdown and HTML with the same tables and PNG figures.

Every number comes from `measurements/<rate>.json` (the evaluate stage) and every figure is
redrawn from them, so deleting `report/` and re-running the job rebuilds it identically.
"""
import html
import json
import math
import pathlib

from dcic_jax.data.images import load_rgb
from dcic_jax.io import write_bytes
from dcic_jax.report import baselines as baselines_lib
from dcic_jax.report import curves as curves_lib
from dcic_jax.report import explorer
from dcic_jax.report import plots
from dcic_jax.sweep import point_name


def _fmt(v: float, key: str) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "–"
  return f"{v:.4f}" if key in ("ms_ssim", "swd", "lpips", "kid") else f"{v:.2f}"


def headline_rows(measurements: dict, metrics) -> list[list[str]]:
  """Per rate: bpp, then base / DCIC_RD / DCIC_RP / DCIC_RDP with every available metric."""
  rows = []
  for fam, names in curves_lib.families(measurements).items():
    for name in names:
      m = measurements[name]
      decoders = [("base", "base")] + sorted(
          curves_lib.boundary_points(m["points"]).items(),
          key=lambda kv: ("DCIC_RD", "DCIC_RP", "DCIC_RDP").index(kv[0]))
      for label, pname in decoders:
        p = m["points"][pname]
        setting = "" if pname == "base" else f" ({pname})"
        rows.append([name, f"{m['bpp']:.4f}", label + setting]
                    + [_fmt(curves_lib.metric(p, key), key) for _, key, _ in metrics])
  return rows


def grid_rows(m: dict, metrics) -> list[list[str]]:
  rows = []
  for pname, p in m["points"].items():
    if pname == "base":
      continue
    rows.append([f"{p['k_d']:g}", f"{p['k_p']:g}"]
                + [_fmt(curves_lib.metric(p, key), key) for _, key, _ in metrics])
  return rows


class _Doc:
  """Blocks rendered twice: Markdown and HTML."""

  def __init__(self):
    self.md, self.html = [], []

  def heading(self, text: str, level: int = 2):
    self.md.append("#" * level + " " + text + "\n")
    self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

  def para(self, text: str):
    self.md.append(text + "\n")
    self.html.append(f"<p>{html.escape(text)}</p>")

  def table(self, header: list[str], rows: list[list[str]]):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    self.md.append("\n".join(lines) + "\n")
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    self.html.append(f"<table><tr>{cells}</tr>{body}</table>")

  def image(self, path: pathlib.Path, caption: str):
    self.md.append(f"![{caption}]({path.name})\n")
    self.html.append(f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(caption)}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")

  def explorer(self, fragment: str, note: str):
    """The interactive explorer in the HTML; a pointer to it in the Markdown."""
    self.md.append(note + "\n")
    self.html.append(fragment)

  def write(self, out_dir: pathlib.Path, title: str) -> pathlib.Path:
    write_bytes(out_dir / "report.md", ("\n".join(self.md)).encode())
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
             "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:"
             "right}img{max-width:100%}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(self.html)}</body></html>\n")
    write_bytes(out_dir / "report.html", page.encode())
    return out_dir / "report.md"


def build_report(workdir, measurements: dict, config, stage_order=()) -> pathlib.Path:
  """report.md / report.html in workdir/report; `stage_order` lists the pipeline's stages in the
  order its stage-time table should show them (others follow in the order they were recorded)."""
  workdir = pathlib.Path(workdir)
  out = workdir / "report"
  out.mkdir(parents=True, exist_ok=True)
  metrics = curves_lib.available_metrics(measurements)
  published = baselines_lib.load(config.report.get("baselines", ""))
  curve_list = curves_lib.curves(measurements) + published
  curve_metrics = curves_lib.metrics_of([p for c in curve_list for p in c.points])
  stages = json.loads((workdir / "stages.json").read_text()) if (
      workdir / "stages.json").is_file() else {}
  names = sorted(p.stem for p in (workdir / "originals").glob("*.png"))
  dcic_names = [n for n, m in measurements.items() if len(m["points"]) > 1]

  doc = _Doc()
  doc.heading("dcic_jax results", 1)
  doc.para(f"Workdir `{workdir}`. {len(names)} evaluation images"
           + (f" (centre crops of {config.eval.crop}×{config.eval.crop})" if config.eval.crop
              else " at full resolution")
           + f" from `{config.eval.images_dir}`. Rates are real `.dcic` file sizes (header "
           "included). Patch SWD (Laplacian-pyramid 7×7 patches, lower is more realistic) is "
           "measured between the set of reconstructions and the set of originals.")
  if dcic_names:
    setting = json.loads((workdir / "decoded" / dcic_names[0] / "setting.json").read_text())
    d = setting["dcic"]
    doc.para(f"DCIC decoder: prior `{setting['prior']}`, {d['num_steps']} steps, start step "
             f"{d['start_step']}, mode {d['mode']}, grid K_D ∈ {{{d['kd']}}} × K_P ∈ "
             f"{{{d['kp']}}}. " + k_meaning(d) + " DCIC_RD is "
             "K_P = 0 at the largest K_D, DCIC_RP is K_D = 0 at the largest K_P, DCIC_RDP is "
             "K_D = K_P = 1.")

  doc.heading("Headline table")
  doc.table(["rate", "bpp", "decoder"] + [t for t, _, _ in metrics],
            headline_rows(measurements, metrics))

  if dcic_names:
    doc.heading("Explorer")
    doc.explorer(explorer.section_html(explorer.workdir_data(workdir, measurements, out)),
                 "report.html has an interactive explorer of every decoded (K_D, K_P) point: "
                 "sliders, the decode beside the original and the base reconstruction, the D–P "
                 "plane and the metrics of the selected point.")

  doc.heading("Rate–distortion–perception curves")
  doc.image(plots.rd_curves(curve_list, curve_metrics, out / "rd_curves.png"),
            "RD curves: real bpp against each metric, base codecs, DCIC boundary curves"
            + (" and published curves (report.baselines)" if published else ""))
  if published:
    doc.para("Published curves from report.baselines: "
             + ", ".join(f"`{c.label}`" for c in published) + ". Their numbers come from other "
             "test sets and protocols than this run's unless the files say otherwise.")

  if len(curve_list) > 1:
    doc.heading("BD metrics")
    doc.para("BD-rate / BD-metric (PCHIP) of each curve against an anchor, for each metric: "
             "negative BD-rate and positive BD-PSNR / BD-MS-SSIM are better, as are negative "
             "BD-FID and BD-SWD. A cell that cannot be computed says why.")
    for anchor in [curve_list[0]] + published:
      doc.heading(f"Against {anchor.label}", 3)
      doc.table(["curve"] + [t for t, _, _ in curve_metrics],
                curves_lib.bd_table(curve_list, curve_metrics, anchor))

  if dcic_names:
    perception = curves_lib.perception_metric(metrics)
    doc.heading("Distortion–perception plane")
    doc.image(plots.dp_plane(measurements, dcic_names, perception, out / "dp_plane.png"),
              "every (K_D, K_P) grid point of every DCIC rate with its Pareto front")
    for name in dcic_names:
      doc.heading(f"Grid at {name} ({measurements[name]['bpp']:.4f} bpp)", 3)
      doc.table(["K_D", "K_P"] + [t for t, _, _ in metrics], grid_rows(measurements[name], metrics))
    doc.heading("Image grid")
    for name in dcic_names[:2]:
      points = [p for n, p in measurements[name]["points"].items() if n != "base"]
      k_d_values = sorted({p["k_d"] for p in points})
      k_p_values = sorted({p["k_p"] for p in points})
      image = names[0]
      decoded = {(p["k_d"], p["k_p"]): load_rgb(
          workdir / "decoded" / name / point_name(p["k_d"], p["k_p"]) / f"{image}.png")
          for p in points}
      path = plots.image_grid(load_rgb(workdir / "originals" / f"{image}.png"),
                              load_rgb(workdir / "base" / name / f"{image}.png"), decoded,
                              k_d_values, k_p_values, config.report.crop,
                              out / f"grid_{name}_{image}.png")
      doc.image(path, f"{image} at {name}: rows K_D, columns K_P ({config.report.crop}px crop)")

  if stages:
    order = [k for k in stage_order if k in stages] + [k for k in stages if k not in stage_order]
    doc.heading("Stage times")
    doc.para("Wall time of the run that did each stage's work (a resumed run keeps the times "
             "of the stages it skipped).")
    doc.table(["stage", "seconds", "finished"],
              [[k, f"{stages[k]['seconds']:.1f}", stages[k]["finished"]] for k in order])
  return doc.write(out, "dcic_jax results")


def k_meaning(dcic: dict) -> str:
  """What K_D and K_P mean for a decode's settings (config.dcic), in one paragraph."""
  if dcic.get("mode", "project") != "project":
    return ("K_D and K_P weight the penalty terms of the distortion and idempotence constraints "
            "(the penalty form, calibrated per codec by w_D, w_P in codec.json).")
  return ("K_D is the fraction of the way each reverse step moves the estimate x̂0 toward the "
          f"distortion set, the ball ‖x̂0 − x̂_b‖² ≤ {dcic.get('ball', 0.02):g}·D_q around the "
          "base reconstruction (D_q: the squared error the quantisation cells explain); K_P the "
          "fraction of the way toward x̂0's mean given that re-encoding gives the file's latents "
          "back, and after the last step toward the nearest such image. K = 0 turns a constraint "
          "off; K_D = 1 keeps the output in the ball, K_P = 1 makes it re-encode to the file "
          "exactly (docs/dcic.md).")


def headline_markdown(measurements: dict) -> str:
  """The headline table alone (printed at the end of a run)."""
  metrics = curves_lib.available_metrics(measurements)
  doc = _Doc()
  doc.table(["rate", "bpp", "decoder"] + [t for t, _, _ in metrics],
            headline_rows(measurements, metrics))
  return doc.md[0]
