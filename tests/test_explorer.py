"""The report's D–P explorer: the data it is built from, the `report DIR` page of a decoded grid,
and the page itself in headless Chromium (sliders, keys, every grid point, no console error)."""
import json
import math
import pathlib
import re
import sys
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from dcic_jax import cli
from dcic_jax.report import explorer, headless

sys.path.insert(0, str(REPO))
from configs import base as base_config  # noqa: E402

IMAGES = ("a", "b")
KD, KP = (0.0, 0.5, 1.0), (0.0, 1.0)
RATES = {"toy-q1": 0.11, "toy-q2": 0.23, "toy-q3": 0.41}   # toy-q1 has no grid (base only)


def _image(seed: int, h=24, w=32) -> np.ndarray:
  """A deterministic little picture (no RNG): gradients and a square that `seed` moves."""
  y, x = np.mgrid[:h, :w]
  im = np.stack([(x * 8 + seed * 40) % 256, (y * 10) % 256, ((x + y) * 5) % 256], -1)
  im[4 + seed % 10:12 + seed % 10, 6:14] = (255 - 20 * seed) % 256
  return im.astype(np.uint8)


def _point(psnr: float, swd: float, k_d=None, k_p=None) -> dict:
  p = {"mean": {"psnr": psnr, "ms_ssim": math.nan}, "set": {"n": 2, "seed": 0, "swd": swd},
       "per_image": {n: {"psnr": psnr + i, "ms_ssim": math.nan} for i, n in enumerate(IMAGES)}}
  if k_d is not None:
    p.update(k_d=k_d, k_p=k_p)
  return p


def make_workdir(root: pathlib.Path) -> dict:
  """A workdir as the pipeline leaves it before the report: originals, base and decoded PNGs,
  measurements, the decode setting. Returns the measurements."""
  save = lambda path, im: (path.parent.mkdir(parents=True, exist_ok=True),  # noqa: E731
                           Image.fromarray(im).save(path))
  for i, n in enumerate(IMAGES):
    save(root / "originals" / f"{n}.png", _image(i))
  measurements = {}
  for r, (rate, bpp) in enumerate(RATES.items()):
    points = {"base": _point(25.0 + r, 0.2 - 0.01 * r)}
    for i, n in enumerate(IMAGES):
      save(root / "base" / rate / f"{n}.png", _image(i + 3 * r + 1))
    if r:
      for a, k_d in enumerate(KD):
        for b, k_p in enumerate(KP):
          name = f"kd{k_d:g}_kp{k_p:g}"
          points[name] = _point(20 + r + 4 * a + b, 0.3 - 0.05 * b - 0.01 * a, k_d, k_p)
          for i, n in enumerate(IMAGES):
            save(root / "decoded" / rate / name / f"{n}.png", _image(i + 7 * a + 13 * b + r))
      (root / "decoded" / rate / "setting.json").write_text(json.dumps(
          {"prior": "analytic:0.5", "dcic": {"num_steps": 3, "start_step": 0, "mode": "project",
                                             "kd": "0,0.5,1", "kp": "0,1"}}))
    measurements[rate] = {"rate": rate, "path": "", "bpp": bpp,
                          "bpp_per_image": {n: bpp + 0.01 * i for i, n in enumerate(IMAGES)},
                          "points": points}
  (root / "measurements").mkdir()
  for rate, m in measurements.items():
    (root / "measurements" / f"{rate}.json").write_text(json.dumps(m))
  return measurements


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  """(workdir, measurements, report.html) of a demo-like run with one published curve."""
  from dcic_jax.report import build
  root = tmp_path_factory.mktemp("wd")
  measurements = make_workdir(root)
  published = root / "published.json"
  published.write_text(json.dumps({"name": "Published", "results": {
      "bpp": [0.1, 0.2, 0.4], "psnr": [24.0, 26.0, 28.0], "fid": [30.0, 20.0, 10.0]}}))
  config = base_config.get_config()
  config.report.crop = 16
  config.report.baselines = str(published)
  build.build_report(root, measurements, config)
  return root, measurements, root / "report" / "report.html"


def _embedded(page: pathlib.Path) -> dict:
  block = re.search(r'<script type="application/json" id="dx-data">(.*?)</script>',
                    page.read_text(), re.S)
  return json.loads(block.group(1))


def test_data_follows_the_measurements(report):
  root, measurements, page = report
  data = explorer.workdir_data(root, measurements, page.parent)
  assert _embedded(page) == json.loads(json.dumps(data))  # the page embeds exactly this
  assert [r["name"] for r in data["rates"]] == ["toy-q2", "toy-q3"]  # grid rates, by bpp
  assert data["images"] == list(IMAGES)
  assert data["axes"] == {"x": "swd", "y": "mse"}
  assert [m["key"] for m in data["metrics"]] == ["psnr", "swd", "mse"]  # MS-SSIM is all nan
  for r in data["rates"]:
    m = measurements[r["name"]]
    assert r["kd"] == list(KD) and r["kp"] == list(KP) and r["bpp"] == m["bpp"]
    assert len(r["points"]) == len(KD) * len(KP)
    for p in r["points"] + [r["base"]]:
      measured = m["points"][p.get("name", "base")]
      assert p["m"]["psnr"] == measured["mean"]["psnr"] and p["m"]["swd"] == measured["set"]["swd"]
      assert p["img"]["a"]["ms_ssim"] is None  # nan is null: the JSON stays strict
      assert math.isclose(p["m"]["mse"], 255**2 * 10 ** (-p["m"]["psnr"] / 10))
      assert p["img"]["b"]["psnr"] == measured["per_image"]["b"]["psnr"]
      for n in IMAGES:  # every image the page shows exists, relative to the page
        assert (page.parent / urllib.parse.unquote(p["src"][n])).resolve().is_file()
    labels = {p["label"]: p["name"] for p in r["points"] if p["label"]}
    assert labels == {"DCIC_RD": "kd1_kp0", "DCIC_RP": "kd0_kp1", "DCIC_RDP": "kd1_kp1"}
  assert data["rates"][0]["points"][1]["src"]["a"] == "../decoded/toy-q2/kd0_kp1/a.png"
  assert data["original"]["a"] == "../originals/a.png"


def test_page_is_self_contained_and_light(report):
  root, _, page = report
  text = page.read_text()
  assert not re.search(r"(src|href)=\"(https?:)?//", text) and "fetch(" not in text
  files = explorer.page_files(page)
  decoded = list((root / "decoded").rglob("*.png"))
  assert set(decoded) <= set(files) and (root / "report" / "rd_curves.png") in files
  assert all(f.is_file() for f in files)
  assert sum(f.stat().st_size for f in files) < 1_000_000  # page weight of this small run


def test_markdown_has_published_curve_and_bd_reasons(report):
  _, _, page = report
  md = (page.parent / "report.md").read_text()
  assert "interactive explorer" in md and "`Published`" in md
  assert "### Against toy (base)" in md and "### Against Published" in md
  assert "nan" not in md.replace("–", "")
  row = next(line for line in md.splitlines() if line.startswith("| toy DCIC_RD |"))
  assert "n/a (" in row  # DCIC_RD has 2 rates whose FID is not measured: it says so
  assert "FID" in md.split("### Against Published")[1].splitlines()[2]


def test_section_html_cannot_be_closed_by_data():
  data = {"metrics": [], "axes": {"x": "", "y": ""}, "images": ["</script><b>x"],
          "original": None, "rates": []}
  fragment = explorer.section_html(data)
  assert fragment.count("</script>") == 2
  payload = re.search(r'id="dx-data">(.*?)</script>', fragment, re.S).group(1)
  assert json.loads(payload)["images"] == ["</script><b>x"]


def _grid_dir(root: pathlib.Path) -> pathlib.Path:
  """What `decompress IN.dcic --grid 0,1x0,1 --out-dir DIR` leaves: PNGs, base.png, settings."""
  root.mkdir()
  points = []
  for a, k_d in enumerate((0.0, 1.0)):
    for b, k_p in enumerate((0.0, 1.0)):
      name = f"kd{k_d:g}_kp{k_p:g}.png"
      Image.fromarray(_image(2 * a + b + 1)).save(root / name)
      points.append({"k_d": k_d, "k_p": k_p, "file": name})
  Image.fromarray(_image(9)).save(root / "base.png")
  (root / "settings.json").write_text(json.dumps({"input": "photo.dcic", "bytes": 48,
                                                  "points": points}))
  return root


def test_report_dir_of_a_decoded_grid(tmp_path, capsys):
  out = _grid_dir(tmp_path / "grid")
  assert cli.main(["report", str(out)]) == 0
  assert "report.html" in capsys.readouterr().out
  data = _embedded(out / "report.html")
  assert data["original"] is None and data["metrics"] == []  # nothing to measure against
  (r,) = data["rates"]
  assert r["name"] == "photo" and r["kd"] == [0, 1] and r["kp"] == [0, 1]
  assert r["bpp"] == 8 * 48 / (24 * 32) and r["base"]["src"] == {"photo": "base.png"}
  assert r["points"][3]["src"] == {"photo": "kd1_kp1.png"}

  original = tmp_path / "photo.png"
  Image.fromarray(_image(0)).save(original)
  assert cli.main(["report", str(out), "--original", str(original)]) == 0
  data = _embedded(out / "report.html")
  assert data["original"] == {"photo": "original.png"} and (out / "original.png").is_file()
  psnr = data["rates"][0]["points"][0]["img"]["photo"]["psnr"]
  diff = (_image(0).astype(float) - _image(1)) ** 2
  assert math.isclose(psnr, 10 * math.log10(255**2 / diff.mean()), rel_tol=1e-4)
  assert {"psnr", "swd", "mse"} <= {m["key"] for m in data["metrics"]}


@pytest.mark.parametrize("case", ["no settings", "bad settings", "wrong size"])
def test_report_dir_errors_are_one_line(tmp_path, capsys, case):
  out = _grid_dir(tmp_path / "grid")
  args = ["report", str(out)]
  if case == "no settings":
    (out / "settings.json").unlink()
  elif case == "bad settings":
    (out / "settings.json").write_text('{"points": [{"k_d": 0}]}')
  else:
    Image.fromarray(_image(0, 10, 10)).save(tmp_path / "small.png")
    args += ["--original", str(tmp_path / "small.png")]
  assert cli.main(args) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and err.count("\n") == 1
  assert not (out / "report.html").exists()


# ---- the page in a browser ----------------------------------------------------------------------

needs_browser = pytest.mark.skipif(
    headless.find_binary() is None,
    reason="no Chromium on PATH (Debian: apt-get install chromium; or set $CHROMIUM): the "
           "explorer page was not opened in a browser")


@needs_browser
def test_explorer_in_headless_chromium(report, tmp_path):
  _, _, page = report
  with headless.Chromium() as browser:
    browser.open(page.as_uri())
    first = headless.state(browser)
    assert first["rate"] == "toy-q2" and first["src"] == first["expected_src"] and first["loaded"]
    assert first["selected"] == "kd0_kp0"

    # the K_P slider, as a user drags it
    browser.evaluate("(() => { const s = document.getElementById('dx-kp'); s.value = 1;"
                     "s.dispatchEvent(new Event('input', {bubbles: true})); })()")
    moved = headless.state(browser)
    assert moved["src"] == "../decoded/toy-q2/kd0_kp1/a.png" and moved["loaded"]
    assert moved["selected"] == "kd0_kp1" != first["selected"]

    # real key presses on the focused explorer: ↑ raises K_D, PgDn goes to the next rate
    browser.evaluate("document.getElementById('dx').focus()")
    browser.key("ArrowUp")
    assert headless.state(browser)["selected"] == "kd0.5_kp1"
    browser.key("PageDown")
    after = headless.state(browser)
    assert (after["rate"], after["selected"], after["src"]) == (
        "toy-q3", "kd0.5_kp1", "../decoded/toy-q3/kd0.5_kp1/a.png")
    assert "kd=0.5" in browser.evaluate("location.hash")

    walk = headless.visit_every_point(browser)
    assert walk["wrong"] == [] and walk["visited"] == walk["total"] == 2 * len(KD) * len(KP)

    shot = browser.screenshot(tmp_path / "explorer.png", "#dx")
    with Image.open(shot) as im:
      assert im.width > 500 and im.height > 300
      assert np.unique(np.asarray(im.convert("L"))).size > 20  # drawn, not a blank page
    assert browser.errors == []

    # the hooks do catch errors: a page that logs one and loads a missing image
    bad = tmp_path / "bad.html"
    bad.write_text('<script>console.error("boom")</script><img src="missing.png">')
    browser.open(bad.as_uri())
    browser.evaluate("new Promise((done) => setTimeout(done, 50))")
    assert any("boom" in e for e in browser.errors)
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in browser.errors)
