// provex report glue: draws the Plotly figures the page carries and runs the galleries
// (filter, sort, paginate, select an image, switch the colour scale). All plotting is Plotly's.
(function () {
  "use strict";
  const T0 = performance.now();
  const DATA = JSON.parse(document.getElementById("provex-data").textContent);
  const T1 = performance.now();
  const CONFIG = { displaylogo: false, responsive: true };
  const NAN_CODE = 65535;

  function decode(q) {
    // 16-bit codes over [lo, hi] -> rows of numbers (null: not drawn)
    const bin = atob(q.b);
    const codes = new Uint16Array(q.h * q.w);
    for (let i = 0; i < codes.length; i++) codes[i] = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    const step = (q.hi - q.lo) / (NAN_CODE - 1);
    const rows = [];
    for (let y = 0; y < q.h; y++) {
      const row = new Array(q.w);
      for (let x = 0; x < q.w; x++) {
        const c = codes[y * q.w + x];
        row[x] = c === NAN_CODE ? null : q.lo + c * step;
      }
      rows.push(row);
    }
    return rows;
  }

  function fmt(v, d) { return v === null || v === undefined ? "" : Number(v).toPrecision(d || 3); }
  function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }

  function gallery(id, g) {
    const root = document.getElementById(id + "-root");
    if (!root) return Promise.resolve();
    const q = (s) => root.querySelector(s);
    const st = { cls: "all", sort: "index", page: 0, size: g.pageSize, sel: 0, scale: "shared" };
    const thumb = 84;
    root.style.setProperty("--thumb", thumb + "px");
    const className = (k) => { const c = g.classes.find((c) => c.k === k); return c ? c.name : String(k); };

    function visible() {
      let items = g.items;
      if (st.cls !== "all") items = items.filter((it) => String(it.target) === st.cls);
      if (st.sort !== "index") {
        const [dir, m] = st.sort.split(/:(.*)/s);
        const key = (it) => (it.auc[m] && it.auc[m].d !== null ? it.auc[m].d : Infinity);
        items = items.slice().sort((a, b) => (dir === "best" ? key(a) - key(b) : key(b) - key(a)));
      }
      return items;
    }

    function caption(it) {
      let t = "#" + it.index + " · target " + className(it.target);
      if (it.pred !== null) t += " · pred " + className(it.pred);
      if (it.label !== null) t += " · label " + className(it.label);
      return t;
    }

    function card(it) {
      const c = el("div", "card" + (it.i === st.sel ? " selected" : ""));
      c.dataset.i = it.i;
      c.appendChild(el("div", "cap", caption(it)));
      const tiles = el("div", "tiles");
      if (it.img || it.imgColor) {
        const t = el("div", "tile"); const s = el("div", "stack");
        const im = el("img"); im.src = it.imgColor || it.img; im.alt = "image " + it.index; s.appendChild(im);
        t.appendChild(s); t.appendChild(el("div", "tcap", "input")); tiles.appendChild(t);
      }
      for (const m of g.methods) {
        const t = el("div", "tile"); const s = el("div", "stack");
        if (it.img) { const b = el("img"); b.src = it.img; b.alt = ""; s.appendChild(b); }
        const o = el("img"); o.src = it.maps[m.name]; o.alt = m.name + " map"; s.appendChild(o);
        t.appendChild(s);
        const a = it.auc[m.name];
        const cap = el("div", "tcap", m.name);
        cap.title = m.name + (a && a.d !== null ? ": distortion area " + fmt(a.d, 4) : "");
        t.appendChild(cap);
        if (g.methods.some((x) => x.hasAuc)) t.appendChild(el("div", "tcap", a && a.d !== null ? Number(a.d).toFixed(3) : "\u00a0"));
        tiles.appendChild(t);
      }
      c.appendChild(tiles);
      c.addEventListener("click", () => { st.sel = it.i; render(); detail(); });
      return c;
    }

    function render() {
      const items = visible();
      const pages = Math.max(1, Math.ceil(items.length / st.size));
      st.page = Math.min(st.page, pages - 1);
      const box = q(".cards");
      box.replaceChildren(...items.slice(st.page * st.size, (st.page + 1) * st.size).map(card));
      q(".p-text").textContent = " page " + (st.page + 1) + " / " + pages + " (" + items.length + " images) ";
    }

    function heatmap(div, m, vals, it, title) {
      const z = decode(vals);
      const own = (() => {
        if (m.signed) { const a = Math.max(Math.abs(vals.lo), Math.abs(vals.hi)) || 1; return [-a, a]; }
        return [Math.min(0, vals.lo), vals.hi || 1];
      })();
      const [h, w] = [vals.h, vals.w];
      const trace = { type: "heatmap", z: z, colorscale: m.colorscale, zsmooth: false, hoverongaps: false, meta: m.name };
      const layout = {
        title: { text: title, font: { size: 12 } },
        margin: { l: 4, r: 4, t: 34, b: 4 }, height: 300, width: 290,
        xaxis: { visible: false, range: [-0.5, w - 0.5], constrain: "domain" },
        yaxis: { visible: false, range: [h - 0.5, -0.5], scaleanchor: "x", constrain: "domain" },
        images: [], shapes: [], annotations: [], plot_bgcolor: "#000",
      };
      const src = it.imgDetail || it.img;
      if (src) layout.images.push({ source: src, xref: "x", yref: "y", x: -0.5, y: -0.5, sizex: w, sizey: h, xanchor: "left", yanchor: "top", sizing: "stretch", layer: "below" });
      if (m.kind === "p-value") {
        const floor = m.pFloor;
        trace.customdata = z;
        trace.z = z.map((r) => r.map((p) => (p === null ? null : -Math.log10(Math.max(p, floor)))));
        trace.zmin = 0; trace.zmax = -Math.log10(floor);
        const ticks = []; for (let t = 0; t <= trace.zmax + 1e-9; t += 1) ticks.push(t);
        trace.colorbar = { title: { text: "p-value", side: "right" }, tickvals: ticks, ticktext: ticks.map((t) => fmt(Math.pow(10, -t), 2)), thickness: 10 };
        trace.hovertemplate = "x %{x}, y %{y}<br>p = %{customdata:.3g}<extra></extra>";
        const ps = it.p[m.name] || [];
        m.boxes.forEach((b, r) => {
          const rej = ps[r] !== null && ps[r] <= m.alpha;
          layout.shapes.push({ type: "rect", x0: b[0], y0: b[1], x1: b[2], y1: b[3], line: { color: "#000", width: rej ? 2.5 : 1, dash: rej ? "solid" : "dot" } });
          layout.annotations.push({ x: (b[0] + b[2]) / 2, y: (b[1] + b[3]) / 2, text: fmt(ps[r], 2) + (rej ? "*" : ""), showarrow: false, font: { size: 11 }, bgcolor: "rgba(255,255,255,0.7)" });
        });
      } else {
        const lim = st.scale === "shared" ? m.shared : own;
        trace.zmin = lim[0]; trace.zmax = lim[1];
        trace.colorbar = { title: { text: m.unit || "", side: "right" }, thickness: 10 };
        trace.hovertemplate = "x %{x}, y %{y}<br>" + m.name + " %{z:.4g}" + (m.unit ? " " + m.unit : "") + "<extra></extra>";
      }
      if (!window.Plotly) return Promise.resolve(preview(div, m, it, title));
      div.classList.remove("preview");
      div.replaceChildren();
      return Plotly.react(div, [trace], layout, CONFIG);
    }

    function preview(div, m, it, title) {
      // before plotly.js is evaluated: the thumbnail's picture of the map, its colour scale
      // and range, so the first screen is readable at once; Plotly replaces it when loaded
      div.classList.add("preview");
      div.appendChild(el("div", null, title));
      const s = el("div", "stack");
      if (it.img) { const b = el("img"); b.src = it.imgDetail || it.img; b.alt = ""; s.appendChild(b); }
      const o = el("img"); o.src = it.maps[m.name]; o.alt = m.name + " map"; s.appendChild(o);
      div.appendChild(s);
      const bar = el("div", "bar");
      bar.style.background = "linear-gradient(to right, " + m.colorscale.map((c) => c[1] + " " + 100 * c[0] + "%").join(", ") + ")";
      div.appendChild(bar);
      const range = m.kind === "p-value" ? "p-value, log scale" : m.thumbShared ? fmt(m.shared[0]) + " to " + fmt(m.shared[1]) + (m.unit ? " " + m.unit : "") : "own range" + (m.unit ? ", " + m.unit : "");
      div.appendChild(el("div", "tcap", range + " · loading the interactive map"));
    }

    function detail() {
      const it = g.items[st.sel];
      if (!it) return Promise.resolve();
      q(".detail-title").textContent = "Selected: " + caption(it) + " — colour scale: " + (st.scale === "shared" ? "shared by all images, per method" : "per map") + ".";
      const box = q(".detail");
      box.replaceChildren();
      const jobs = [];
      for (const m of g.methods) {
        const a = it.auc[m.name];
        let title = m.name + (it.targets[m.name] !== it.target ? " (target " + className(it.targets[m.name]) + ")" : "");
        if (a && a.d !== null) title += " · distortion area " + fmt(a.d, 3);
        const d = el("div", "pv-map"); d.dataset.method = m.name; box.appendChild(d);
        jobs.push(heatmap(d, m, it.vals[m.name], it, title));
        const extra = it.extra[m.name] || {};
        for (const name of m.extra) {
          if (!extra[name] || !window.Plotly) continue;  // per-rate maps have no picture of their own
          const e = el("div", "pv-map"); e.dataset.method = m.name + " " + name; box.appendChild(e);
          jobs.push(heatmap(e, m, extra[name], it, m.name + " " + name));
        }
      }
      return Promise.all(jobs);
    }

    q(".f-class").addEventListener("change", (e) => { st.cls = e.target.value; st.page = 0; render(); });
    q(".f-sort").addEventListener("change", (e) => { st.sort = e.target.value; st.page = 0; render(); });
    q(".f-size").addEventListener("change", (e) => { st.size = Number(e.target.value); st.page = 0; render(); });
    q(".f-scale").addEventListener("change", (e) => { st.scale = e.target.value; detail(); });
    q(".p-prev").addEventListener("click", () => { st.page = Math.max(0, st.page - 1); render(); });
    q(".p-next").addEventListener("click", () => { st.page += 1; render(); });
    root.provexSelect = (i) => { st.sel = i; render(); return detail(); };
    root.provexRedraw = () => detail();
    render();
    detail();
  }

  // Figures are drawn when they come near the viewport (a long page stays quick to open);
  // window.provexDrawAll() draws the rest at once (screenshots, tests).
  const pending = new Map();
  const observer = "IntersectionObserver" in window
    ? new IntersectionObserver((entries) => { for (const e of entries) if (e.isIntersecting) draw(e.target.id); }, { rootMargin: "300px" })
    : null;
  function draw(id) {
    const fig = pending.get(id);
    if (!fig) return Promise.resolve();
    pending.delete(id);
    const div = document.getElementById(id);
    if (observer) observer.unobserve(div);
    return Plotly.newPlot(div, fig.data, fig.layout, CONFIG).then(() => { div.dataset.drawn = "1"; });
  }
  window.provexDrawAll = () => Promise.all([...pending.keys()].map(draw));
  // The first screen (gallery cards, the selected image's maps as pictures, tables) is painted
  // before plotly.js (1.5 MB) is evaluated; then the library is loaded from the page itself and
  // the figures are drawn. provexPainted / provexReady mark the two moments.
  const selects = [];
  for (const [id, g] of Object.entries(DATA.galleries)) {
    gallery(id, g);
    const root = document.getElementById(id + "-root");
    if (root && root.provexSelect) selects.push(root);
  }
  function plotlyPhase() {
    const T2 = performance.now();
    window.provexPainted = T2;
    document.body.dataset.painted = "1";
    const src = document.getElementById("provex-plotly");
    if (src && !window.Plotly) {
      const s = document.createElement("script");
      s.textContent = src.textContent;
      document.head.appendChild(s);
    }
    const T3 = performance.now();
    if (!window.Plotly) {
      console.error("provex report: plotly.js is missing from the page; the maps stay pictures, the charts are not drawn");
      return;
    }
    const jobs = [];
    for (const [id, fig] of Object.entries(DATA.figures)) {
      const div = document.getElementById(id);
      if (!div) continue;
      pending.set(id, fig);
      const near = div.getBoundingClientRect().top < window.innerHeight + 300;
      if (near || !observer) jobs.push(draw(id));
      else observer.observe(div);
    }
    for (const root of selects) jobs.push(root.provexRedraw());
    Promise.all(jobs).then(() => {
      window.provexTimes = { glueStart: T0, dataParsed: T1, painted: T2, plotlyEvaluated: T3, ready: performance.now() };
      window.provexReady = window.provexTimes.ready;
      document.body.dataset.ready = "1";
    });
  }
  requestAnimationFrame(() => setTimeout(plotlyPhase, 0));
})();
