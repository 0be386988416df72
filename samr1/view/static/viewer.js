/* samr1 view: learning curves and logged rollouts of a training run.
 *
 * Served by `samr1 view RUN_DIR` (data from its api/ routes), or exported as one file (`--export`): then the
 * data sits in <script id="samr1-data"> and nothing is fetched. The page keeps the chosen run and step in
 * the URL's hash, so a reload shows the same place with whatever the run has logged since. */
"use strict";

(function () {
  const $ = function (id) { return document.getElementById(id); };
  const el = Samr1.el;
  const embedded = $("samr1-data");
  const DATA = embedded ? JSON.parse(embedded.textContent) : null;
  const PALETTE = ["#0b63ce", "#d6336c", "#2b8a3e", "#e8590c", "#6741d9", "#0c8599", "#a61e4d", "#5c940d",
                   "#862e9c", "#495057"];

  // ------------------------------------------------------------------ data: the server's API or the export
  async function getJson(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) {
      let msg = r.statusText;
      try { msg = (await r.json()).error || msg; } catch (_) { /* keep the status text */ }
      throw new Error(url + ": " + r.status + " " + msg);
    }
    return r.json();
  }
  const q = encodeURIComponent;
  const api = {
    runs: function () { return DATA ? Promise.resolve({ root: DATA.root, runs: DATA.runs }) : getJson("api/runs"); },
    curves: function (run) { return DATA ? Promise.resolve(DATA.data[run].curves) : getJson("api/curves?run=" + q(run)); },
    steps: function (run) { return DATA ? Promise.resolve(DATA.data[run].steps) : getJson("api/steps?run=" + q(run)); },
    groups: function (run, step) {
      return DATA ? Promise.resolve({ step: step, groups: DATA.data[run].groups[String(step)] || [] })
        : getJson("api/groups?run=" + q(run) + "&step=" + q(step));
    },
    imageUrl: function (run, key) { return DATA ? DATA.images[key] : "image?run=" + q(run) + "&key=" + q(key); },
  };

  const state = { run: ".", step: null, groups: [], painters: [] };
  const images = {};
  function image(run, key) {
    const url = api.imageUrl(run, key);
    if (!url) return Promise.reject(new Error("image " + key + " is not in this export"));
    if (!images[url]) images[url] = Samr1.loadImage(url);
    return images[url];
  }

  function showError(msg) {
    $("error").textContent = msg || "";
    $("error").hidden = !msg;
  }

  function readHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    return { run: h.get("run"), step: h.get("step") === null ? null : Number(h.get("step")) };
  }
  function writeHash() {
    const h = new URLSearchParams();
    h.set("run", state.run);
    if (state.step !== null) h.set("step", String(state.step));
    history.replaceState(null, "", "#" + h.toString());
  }

  // ------------------------------------------------------------------ charts (SVG, drawn here)
  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).find(function (s) { return s >= raw; });
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step && ticks.length < 50; v += step) ticks.push(v);
    return ticks;
  }

  function svg(tag, attrs, children) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    for (const c of children || []) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return e;
  }

  /** A line chart: series = [{name, pts: [[x, y], ...]}]; opts.unit = true for a 0..1 axis. */
  function lineChart(title, series, opts) {
    series = series.filter(function (s) { return s.pts.length; });
    if (!series.length) return null;
    const W = 420, H = 220, L = 46, R = 10, T = 10, B = 30;
    const xs = [], ys = [];
    series.forEach(function (s) { s.pts.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
    let x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    let y0 = opts && opts.unit ? 0 : Math.min.apply(null, ys), y1 = opts && opts.unit ? 1 : Math.max.apply(null, ys);
    if (x1 === x0) { x1 = x0 + 1; }
    if (y1 === y0) { y1 = y0 + 1; y0 = y0 - (y0 === 0 ? 0 : 1); }
    const sx = function (x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
    const sy = function (y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); };
    const id = "chart-" + title.replace(/[^a-z0-9]+/gi, "-").toLowerCase();
    const parts = [svg("title", { id: id + "-title" }, [title])];
    niceTicks(y0, y1, 4).forEach(function (v) {
      parts.push(svg("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), stroke: "#e3e6ea" }));
      parts.push(svg("text", { x: L - 4, y: sy(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#5b6270" },
                     [String(+v.toPrecision(3))]));
    });
    niceTicks(x0, x1, 5).forEach(function (v) {
      parts.push(svg("text", { x: sx(v), y: H - B + 14, "text-anchor": "middle", "font-size": 10, fill: "#5b6270" },
                     [String(+v.toPrecision(4))]));
    });
    parts.push(svg("text", { x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle", "font-size": 10, fill: "#5b6270" },
                   ["step"]));
    parts.push(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#aab1bd" }));
    const legend = el("div", { class: "legend" });
    series.forEach(function (s, i) {
      const c = PALETTE[i % PALETTE.length];
      const pts = s.pts.slice().sort(function (a, b) { return a[0] - b[0]; });
      parts.push(svg("polyline", { points: pts.map(function (p) { return sx(p[0]) + "," + sy(p[1]); }).join(" "),
                                   fill: "none", stroke: c, "stroke-width": 1.8 }));
      if (pts.length < 40) {
        pts.forEach(function (p) { parts.push(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.2, fill: c })); });
      }
      const last = pts[pts.length - 1];
      const item = el("span", { text: s.name + " (last " + Samr1.fmt(last[1]) + ")" });
      item.style.setProperty("--c", c);
      legend.appendChild(item);
    });
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": id + "-title" }, parts);
    return el("figure", { class: "chart" }, [el("figcaption", { text: title }), chart, legend]);
  }

  function series(rows, key, name, map) {
    const pts = [];
    rows.forEach(function (r) {
      if (typeof r[key] === "number" && typeof r.step === "number") pts.push([r.step, map ? map(r[key]) : r[key]]);
    });
    return { name: name || key, pts: pts };
  }

  function drawCharts(curves) {
    const box = $("charts");
    box.textContent = "";
    const rows = (curves.metrics || []).filter(function (r) { return "reward" in r || "loss" in r; });
    const keys = {};
    rows.forEach(function (r) { Object.keys(r).forEach(function (k) { keys[k] = true; }); });
    const comps = Object.keys(keys).filter(function (k) { return /^rewards\/.+\/mean$/.test(k); }).sort();
    const charts = [
      lineChart("Reward (mean per step)", [series(rows, "reward", "total")].concat(comps.map(function (k) {
        return series(rows, k, k.slice(8, -5));
      }))),
      lineChart("Parse rate and mask IoU", [
        series(rows, "samr1/parse_failure_rate", "parse rate", function (v) { return 1 - v; }),
        series(rows, "samr1/mean_iou", "mean mask IoU")], { unit: true }),
      lineChart("Reward spread within groups", [series(rows, "reward_std", "reward std"),
        series(rows, "frac_reward_zero_std", "groups with zero spread (fraction)")]),
    ];
    // held-out evaluations are rows of their own in metrics.jsonl (heldout/giou, heldout/ciou, heldout/parse)
    const all = {};
    (curves.metrics || []).forEach(function (r) { Object.keys(r).forEach(function (k) { all[k] = true; }); });
    const held = Object.keys(all).filter(function (k) { return /^heldout\/(giou|ciou|parse)$/.test(k); }).sort();
    if (held.length) {
      charts.push(lineChart("Held-out gIoU, cIoU and parse rate", held.map(function (k) {
        return series(curves.metrics, k, k.slice(8));
      }), { unit: true }));
    }
    const learn = curves.learn || [];
    if (learn.length) {
      const arms = {};
      learn.forEach(function (r) {
        const name = (r.arm === undefined ? "run" : String(r.arm)) + (r.mode === undefined ? "" : " " + r.mode) +
          (r.seed === undefined ? "" : " seed " + r.seed);
        (arms[name] = arms[name] || []).push(r);
      });
      [["heldout_giou", "Held-out gIoU", true], ["heldout_ciou", "Held-out cIoU", true],
       ["heldout_parse", "Held-out parse rate", true], ["train_reward_mean", "Training reward (mean)", false],
       ["frac_reward_zero_std", "Groups with zero reward spread (fraction)", true]].forEach(function (m) {
        charts.push(lineChart(m[1] + " (learn.jsonl)", Object.keys(arms).sort().map(function (a) {
          return series(arms[a], m[0], a);
        }), { unit: m[2] }));
      });
    }
    charts.filter(Boolean).forEach(function (c) { box.appendChild(c); });
    if (!box.childNodes.length) {
      box.appendChild(el("p", { class: "note", text: "No curves yet: metrics.jsonl has no training logs (and there is no learn.jsonl)." }));
    }
  }

  // ------------------------------------------------------------------ steps and groups
  function drawSteps(info) {
    const ul = $("steps");
    ul.textContent = "";
    const notes = [];
    if (!info.steps.length) {
      notes.push(info.sessions.length ? "The rollout log has no groups yet." :
        "This run has no rollout log: train with --rollouts-every K to see the answers of a few groups every K steps.");
    }
    if (info.budget) notes.push("The rollout log reached its size budget at step " + info.budget.step + ": later steps were not logged.");
    if (info.bad_lines) notes.push(info.bad_lines + " unreadable line(s) in the rollout log were skipped.");
    if (info.sessions.length > 1) notes.push("The log holds " + info.sessions.length + " sessions (the run was resumed); a step logged twice shows its latest.");
    $("notes").textContent = notes.join(" ");
    info.steps.forEach(function (s) {
      const label = "Step " + s.step;
      const detail = s.groups + " group(s), mean reward " + Samr1.fmt(s.reward_mean, 2) +
        (s.zero_spread ? ", " + s.zero_spread + " with zero reward spread" : "");
      const b = el("button", { type: "button", "aria-pressed": String(s.step === state.step), title: detail,
                               "aria-label": label + ": " + detail, "data-step": s.step,
                               text: label + " · " + Samr1.fmt(s.reward_mean, 2) },
                   []);
      b.addEventListener("click", function () { selectStep(s.step); });
      ul.appendChild(el("li", {}, [b]));
    });
  }

  function viewOpts() {
    return { showMask: $("show-mask").checked, opacity: Number($("opacity").value) / 100,
             showGt: $("show-gt").checked, showPrompt: $("show-prompt").checked };
  }

  function repaint() {
    const v = viewOpts();
    state.painters.forEach(function (p) { p(v); });
  }

  function answerCard(run, g, c, i) {
    const canvas = el("canvas", { role: "img", "aria-label": "Answer " + (i + 1) + ": the image with SAM's mask of this answer" });
    const fig = el("figure", { class: "answer", role: "listitem", "data-reward": c.reward, "data-index": i }, [canvas]);
    const parts = Object.keys(c.rewards || {}).map(function (k) { return k + " " + Samr1.fmt(c.rewards[k], 2); });
    fig.appendChild(el("p", { class: "score", text: "#" + (i + 1) + " · reward " + Samr1.fmt(c.reward, 2) }));
    fig.appendChild(el("p", { class: "comp", text: parts.join(" · ") }));
    if (c.ok) fig.appendChild(el("p", { class: "comp", text: "mask IoU " + Samr1.fmt(c.iou) }));
    else fig.appendChild(el("p", { class: "reason", text: "did not parse: " + (c.reason || "?") }));
    fig.appendChild(el("details", {}, [el("summary", { text: "Completion" + (c.truncated ? " (cut)" : "") }),
                                       el("pre", { class: "text", text: c.text })]));
    const opts = {
      mask: c.mask ? Samr1.decodeRle(c.mask) : null,
      gt: g.gt ? Samr1.decodeRle(g.gt) : null,
      ignore: g.ignore ? Samr1.decodeRle(g.ignore) : null,
      boxes: (c.objects || []).map(function (o) { return o.bbox; }),
      points: [].concat.apply([], (c.objects || []).map(function (o) { return o.points; })),
    };
    image(run, g.image).then(function (img) {
      state.painters.push(function (v) { Object.assign(opts, v); Samr1.paint(canvas, img, opts); });
      Object.assign(opts, viewOpts());
      Samr1.paint(canvas, img, opts);
    }).catch(function (err) { fig.appendChild(el("p", { class: "reason", text: err.message })); });
    return fig;
  }

  function truthCard(run, g) {
    const canvas = el("canvas", { role: "img", "aria-label": "The image with the ground-truth mask" });
    const gt = g.gt ? Samr1.decodeRle(g.gt) : null;
    const ignore = g.ignore ? Samr1.decodeRle(g.ignore) : null;
    const opts = { mask: gt, showMask: true, opacity: 0.5, showGt: false, showPrompt: false, ignore: ignore };
    image(run, g.image).then(function (img) { Samr1.paint(canvas, img, opts); })
      .catch(function (err) { canvas.replaceWith(el("p", { class: "reason", text: err.message })); });
    const count = function (m) { return m ? m.data.reduce(function (a, b) { return a + b; }, 0) : 0; };
    let caption = count(gt) + " object pixels";
    if (ignore) caption += " · " + count(ignore) + " ignored (grey: in no IoU count)";
    return el("figure", { class: "answer gt", role: "listitem" }, [canvas,
      el("figcaption", { class: "score", text: "Ground truth" }), el("p", { class: "comp", text: caption })]);
  }

  function sortCards(list) {
    const how = $("sort").value;
    const cards = Array.from(list.querySelectorAll("figure.answer:not(.gt)"));
    cards.sort(function (a, b) {
      if (how === "order") return Number(a.dataset.index) - Number(b.dataset.index);
      const d = Number(a.dataset.reward) - Number(b.dataset.reward);
      return (how === "asc" ? d : -d) || Number(a.dataset.index) - Number(b.dataset.index);
    });
    cards.forEach(function (c) { list.appendChild(c); });
  }

  function drawGroups(run, res) {
    const box = $("groups");
    box.textContent = "";
    state.painters = [];
    if (!res.groups.length) {
      box.appendChild(el("p", { class: "note", text: "No groups logged at step " + res.step + "." }));
      return;
    }
    res.groups.forEach(function (g, gi) {
      const list = el("div", { class: "answers", role: "list", "aria-label": "The answers of group " + (gi + 1) });
      list.appendChild(truthCard(run, g));
      (g.completions || []).forEach(function (c, i) { list.appendChild(answerCard(run, g, c, i)); });
      sortCards(list);
      const flat = g.reward_std === 0;
      const meta = el("p", { class: "meta" }, [
        "image " + g.size[1] + " x " + g.size[0] + " · " + (g.completions || []).length + " answers · reward mean " +
        Samr1.fmt(g.reward_mean, 2) + ", std " + Samr1.fmt(g.reward_std, 2) + " · session " + g.session + " ",
        flat ? el("span", { class: "flag", text: "no reward spread: this group gives GRPO no signal" }) : null]);
      box.appendChild(el("article", { class: "group", "aria-label": "Group " + (gi + 1) }, [
        el("h3", { text: "Group " + (gi + 1) + (g.row_id === null || g.row_id === undefined ? "" : " (row " + g.row_id + ")") +
                   ": " + (g.query || "(query not recorded)") }),
        meta, list]));
    });
  }

  async function selectStep(step) {
    state.step = step;
    writeHash();
    Array.from($("steps").querySelectorAll("button")).forEach(function (b) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.step) === step));
    });
    try {
      const run = state.run;
      const res = await api.groups(run, step);
      if (run === state.run && step === state.step) drawGroups(run, res);
    } catch (err) { showError("Could not load step " + step + ": " + err.message); }
  }

  async function loadRun(run) {
    state.run = run;
    showError("");
    try {
      const [curves, steps] = await Promise.all([api.curves(run), api.steps(run)]);
      drawCharts(curves);
      const have = steps.steps.map(function (s) { return s.step; });
      if (state.step === null || have.indexOf(state.step) < 0) state.step = have.length ? have[have.length - 1] : null;
      drawSteps(steps);
      writeHash();
      if (state.step !== null) await selectStep(state.step);
      else $("groups").textContent = "";
    } catch (err) { showError("Could not load run " + run + ": " + err.message); }
  }

  async function start() {
    try {
      const info = await api.runs();
      $("root").textContent = info.root + (DATA ? " (exported)" : "");
      const sel = $("run");
      sel.textContent = "";
      info.runs.forEach(function (r) { sel.appendChild(el("option", { value: r, text: r === "." ? "(this folder)" : r })); });
      if (!info.runs.length) {
        showError("No run found in " + info.root + ": expected metrics.jsonl, learn.jsonl or rollouts/ (here or up to three folders down).");
        return;
      }
      const h = readHash();
      const run = h.run !== null && info.runs.indexOf(h.run) >= 0 ? h.run : info.runs[0];
      sel.value = run;
      state.step = h.step !== null && !Number.isNaN(h.step) ? h.step : null;
      await loadRun(run);
    } catch (err) { showError(err.message); }
  }

  $("run").addEventListener("change", function () { state.step = null; loadRun($("run").value); });
  $("reload").addEventListener("click", start); // the run list, the curves and the steps, read again
  $("sort").addEventListener("change", function () {
    Array.from(document.querySelectorAll("#groups .answers")).forEach(sortCards);
  });
  ["show-mask", "show-gt", "show-prompt"].forEach(function (id) { $(id).addEventListener("change", repaint); });
  $("opacity").addEventListener("input", function () {
    $("opacity-value").textContent = $("opacity").value + " %";
    repaint();
  });
  if (DATA) $("reload").hidden = true;
  start();
})();
