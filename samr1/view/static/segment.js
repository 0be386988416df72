/* samr1 segment page: upload an image, ask the policy (or draw a box and points for SAM alone), see the
 * answer and the mask. Talks to the same server's GET healthz and POST segment (multipart), with the same
 * bearer token as any other client. */
"use strict";

(function () {
  const $ = function (id) { return document.getElementById(id); };
  const TOKEN_KEY = "samr1-token";
  const state = {
    file: null, image: null, imageUrl: null, policy: false,
    draft: { box: null, points: [] }, // the user's prompt (SAM alone), image pixels
    result: null, view: {},
  };

  // ------------------------------------------------------------------ token: entered once per tab
  const tokenInput = $("token");
  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
  tokenInput.addEventListener("change", function () {
    const v = tokenInput.value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
  });
  $("token-forget").addEventListener("click", function () {
    sessionStorage.removeItem(TOKEN_KEY);
    tokenInput.value = "";
    tokenInput.focus();
  });

  function authHeaders() {
    const t = tokenInput.value.trim();
    return t ? { Authorization: "Bearer " + t } : {};
  }

  // ------------------------------------------------------------------ errors
  function showError(msg) {
    const e = $("error");
    e.textContent = msg;
    e.hidden = !msg;
  }

  async function errorText(resp) {
    let msg = resp.statusText || "";
    try {
      const body = await resp.json();
      if (body && body.error) msg = body.error;
    } catch (_) { /* not JSON: keep the status text */ }
    return "The server answered " + resp.status + ": " + msg;
  }

  // ------------------------------------------------------------------ server capabilities
  function setMode(mode) {
    $("mode-query").checked = mode === "query";
    $("mode-box").checked = mode === "box";
    $("query-field").hidden = mode !== "query";
    $("box-fields").hidden = mode !== "box";
    render();
  }

  function currentMode() { return $("mode-query").checked ? "query" : "box"; }

  async function health() {
    try {
      const r = await fetch("healthz", { cache: "no-store" });
      const h = await r.json();
      state.policy = !!h.policy;
      const parts = [state.policy ? "Server ready: a policy and SAM." : "Server ready: SAM alone (no policy): draw a box and points."];
      if (h.token_required) parts.push("This server needs a bearer token.");
      if (h.limits) {
        parts.push("Limits: " + (h.limits.max_body_bytes / 1048576).toFixed(0) + " MiB a request, " +
                   h.limits.max_side + " px a side.");
      }
      $("server-status").textContent = parts.join(" ");
      $("mode-query").disabled = !state.policy;
      setMode(state.policy ? "query" : "box");
    } catch (err) {
      $("server-status").textContent = "Could not reach the server (" + err.message + ").";
      setMode("box");
    }
  }

  // ------------------------------------------------------------------ the image
  async function takeFile(file) {
    if (!file) return;
    showError("");
    if (file.type && !file.type.startsWith("image/")) {
      showError("That file is not an image (" + file.type + ").");
      return;
    }
    try {
      const url = URL.createObjectURL(file);
      const img = await Samr1.loadImage(url);
      if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
      state.file = file;
      state.image = img;
      state.imageUrl = url;
      state.result = null;
      state.view = {};
      state.draft = { box: null, points: [] };
      syncDraftFields();
      $("answer").hidden = true;
      $("timings").hidden = true;
      $("summary").textContent = "Image " + img.naturalWidth + " x " + img.naturalHeight + " px (W x H) loaded.";
      render();
    } catch (err) {
      showError("Cannot show " + file.name + ": " + err.message + ".");
    }
  }

  $("image").addEventListener("change", function (e) { takeFile(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("click", function () { $("image").click(); });
  drop.addEventListener("keydown", function (e) {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("image").click(); }
  });
  ["dragenter", "dragover"].forEach(function (t) {
    drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (t) {
    drop.addEventListener(t, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    if (e.dataTransfer.files.length) takeFile(e.dataTransfer.files[0]);
  });

  // ------------------------------------------------------------------ the user's box and points
  function parseNumbers(text) {
    return text.split(/[;,\s]+/).filter(function (s) { return s !== ""; }).map(Number);
  }

  function syncDraftFields() {
    const d = state.draft;
    $("box").value = d.box ? d.box.map(function (v) { return Math.round(v); }).join(",") : "";
    $("points").value = d.points.map(function (p) { return Math.round(p[0]) + "," + Math.round(p[1]); }).join(";");
  }

  $("box").addEventListener("input", function () {
    const v = parseNumbers($("box").value);
    state.draft.box = v.length === 4 && v.every(Number.isFinite) ? v : null;
    render();
  });
  $("points").addEventListener("input", function () {
    const v = parseNumbers($("points").value);
    const pts = [];
    if (v.length % 2 === 0 && v.every(Number.isFinite)) for (let i = 0; i < v.length; i += 2) pts.push([v[i], v[i + 1]]);
    state.draft.points = pts;
    render();
  });
  $("clear-prompt").addEventListener("click", function () {
    state.draft = { box: null, points: [] };
    syncDraftFields();
    render();
  });

  const canvas = $("canvas");
  let drag = null;
  canvas.addEventListener("pointerdown", function (e) {
    if (!state.image || currentMode() !== "box") return;
    canvas.setPointerCapture(e.pointerId);
    drag = { start: Samr1.canvasPoint(canvas, e), now: null };
  });
  canvas.addEventListener("pointermove", function (e) {
    if (!drag) return;
    drag.now = Samr1.canvasPoint(canvas, e);
    render();
  });
  canvas.addEventListener("pointerup", function (e) {
    if (!drag) return;
    const a = drag.start, b = Samr1.canvasPoint(canvas, e);
    const tol = 4 * canvas.width / canvas.getBoundingClientRect().width; // a click moves less than 4 screen px
    if (Math.abs(b[0] - a[0]) > tol || Math.abs(b[1] - a[1]) > tol) {
      state.draft.box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
    } else {
      state.draft.points.push(a);
    }
    drag = null;
    syncDraftFields();
    render();
  });

  // ------------------------------------------------------------------ display
  function render() {
    if (!state.image) return;
    const res = state.result;
    const pending = { boxes: [], points: [] };
    if (currentMode() === "box") {
      if (state.draft.box) pending.boxes.push(state.draft.box);
      pending.points = state.draft.points.slice();
      if (drag && drag.now) {
        const a = drag.start, b = drag.now;
        pending.boxes = [[Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])]];
      }
    }
    const view = state.view;
    view.showMask = $("show-mask").checked;
    view.opacity = Number($("opacity").value) / 100;
    view.showPrompt = $("show-prompt").checked;
    view.boxes = res && res.answer ? [res.answer.bbox] : [];
    view.points = res && res.answer ? res.answer.points : [];
    view.pending = pending;
    Samr1.paint(canvas, state.image, view);
  }

  $("show-mask").addEventListener("change", render);
  $("show-prompt").addEventListener("change", render);
  $("opacity").addEventListener("input", function () {
    $("opacity-value").textContent = $("opacity").value + " %";
    render();
  });
  $("query").addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); } // Shift+Enter: new line
  });
  $("mode-query").addEventListener("change", function () { setMode("query"); });
  $("mode-box").addEventListener("change", function () { setMode("box"); });

  function showResult(res) {
    state.result = res;
    state.view = {};
    if (res.mask) {
      try {
        state.view.mask = Samr1.decodeRle(res.mask);
      } catch (err) {
        showError("The mask in the answer could not be decoded: " + err.message);
      }
    }
    const ans = res.answer;
    $("answer").hidden = false;
    $("think").textContent = res.think || "(no <think> block)";
    const px = function (v) { return Number(v).toFixed(1); };
    $("parsed").textContent = ans
      ? "box (x1, y1, x2, y2): " + ans.bbox.map(px).join(", ") + "\npoints (x, y): " +
        (ans.points.length ? ans.points.map(function (p) { return "(" + px(p[0]) + ", " + px(p[1]) + ")"; }).join(" ") : "none")
      : "(none: " + (res.reason || "no answer") + ")";
    $("raw").textContent = res.text === null || res.text === undefined ? "(SAM alone: no policy text)" : res.text;
    $("raw").parentElement.hidden = res.text === null || res.text === undefined;
    const size = res.size ? res.size[1] + " x " + res.size[0] : "?";
    $("summary").textContent = res.ok
      ? "Mask of " + res.mask_pixels + " pixels on the " + size + " image."
      : "No mask: the answer did not parse (" + (res.reason || "unknown reason") + ").";
    const body = $("timings").querySelector("tbody");
    body.textContent = "";
    const t = res.timings || {};
    Object.keys(t).forEach(function (k) {
      const isTime = k.endsWith("_s");
      body.appendChild(Samr1.el("tr", {}, [
        Samr1.el("th", { scope: "row", text: isTime ? k.slice(0, -2) : k }),
        Samr1.el("td", { text: isTime ? (1000 * t[k]).toFixed(1) : String(t[k]) })]));
    });
    $("timings").hidden = Object.keys(t).length === 0;
    render();
  }

  // ------------------------------------------------------------------ ask
  $("form").addEventListener("submit", async function (e) {
    e.preventDefault();
    showError("");
    if (!state.file) { showError("Choose an image first."); $("image").focus(); return; }
    const fd = new FormData();
    fd.append("image", state.file, state.file.name || "image");
    if (currentMode() === "query") {
      const q = $("query").value.trim();
      if (!q) { showError("Type a question first."); $("query").focus(); return; }
      fd.append("query", q);
    } else {
      if (!state.draft.box) { showError("Draw a box on the image or type x1,y1,x2,y2 first."); $("box").focus(); return; }
      fd.append("box", state.draft.box.map(function (v) { return v.toFixed(1); }).join(","));
      if (state.draft.points.length) {
        fd.append("points", state.draft.points.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(";"));
      }
    }
    const button = $("submit");
    button.disabled = true;
    $("summary").textContent = "Working…";
    try {
      const resp = await fetch("segment", { method: "POST", body: fd, headers: authHeaders() });
      if (!resp.ok) {
        showError(await errorText(resp));
        $("summary").textContent = "The request failed.";
        if (resp.status === 401) tokenInput.focus();
        return;
      }
      showResult(await resp.json());
    } catch (err) {
      showError("Could not reach the server: " + err.message);
      $("summary").textContent = "The request failed.";
    } finally {
      button.disabled = false;
    }
  });

  health();
})();
