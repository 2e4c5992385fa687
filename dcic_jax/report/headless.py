"""Headless Chromium over the DevTools protocol on a pipe: the report page's browser test, its
benchmark (first paint, every grid point) and the README screenshot.

The pipe (--remote-debugging-pipe: JSON messages ending in NUL on file descriptors 3 and 4) needs
no websocket package and no port. Every console error, uncaught exception and failed load of the
page is collected in `Chromium.errors`.
"""
import base64
import json
import os
import pathlib
import select
import shutil
import signal
import tempfile
import time

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_binary() -> str | None:
  """The Chromium executable ($CHROMIUM or the first on PATH), or None."""
  env = os.environ.get("CHROMIUM")
  if env:
    return env
  return next((p for p in map(shutil.which, BINARIES) if p), None)


def _above(fd: int, low: int) -> int:
  """`fd` moved to a number >= low."""
  import fcntl  # pylint: disable=g-import-not-at-top
  moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
  os.close(fd)
  return moved


class Chromium:
  """One headless browser with one page; `with Chromium() as b: b.open(url) ...`."""

  def __init__(self, binary: str | None = None, width: int = 1280, height: int = 1000,
               timeout: float = 30.0):
    binary = binary or find_binary()
    if binary is None:
      raise FileNotFoundError("no Chromium found (install the `chromium` package or set "
                              "$CHROMIUM)")
    self.timeout, self.errors, self._id, self._buf = timeout, [], 0, b""
    self._events: list[dict] = []
    self._profile = tempfile.mkdtemp(prefix="dcic_chromium_")
    to_child, self._write_fd = os.pipe()
    self._read_fd, from_child = os.pipe()
    to_child, from_child = _above(to_child, 10), _above(from_child, 10)  # no clash with 3, 4
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
            f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"]
    # posix_spawn puts the pipe ends on fds 3 and 4, where Chromium looks for them (no fork
    # with a preexec_fn: unsafe in a process that runs JAX's threads)
    null = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    self._pid = os.posix_spawnp(binary, [binary, *args], os.environ, file_actions=null + [
        (os.POSIX_SPAWN_DUP2, to_child, 3), (os.POSIX_SPAWN_DUP2, from_child, 4)])
    os.close(to_child)
    os.close(from_child)
    self._session = None
    self._width, self._height = width, height

  # ---- protocol ---------------------------------------------------------------------------------
  def _read_message(self, deadline: float) -> dict:
    while b"\0" not in self._buf:
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([self._read_fd], [], [], left)[0]:
        raise TimeoutError("Chromium did not answer in time")
      chunk = os.read(self._read_fd, 1 << 16)
      if not chunk:
        raise RuntimeError("Chromium closed the DevTools pipe")
      self._buf += chunk
    raw, self._buf = self._buf.split(b"\0", 1)
    message = json.loads(raw)
    if "method" in message:
      self._on_event(message)
    return message

  def _on_event(self, m: dict) -> None:
    self._events.append(m)
    p = m.get("params", {})
    if m["method"] == "Runtime.exceptionThrown":
      d = p["exceptionDetails"]
      self.errors.append("exception: " + d.get("exception", {}).get("description", d.get("text")))
    elif m["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
      self.errors.append("console." + p["type"] + ": " + " ".join(
          str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
    elif m["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
      self.errors.append("log: " + p["entry"]["text"] + " " + p["entry"].get("url", ""))

  def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
    self._id += 1
    message = {"id": self._id, "method": method, "params": params or {}}
    if session and self._session:
      message["sessionId"] = self._session
    os.write(self._write_fd, json.dumps(message).encode() + b"\0")
    deadline = time.monotonic() + self.timeout
    while True:
      reply = self._read_message(deadline)
      if reply.get("id") == self._id:
        if "error" in reply:
          raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

  def wait_event(self, method: str) -> dict:
    deadline = time.monotonic() + self.timeout
    seen = len(self._events)
    while True:
      for m in self._events[seen:]:
        if m["method"] == method:
          return m.get("params", {})
      seen = len(self._events)
      self._read_message(deadline)

  # ---- page -------------------------------------------------------------------------------------
  def open(self, url: str) -> None:
    """Navigate the page to `url` and wait for its load event."""
    if self._session is None:
      target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
      self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                session=False)["sessionId"]
      for domain in ("Page", "Runtime", "Log"):
        self.send(f"{domain}.enable")
      self.send("Emulation.setDeviceMetricsOverride", {
          "width": self._width, "height": self._height, "deviceScaleFactor": 1, "mobile": False})
    self._events.clear()
    self.send("Page.navigate", {"url": url})
    self.wait_event("Page.loadEventFired")

  def evaluate(self, expression: str):
    """The JSON value of a JS expression in the page (promises are awaited)."""
    r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                       "awaitPromise": True})
    if "exceptionDetails" in r:
      d = r["exceptionDetails"]
      raise RuntimeError(d.get("exception", {}).get("description", d.get("text")))
    return r["result"].get("value")

  def key(self, key: str) -> None:
    """A real key press (keydown + keyup) on the focused element, e.g. "ArrowRight"."""
    codes = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40, "PageUp": 33,
             "PageDown": 34}
    params = {"key": key, "code": key, "windowsVirtualKeyCode": codes.get(key, 0)}
    if len(key) == 1:  # a printable key also types its character
      params["text"] = key
    self.send("Input.dispatchKeyEvent", {"type": "rawKeyDown", **params})
    self.send("Input.dispatchKeyEvent", {"type": "keyUp", **params})

  def screenshot(self, path, selector: str | None = None) -> pathlib.Path:
    """PNG of the viewport, or of the element `selector` (scrolled into view)."""
    params = {"format": "png"}
    if selector:
      box = self.evaluate(f"(() => {{const r = document.querySelector({json.dumps(selector)})"
                          ".getBoundingClientRect(); return [r.x + scrollX, r.y + scrollY, "
                          "r.width, r.height];})()")
      params["clip"] = dict(zip(("x", "y", "width", "height"), box), scale=1)
      params["captureBeyondViewport"] = True
    png = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
    path = pathlib.Path(path)
    path.write_bytes(png)
    return path

  def close(self) -> None:
    try:
      self.send("Browser.close", session=False)
    except (OSError, RuntimeError, TimeoutError):
      pass
    deadline = time.monotonic() + 10
    while os.waitpid(self._pid, os.WNOHANG) == (0, 0):
      if time.monotonic() > deadline:
        os.kill(self._pid, signal.SIGKILL)
        os.waitpid(self._pid, 0)
        break
      time.sleep(0.05)
    os.close(self._write_fd)
    os.close(self._read_fd)
    shutil.rmtree(self._profile, ignore_errors=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# The page side of a check: the explorer's state, and the image and point it should show.
_STATE = """(() => {
  const dx = document.getElementById("dx"), d = JSON.parse(document.getElementById("dx-data").textContent);
  const r = d.rates.find((r) => r.name === dx.dataset.rate);
  const kd = r.kd[Number(document.getElementById("dx-kd").value)];
  const kp = r.kp[Number(document.getElementById("dx-kp").value)];
  const p = r.points.find((p) => p.k_d === kd && p.k_p === kp);
  const img = document.querySelector('#dx img[data-kind=dcic]');
  const sel = document.getElementById("dx-selected");
  return new Promise((done) => {
    const report = () => done({rate: r.name, image: dx.dataset.image, kd, kp,
      expected_src: p ? p.src[dx.dataset.image] : null, src: img.getAttribute("src"),
      loaded: img.complete && img.naturalWidth > 0,
      selected: sel ? sel.getAttribute("data-point") : null, expected_point: p ? p.name : null});
    if (img.complete) report(); else img.addEventListener("load", report, {once: true}),
      img.addEventListener("error", report, {once: true});
  });
})()"""


def state(browser: Chromium) -> dict:
  return browser.evaluate(_STATE)


def visit_every_point(browser: Chromium) -> dict:
  """Walk the keyboard over every grid point of every rate (↑ K_D, → / ← K_P, PgDn rate) and
  check at each that the DCIC view shows that point's image, loaded, and that the plane
  highlights it. {"visited", "total", "wrong": [states that did not match]}."""
  rates = browser.evaluate("JSON.parse(document.getElementById('dx-data').textContent).rates"
                           ".map((r) => [r.kd.length, r.kp.length])")
  browser.evaluate("(() => { const s = document.getElementById('dx-rate'); s.value = 0;"
                   "s.dispatchEvent(new Event('change')); document.getElementById('dx').focus();"
                   "})()")
  visited, wrong = set(), []
  for index, (n_kd, n_kp) in enumerate(rates):
    for _ in range(n_kd):  # back to K_D index 0, K_P index 0
      browser.key("ArrowDown")
    for _ in range(n_kp):
      browser.key("ArrowLeft")
    for i in range(n_kd):
      for j in range(n_kp):
        s = state(browser)
        ok = (s["src"] == s["expected_src"] and s["src"] and s["loaded"]
              and s["selected"] == s["expected_point"])
        if ok:
          visited.add((s["rate"], s["kd"], s["kp"]))
        else:
          wrong.append(s)
        if j < n_kp - 1:
          browser.key("ArrowRight" if i % 2 == 0 else "ArrowLeft")
      browser.key("ArrowUp")
      # snake: even rows run left to right, odd rows back
    if index < len(rates) - 1:
      browser.key("PageDown")
  return {"visited": len(visited), "total": sum(a * b for a, b in rates), "wrong": wrong}
