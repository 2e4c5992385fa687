"""matplotlib figures of the report (Agg backend, PNG files)."""
import pathlib

from dcic_jax.report import curves as curves_lib


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: pathlib.Path) -> pathlib.Path:
  from dcic_jax.io import atomic_write  # pylint: disable=g-import-not-at-top
  return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


_STYLE = {"base": dict(marker="o", ls="-"), "DCIC_RD": dict(marker="s", ls="--"),
          "DCIC_RP": dict(marker="^", ls=":"), "DCIC_RDP": dict(marker="D", ls="-.")}
_PUBLISHED = dict(marker="x", ls="-", lw=0.8, alpha=0.8)  # curves from report.baselines


def rd_curves(curve_list: list[curves_lib.Curve], metrics, path: pathlib.Path) -> pathlib.Path:
  """One panel per metric: real bpp (file sizes) against the metric, every curve."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
  for ax, (title, key, higher) in zip(axes[0], metrics):
    for c in curve_list:
      kind = c.label.rsplit(" ", 1)[-1].strip("()")
      ax.plot(c.bpp, c.values(key), label=c.label, **_STYLE.get(kind, _PUBLISHED))
    ax.set_xlabel("bpp (real file size)")
    ax.set_ylabel(title + ("" if higher else " (lower is better)"))
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  out = _save(fig, path)
  plt.close(fig)
  return out


def dp_plane(measurements: dict, rate_names: list[str], perception: tuple[str, str],
             path: pathlib.Path) -> pathlib.Path:
  """Distortion (MSE) against perception for every grid point of every DCIC rate, each rate's
  Pareto front (lower both better) and its base codec."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.8))
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  p_title, p_key = perception
  for i, name in enumerate(rate_names):
    m, colour = measurements[name], colours[i % len(colours)]
    pts = []
    for pname, p in m["points"].items():
      mse = 255.0**2 * 10 ** (-curves_lib.metric(p, "psnr") / 10)
      pts.append((curves_lib.metric(p, p_key), mse, pname))
    grid = [q for q in pts if q[2] != "base"]
    ax.scatter([q[0] for q in grid], [q[1] for q in grid], color=colour, s=18,
               label=f"{name} ({m['bpp']:.3f} bpp) grid")
    for x, y, pname in grid:
      ax.annotate(pname.replace("kd", "").replace("_kp", ","), (x, y), fontsize=6,
                  color=colour, xytext=(2, 2), textcoords="offset points")
    front = curves_lib.pareto_front(grid)
    ax.plot([q[0] for q in front], [q[1] for q in front], color=colour, lw=1)
    base = [q for q in pts if q[2] == "base"]
    ax.scatter([q[0] for q in base], [q[1] for q in base], color=colour, marker="x", s=50)
  ax.set_xlabel(f"{p_title} (lower is more realistic)")
  ax.set_ylabel("MSE (8-bit)")
  ax.set_title("D–P plane: labels K_D,K_P; x = base codec; line = Pareto front")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  out = _save(fig, path)
  plt.close(fig)
  return out


def image_grid(original, base, decoded: dict, k_d_values, k_p_values, crop: int,
               path: pathlib.Path) -> pathlib.Path:
  """A centre crop of one image: original and base, then rows K_D × columns K_P."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  from dcic_jax.data.images import center_crop  # pylint: disable=g-import-not-at-top
  size = min(crop, *original.shape[:2])
  cell = max(size, 128)  # small crops are shown enlarged (nearest) so the labels fit
  label_h, pad = 14, 4
  cols, rows = max(len(k_p_values), 2), len(k_d_values) + 1
  canvas = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + label_h + pad) + pad),
                     "white")
  draw = ImageDraw.Draw(canvas)

  def put(image, r, c, label):
    x0, y0 = pad + c * (cell + pad), pad + r * (cell + label_h + pad)
    draw.text((x0, y0), label, fill="black")
    tile = Image.fromarray(center_crop(image, size)).resize((cell, cell), Image.NEAREST)
    canvas.paste(tile, (x0, y0 + label_h))

  put(original, 0, 0, "original")
  put(base, 0, 1, "base x_b")
  for r, k_d in enumerate(k_d_values):
    for c, k_p in enumerate(k_p_values):
      put(decoded[(k_d, k_p)], r + 1, c, f"K_D={k_d:g} K_P={k_p:g}")
  from dcic_jax.io import atomic_write  # pylint: disable=g-import-not-at-top
  return atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))

