"""The report page of a workdir in headless Chromium: page weight, first paint, every grid point.

  python experiments/bench_report.py --workdir /tmp/dcic_demo [--runs 7] [--screenshot docs/explorer.png]

Prints the page weight (report.html and every file it loads: figures and the explorer's images),
the first contentful paint and the explorer's ready time from file:// (median and range over
--runs page loads, each in a fresh browser with an empty profile), then walks the keyboard over
every (K_D, K_P) point of every rate and reports how many showed the right image with the right
point highlighted, and every console error. With --screenshot, a PNG of the explorer at a
mid-grid point (palette-reduced to stay small). Needs Chromium (`chromium` package or $CHROMIUM).
"""
import argparse
import io
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from dcic_jax.io import write_bytes  # noqa: E402
from dcic_jax.report import explorer, headless  # noqa: E402

# the first contentful paint in ms after navigation start, once the page has painted
PAINT = ("new Promise((done) => new PerformanceObserver((list) => { for (const e of "
         "list.getEntries()) if (e.name === 'first-contentful-paint') done(e.startTime); })"
         ".observe({type: 'paint', buffered: true}))")


def page_weight(page: pathlib.Path) -> tuple[int, int]:
  files = explorer.page_files(page)
  return sum(f.stat().st_size for f in files), len(files)


def first_paint(url: str, runs: int) -> tuple[list[float], list[float]]:
  """(first contentful paint ms, explorer ready ms) of `runs` loads, a fresh browser each."""
  paints, ready = [], []
  for _ in range(runs):
    with headless.Chromium() as browser:
      browser.open(url)
      paints.append(browser.evaluate(PAINT))
      ready.append(float(browser.evaluate("document.getElementById('dx').dataset.ready")))
  return paints, ready


def screenshot(url: str, path: pathlib.Path) -> int:
  """The explorer at the middle of the second rate's grid, second image; returns its size."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with headless.Chromium(width=1120, height=900) as browser:
    browser.open(url)
    browser.evaluate("(() => { const dx = document.getElementById('dx'); dx.focus();"
                     "const s = document.getElementById('dx-rate');"
                     "s.value = Math.min(1, s.options.length - 1);"
                     "s.dispatchEvent(new Event('change')); })()")
    for key in ("ArrowUp", "ArrowRight"):
      browser.key(key)
    browser.key("]")  # the next image
    raw = browser.screenshot(path.with_suffix(".raw.png"), "#dx")
    if browser.errors:
      raise SystemExit(f"console errors: {browser.errors}")
  with Image.open(raw) as im:
    small = im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=0)
  raw.unlink()
  buf = io.BytesIO()
  small.save(buf, format="PNG", optimize=True)
  write_bytes(path, buf.getvalue())
  return len(buf.getvalue())


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True, help="a finished workdir (python -m dcic_jax.main)")
  p.add_argument("--runs", type=int, default=7, help="page loads for the first-paint times")
  p.add_argument("--screenshot", type=pathlib.Path, default=None, help="write a PNG of the explorer")
  args = p.parse_args()
  page = pathlib.Path(args.workdir).resolve() / "report" / "report.html"
  if not page.is_file():
    raise SystemExit(f"no report at {page}: run the job first")
  if headless.find_binary() is None:
    raise SystemExit("no Chromium (apt-get install chromium, or set $CHROMIUM)")
  weight, n = page_weight(page)
  print(f"page weight: {weight / 1e6:.2f} MB in {n} files ({page})")
  paints, ready = first_paint(page.as_uri(), args.runs)
  for name, ms in (("first contentful paint", paints), ("explorer ready", ready)):
    print(f"{name}: median {statistics.median(ms):.0f} ms, range {min(ms):.0f}-{max(ms):.0f} ms "
          f"over {len(ms)} loads from file://")
  with headless.Chromium() as browser:
    browser.open(page.as_uri())
    walk = headless.visit_every_point(browser)
    print(f"grid points shown correctly by keyboard walk: {walk['visited']} of {walk['total']}")
    for s in walk["wrong"]:
      print(f"  wrong: {s}")
    print(f"console errors: {len(browser.errors)}")
    for e in browser.errors:
      print(f"  {e}")
  if args.screenshot:
    size = screenshot(page.as_uri(), args.screenshot)
    print(f"screenshot: {args.screenshot} ({size / 1e3:.0f} kB)")
  if walk["wrong"] or browser.errors or walk["visited"] != walk["total"]:
    sys.exit(1)


if __name__ == "__main__":
  main()
