// The distortion–perception explorer of a report page: dcic_jax/report/explorer.py inlines this
// file after a <script type="application/json" id="dx-data"> block and an empty <div id="dx">.
// Vanilla JS, no network: the page works from file:// and from any static host.
(function () {
  "use strict";
  const root = document.getElementById("dx");
  const data = JSON.parse(document.getElementById("dx-data").textContent);
  const DIGITS = {psnr: 2, ms_ssim: 4, swd: 4, lpips: 4, fid: 2, kid: 4, mse: 1};
  const META = Object.fromEntries(data.metrics.map((m) => [m.key, m]));
  const SVG = "http://www.w3.org/2000/svg";
  const W = 360, H = 270, PAD = {l: 52, r: 12, t: 10, b: 34};
  const st = {rate: 0, image: 0, kd: 0, kp: 0, x: data.axes.x, y: data.axes.y,
              zoom: 1, cx: 0.5, cy: 0.5, wipe: 50, ref: data.original ? "original" : "base"};

  function el(tag, attrs, ...children) {
    const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
                                     : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (v !== null && v !== undefined) e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }
  const fmt = (v, key) => (v === null || v === undefined ? "–" : v.toFixed(DIGITS[key] ?? 3));
  const rate = () => data.rates[st.rate];
  const image = () => data.images[st.image];
  const pointAt = (r, i, j) => r.points.find((p) => p.k_d === r.kd[i] && p.k_p === r.kp[j]) || null;
  const current = () => pointAt(rate(), st.kd, st.kp);
  const value = (p, key) => (p && p.m[key] !== undefined ? p.m[key] : null);

  // ---- controls -------------------------------------------------------------------------------
  const rateSel = el("select", {id: "dx-rate", "aria-label": "rate"},
    ...data.rates.map((r, i) => el("option", {value: i},
      r.name + (r.bpp === null ? "" : ` (${r.bpp.toFixed(4)} bpp)`))));
  const imageSel = el("select", {id: "dx-image", "aria-label": "image"},
    ...data.images.map((n, i) => el("option", {value: i}, n)));
  const kdSlider = el("input", {type: "range", id: "dx-kd", min: 0, step: 1, "aria-label": "K_D"});
  const kpSlider = el("input", {type: "range", id: "dx-kp", min: 0, step: 1, "aria-label": "K_P"});
  const kdOut = el("output", {id: "dx-kd-value"}), kpOut = el("output", {id: "dx-kp-value"});
  const zoomSel = el("select", {id: "dx-zoom", "aria-label": "zoom"},
    ...[1, 2, 4, 8, 16].map((z) => el("option", {value: z}, z === 1 ? "fit" : `${z}×`)));
  const refSel = el("select", {id: "dx-ref", "aria-label": "wipe against"},
    ...(data.original ? [el("option", {value: "original"}, "original")] : []),
    el("option", {value: "base"}, "base x̂_b"));
  const axisSel = (id, key) => el("select", {id, "aria-label": id},
    ...data.metrics.map((m) => el("option", {value: m.key, selected: m.key === key ? "" : null},
                                  m.title)));
  const xSel = axisSel("dx-x", st.x), ySel = axisSel("dx-y", st.y);

  // ---- views: original, base, DCIC and the wipe, all sharing one zoom/pan -------------------
  const views = [];
  function view(kind, caption) {
    const img = el("img", {alt: kind, draggable: "false", "data-kind": kind});
    const inner = el("div", {class: "dx-inner"}, img);
    const frame = el("div", {class: "dx-frame"}, inner);
    const cap = el("figcaption", {}, caption);
    const fig = el("figure", {class: "dx-view", "data-kind": kind}, frame, cap);
    const v = {kind, img, inner, frame, cap, fig};
    views.push(v);
    attachPanZoom(frame, kind === "wipe");
    return v;
  }
  const vOriginal = data.original ? view("original", "original") : null;
  const vBase = view("base", "base x̂_b");
  const vDcic = view("dcic", "DCIC");
  const vWipe = view("wipe", "wipe");
  const wipeTop = el("img", {alt: "DCIC", draggable: "false", "data-kind": "wipe-dcic"});
  const wipeClip = el("div", {class: "dx-clip"}, el("div", {class: "dx-inner"}, wipeTop));
  const wipeLine = el("div", {class: "dx-line"});
  vWipe.frame.append(wipeClip, wipeLine);
  const wipeSlider = el("input", {type: "range", id: "dx-wipe", min: 0, max: 100, value: st.wipe,
                                  "aria-label": "wipe position"});

  function attachPanZoom(frame, isWipe) {
    let drag = null;
    frame.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = frame.getBoundingClientRect();
      const z = Math.min(16, Math.max(1, st.zoom * (e.deltaY < 0 ? 1.25 : 0.8)));
      zoomAbout(z, (e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
    }, {passive: false});
    frame.addEventListener("pointerdown", (e) => {
      drag = {x: e.clientX, y: e.clientY};
      frame.setPointerCapture(e.pointerId);
      if (isWipe) setWipe(e);
    });
    frame.addEventListener("pointermove", (e) => {
      if (!drag) return;
      if (isWipe) { setWipe(e); return; }
      const r = frame.getBoundingClientRect();
      st.cx -= (e.clientX - drag.x) / (r.width * st.zoom);
      st.cy -= (e.clientY - drag.y) / (r.height * st.zoom);
      drag = {x: e.clientX, y: e.clientY};
      applyView();
    });
    frame.addEventListener("pointerup", () => { drag = null; });
    frame.addEventListener("dblclick", () => { st.zoom = 1; st.cx = st.cy = 0.5; applyView(); });
    function setWipe(e) {
      const r = frame.getBoundingClientRect();
      st.wipe = Math.round(100 * Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)));
      wipeSlider.value = st.wipe;
      applyView();
    }
  }

  function zoomAbout(z, fx, fy) {
    // keep the content under the frame fraction (fx, fy) in place
    const ux = st.cx + (fx - 0.5) / st.zoom, uy = st.cy + (fy - 0.5) / st.zoom;
    st.zoom = z;
    st.cx = ux - (fx - 0.5) / z;
    st.cy = uy - (fy - 0.5) / z;
    applyView();
  }

  function applyView() {
    const half = 0.5 / st.zoom;
    st.cx = Math.min(1 - half, Math.max(half, st.cx));
    st.cy = Math.min(1 - half, Math.max(half, st.cy));
    const tx = (0.5 - st.cx * st.zoom) * 100, ty = (0.5 - st.cy * st.zoom) * 100;
    for (const inner of root.querySelectorAll(".dx-inner")) {
      inner.style.transform = `translate(${tx}%, ${ty}%) scale(${st.zoom})`;
    }
    root.classList.toggle("dx-zoomed", st.zoom > 1);
    zoomSel.value = [1, 2, 4, 8, 16].includes(st.zoom) ? st.zoom : zoomSel.value;
    wipeClip.style.clipPath = `inset(0 ${100 - st.wipe}% 0 0)`;
    wipeLine.style.left = `${st.wipe}%`;
  }

  // ---- the D–P plane ---------------------------------------------------------------------------
  const plane = el("svg:svg", {id: "dx-plane", viewBox: `0 0 ${W} ${H}`, width: W, height: H,
                               role: "img", "aria-label": "distortion-perception plane"});

  function paretoFront(pts) {
    // lower-is-better in both axes after flipping higher-is-better metrics
    const sx = META[st.x].higher ? -1 : 1, sy = META[st.y].higher ? -1 : 1;
    const sorted = pts.slice().sort((a, b) => sx * (a.x - b.x) || sy * (a.y - b.y));
    const front = [];
    for (const p of sorted) {
      if (!front.length || sy * p.y < sy * front[front.length - 1].y) front.push(p);
    }
    return front;
  }

  function drawPlane() {
    plane.replaceChildren();
    if (!META[st.x] || !META[st.y]) {
      plane.append(el("svg:text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "dx-note"},
                      "no metrics: nothing was measured"));
      return;
    }
    const r = rate(), sel = current();
    const pts = r.points.map((p) => ({p, x: value(p, st.x), y: value(p, st.y)}))
      .filter((q) => q.x !== null && q.y !== null);
    const base = r.base && value(r.base, st.x) !== null && value(r.base, st.y) !== null
      ? {x: value(r.base, st.x), y: value(r.base, st.y)} : null;
    const all = pts.concat(base ? [base] : []);
    if (!all.length) {
      plane.append(el("svg:text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "dx-note"},
                      "not measured for this rate"));
      return;
    }
    // an axis spanning more than a decade (e.g. the unconstrained sampler's MSE) is drawn in log
    const isLog = (k) => Math.min(...all.map((q) => q[k])) > 0 &&
      Math.max(...all.map((q) => q[k])) > 10 * Math.min(...all.map((q) => q[k]));
    const logX = isLog("x"), logY = isLog("y");
    const fx = (v) => (logX ? Math.log10(v) : v), fy = (v) => (logY ? Math.log10(v) : v);
    const ext = (k, f) => {
      const lo = Math.min(...all.map((q) => f(q[k]))), hi = Math.max(...all.map((q) => f(q[k])));
      const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 1;
      return [lo - pad, hi + pad];
    };
    const [x0, x1] = ext("x", fx), [y0, y1] = ext("y", fy);
    const inv = (v, log) => (log ? 10 ** v : v);
    const X = (v) => PAD.l + (fx(v) - x0) / (x1 - x0) * (W - PAD.l - PAD.r);
    const Y = (v) => H - PAD.b - (fy(v) - y0) / (y1 - y0) * (H - PAD.t - PAD.b);
    plane.append(el("svg:rect", {x: PAD.l, y: PAD.t, width: W - PAD.l - PAD.r,
                                 height: H - PAD.t - PAD.b, class: "dx-axes"}));
    for (const [v, k] of [[x0, "x"], [x1, "x"], [y0, "y"], [y1, "y"]]) {
      const key = k === "x" ? st.x : st.y;
      plane.append(k === "x"
        ? el("svg:text", {x: v === x0 ? PAD.l : W - PAD.r, y: H - PAD.b + 13, class: "dx-tick",
                          "text-anchor": v === x0 ? "start" : "end"}, fmt(inv(v, logX), key))
        : el("svg:text", {x: PAD.l - 3, y: v === y0 ? H - PAD.b : PAD.t + 9, "text-anchor": "end",
                          class: "dx-tick"}, fmt(inv(v, logY), key)));
    }
    const better = (k, log) => `(${META[k].higher ? "higher" : "lower"} is better${log ? ", log" : ""})`;
    plane.append(el("svg:text", {x: (PAD.l + W - PAD.r) / 2, y: H - 4, "text-anchor": "middle",
                                 class: "dx-label"}, `${META[st.x].title} ${better(st.x, logX)}`));
    plane.append(el("svg:text", {x: 11, y: (PAD.t + H - PAD.b) / 2, "text-anchor": "middle",
                                 class: "dx-label",
                                 transform: `rotate(-90 11 ${(PAD.t + H - PAD.b) / 2})`},
                    `${META[st.y].title} ${better(st.y, logY)}`));
    const front = paretoFront(pts);
    plane.append(el("svg:polyline", {class: "dx-front",
      points: front.map((q) => `${X(q.x)},${Y(q.y)}`).join(" ")}));
    if (base) {
      const bx = X(base.x), by = Y(base.y);
      plane.append(el("svg:path", {class: "dx-base", d: `M${bx - 5},${by - 5}L${bx + 5},${by + 5}` +
                                   `M${bx - 5},${by + 5}L${bx + 5},${by - 5}`},
                      el("svg:title", {}, "base codec x̂_b")));
    }
    const labelled = [];
    for (const q of pts) {
      const onFront = front.includes(q);
      const c = el("svg:circle", {cx: X(q.x), cy: Y(q.y), r: 4, "data-point": q.p.name,
                                  class: "dx-pt" + (onFront ? " dx-on-front" : ""),
                                  on: {click: () => select(r.kd.indexOf(q.p.k_d), r.kp.indexOf(q.p.k_p))}},
                   el("svg:title", {}, `K_D=${q.p.k_d} K_P=${q.p.k_p}` + (q.p.label ? ` (${q.p.label})` : "") +
                      `\n${META[st.x].title} ${fmt(q.x, st.x)}\n${META[st.y].title} ${fmt(q.y, st.y)}`));
      plane.append(c);
      // label "K_D,K_P" unless an earlier label sits there already
      if (!labelled.some(([a, b]) => Math.abs(a - X(q.x)) < 24 && Math.abs(b - Y(q.y)) < 10)) {
        labelled.push([X(q.x), Y(q.y)]);
        plane.append(el("svg:text", {x: X(q.x) + 5, y: Y(q.y) - 5, class: "dx-ptlabel"},
                        `${q.p.k_d},${q.p.k_p}`));
      }
    }
    const s = pts.find((q) => q.p === sel);
    if (s) {
      plane.append(el("svg:circle", {id: "dx-selected", cx: X(s.x), cy: Y(s.y), r: 8,
                                     class: "dx-sel", "data-point": sel.name}));
    }
  }

  // ---- metrics and the clickable grid ------------------------------------------------------------
  const metricsTable = el("table", {id: "dx-metrics", class: "dx-table"});
  const gridTable = el("table", {id: "dx-grid", class: "dx-table"});

  function drawMetrics() {
    const r = rate(), p = current(), n = image(), b = r.base;
    const cell = (obj, key, scope) => {
      if (!obj) return "–";
      const v = scope === "img" ? (obj.img[n] || {})[key] : obj.m[key];
      return fmt(v === undefined ? null : v, key);
    };
    const rows = [el("tr", {}, el("th", {}, ""), el("th", {}, "this point, all images"),
                     el("th", {}, `this point, ${n}`), el("th", {}, "base, all"),
                     el("th", {}, `base, ${n}`))];
    const bpp = (v) => (v === null || v === undefined ? "–" : v.toFixed(4));
    rows.push(el("tr", {}, el("th", {}, "bpp"), el("td", {}, bpp(r.bpp)),
                 el("td", {}, bpp(r.bpp_image[n])), el("td", {}, bpp(r.bpp)),
                 el("td", {}, bpp(r.bpp_image[n]))));
    for (const m of data.metrics) {
      rows.push(el("tr", {}, el("th", {}, m.title), el("td", {}, cell(p, m.key, "m")),
                   el("td", {}, cell(p, m.key, "img")), el("td", {}, cell(b, m.key, "m")),
                   el("td", {}, cell(b, m.key, "img"))));
    }
    metricsTable.replaceChildren(...rows);
  }

  function drawGrid() {
    const r = rate();
    const head = el("tr", {}, el("th", {}, `K_D \\ K_P`), ...r.kp.map((v) => el("th", {}, String(v))));
    const rows = [head];
    for (let i = r.kd.length - 1; i >= 0; i--) {
      rows.push(el("tr", {}, el("th", {}, String(r.kd[i])), ...r.kp.map((_, j) => {
        const p = pointAt(r, i, j);
        return el("td", {class: "dx-cell" + (i === st.kd && j === st.kp ? " dx-on" : ""),
                         "data-point": p ? p.name : null, title: p ? p.name : "not decoded",
                         on: {click: () => select(i, j)}}, p ? fmt(value(p, st.y), st.y) : "·");
      })));
    }
    gridTable.replaceChildren(...rows);
  }

  // ---- state ---------------------------------------------------------------------------------------
  const status = el("div", {id: "dx-status", class: "dx-status"});

  function setSrc(img, src) {
    if (src) img.setAttribute("src", src); else img.removeAttribute("src");
    img.classList.toggle("dx-missing", !src);
  }

  function render() {
    const r = rate(), p = current(), n = image();
    kdSlider.max = r.kd.length - 1; kpSlider.max = r.kp.length - 1;
    kdSlider.value = st.kd; kpSlider.value = st.kp;
    kdOut.textContent = r.kd[st.kd]; kpOut.textContent = r.kp[st.kp];
    rateSel.value = st.rate; imageSel.value = st.image; refSel.value = st.ref;
    const dcicSrc = p ? p.src[n] : null;
    const refSrc = st.ref === "original" ? data.original[n] : (r.base ? r.base.src[n] : null);
    if (vOriginal) setSrc(vOriginal.img, data.original[n]);
    setSrc(vBase.img, r.base ? r.base.src[n] : null);
    setSrc(vDcic.img, dcicSrc);
    setSrc(vWipe.img, refSrc);
    setSrc(wipeTop, dcicSrc);
    const label = `K_D=${r.kd[st.kd]}, K_P=${r.kp[st.kp]}` + (p && p.label ? ` (${p.label})` : "");
    vDcic.cap.textContent = "DCIC " + label;
    vWipe.cap.textContent = `wipe: DCIC | ${st.ref === "original" ? "original" : "base"}`;
    status.textContent = (p ? p.name : "not decoded") + ` · ${r.name} · ${n}`;
    root.dataset.rate = r.name; root.dataset.image = n;
    root.dataset.point = p ? p.name : ""; root.dataset.src = dcicSrc || "";
    drawPlane(); drawMetrics(); drawGrid(); applyView();
    try {
      history.replaceState(null, "", "#" + new URLSearchParams({rate: r.name, image: n,
        kd: r.kd[st.kd], kp: r.kp[st.kp]}).toString());
    } catch (e) { /* some hosts forbid it; the state simply is not in the URL */ }
  }

  function select(i, j) {
    const r = rate();
    if (i < 0 || j < 0 || i >= r.kd.length || j >= r.kp.length) return;
    st.kd = i; st.kp = j;
    render();
  }

  function setRate(i) {
    const old = rate(), kd = old.kd[st.kd], kp = old.kp[st.kp];
    st.rate = (i + data.rates.length) % data.rates.length;
    const r = rate();  // keep the same (K_D, K_P) where the new rate has it
    st.kd = Math.max(0, r.kd.indexOf(kd)); st.kp = Math.max(0, r.kp.indexOf(kp));
    render();
  }

  function fromHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    const ri = data.rates.findIndex((r) => r.name === q.get("rate"));
    if (ri >= 0) st.rate = ri;
    const ii = data.images.indexOf(q.get("image"));
    if (ii >= 0) st.image = ii;
    const r = rate();
    const kd = r.kd.indexOf(Number(q.get("kd"))), kp = r.kp.indexOf(Number(q.get("kp")));
    if (q.has("kd") && kd >= 0) st.kd = kd;
    if (q.has("kp") && kp >= 0) st.kp = kp;
  }

  rateSel.addEventListener("change", () => setRate(Number(rateSel.value)));
  imageSel.addEventListener("change", () => { st.image = Number(imageSel.value); render(); });
  kdSlider.addEventListener("input", () => select(Number(kdSlider.value), st.kp));
  kpSlider.addEventListener("input", () => select(st.kd, Number(kpSlider.value)));
  zoomSel.addEventListener("change", () => zoomAbout(Number(zoomSel.value), 0.5, 0.5));
  refSel.addEventListener("change", () => { st.ref = refSel.value; render(); });
  wipeSlider.addEventListener("input", () => { st.wipe = Number(wipeSlider.value); applyView(); });
  xSel.addEventListener("change", () => { st.x = xSel.value; drawPlane(); });
  ySel.addEventListener("change", () => { st.y = ySel.value; drawPlane(); drawGrid(); });
  root.addEventListener("pointerdown", (e) => {
    if (!e.target.closest("select, input, button")) root.focus({preventScroll: true});
  });
  root.addEventListener("keydown", (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || e.target.tagName === "SELECT") return;
    const moves = {ArrowUp: [1, 0], ArrowDown: [-1, 0], ArrowRight: [0, 1], ArrowLeft: [0, -1]};
    if (moves[e.key]) select(st.kd + moves[e.key][0], st.kp + moves[e.key][1]);
    else if (e.key === "PageUp" || e.key === "PageDown") setRate(st.rate + (e.key === "PageUp" ? -1 : 1));
    else if (e.key === "[" || e.key === "]") {
      st.image = (st.image + (e.key === "]" ? 1 : -1) + data.images.length) % data.images.length;
      render();
    } else return;
    e.preventDefault();
  });

  const label = (text, ...c) => el("label", {}, text, ...c);
  root.setAttribute("tabindex", "0");
  root.append(
    el("div", {class: "dx-controls"}, label("rate ", rateSel), label("image ", imageSel),
       label("K_D ", kdSlider, kdOut), label("K_P ", kpSlider, kpOut), label("zoom ", zoomSel),
       label("wipe against ", refSel, wipeSlider)),
    el("div", {class: "dx-body"},
       el("div", {class: "dx-views"}, ...views.map((v) => v.fig)),
       el("div", {class: "dx-side"}, el("div", {class: "dx-axes-sel"}, label("x ", xSel), label(" y ", ySel)),
          plane, gridTable)),
    status, metricsTable,
    el("p", {class: "dx-help"}, "Keys (click the explorer first): ↑/↓ K_D, ←/→ K_P, PgUp/PgDn rate, " +
       "[ / ] image. Wheel zooms, drag pans (all views together), double-click resets; drag on " +
       "the wipe view moves the wipe. Click a point of the plane or a cell of the grid to select " +
       "it. The URL keeps the selection, so a link shows the same setting."));
  fromHash();
  render();
  root.dataset.ready = String(performance.now());
})();
