/* samr1 pages: what the segmentation page and the rollout viewer share.
 *
 * Masks arrive as COCO RLE ({size: [H, W], counts}: column-major runs, background first; counts either a
 * list of integers or COCO's compressed string). They are decoded here and drawn client-side: nothing but
 * the JSON the server already returns is needed. Coordinates are ORIGINAL image pixels (x right, y down).
 */
"use strict";

const Samr1 = (function () {
  // Colours of the overlays; the browser tests look for MASK_RGB in screenshots.
  const MASK_RGB = [255, 0, 170];
  const GT_RGB = [255, 212, 0];
  const IGNORE_RGB = [128, 128, 128];  // pixels neither the reward nor the metrics count
  const BOX_COLOUR = "#00e0ff";
  const POINT_COLOUR = "#39ff14";

  /** COCO counts (list or compressed string) -> array of run lengths. Throws on a malformed string. */
  function rleCounts(counts) {
    if (Array.isArray(counts)) return counts.map(Number);
    if (typeof counts !== "string") throw new Error("RLE counts must be a string or a list");
    const out = [];
    let p = 0;
    while (p < counts.length) {
      // 5-bit groups, least significant first, offset by 48; bit 0x20 = more groups follow; the last group's
      // bit 0x10 is the sign. Arithmetic, not JS bit operators: those are 32-bit and a count may use 35 bits.
      let x = 0, k = 0, more = true;
      while (more) {
        if (p >= counts.length) throw new Error("truncated RLE counts string");
        if (k === 13) throw new Error("RLE count too long");
        const c = counts.charCodeAt(p) - 48;
        if (c < 0 || c > 63) throw new Error("invalid character in RLE counts");
        x += (c & 0x1f) * Math.pow(2, 5 * k);
        more = (c & 0x20) !== 0;
        p += 1;
        k += 1;
        if (!more && (c & 0x10)) x -= Math.pow(2, 5 * k);
      }
      if (out.length > 2) x += out[out.length - 2];
      out.push(x);
    }
    return out;
  }

  /** RLE -> {h, w, data: Uint8Array(h * w) row-major, 1 = object}. */
  function decodeRle(rle) {
    if (!rle || !Array.isArray(rle.size) || rle.size.length !== 2) throw new Error("RLE needs size [H, W]");
    const h = rle.size[0], w = rle.size[1];
    const counts = rleCounts(rle.counts);
    const data = new Uint8Array(h * w);
    let pos = 0;
    for (let i = 0; i < counts.length; i++) {
      const n = counts[i];
      if (i % 2 === 1) {
        for (let j = pos; j < pos + n && j < h * w; j++) {
          const col = Math.floor(j / h), row = j - col * h; // column-major (COCO) -> row-major
          data[row * w + col] = 1;
        }
      }
      pos += n;
    }
    if (pos !== h * w) throw new Error("RLE counts sum to " + pos + ", expected " + h * w);
    return { h: h, w: w, data: data };
  }

  /** A canvas of the mask's own size: the object in `rgb`, opaque; the rest transparent. */
  function maskCanvas(mask, rgb) {
    const c = document.createElement("canvas");
    c.width = mask.w;
    c.height = mask.h;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(mask.w, mask.h);
    const px = img.data;
    for (let i = 0; i < mask.data.length; i++) {
      if (mask.data[i]) {
        px[4 * i] = rgb[0];
        px[4 * i + 1] = rgb[1];
        px[4 * i + 2] = rgb[2];
        px[4 * i + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    return c;
  }

  /** A canvas with the mask's inner border (`width` px; the image edge counts as outside) in `rgb`. */
  function outlineCanvas(mask, rgb, width) {
    const h = mask.h, w = mask.w, src = mask.data;
    let cur = src;
    for (let r = 0; r < (width || 1); r++) {
      const next = new Uint8Array(h * w);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const i = y * w + x;
          next[i] = cur[i] && x > 0 && x < w - 1 && y > 0 && y < h - 1 &&
            cur[i - 1] && cur[i + 1] && cur[i - w] && cur[i + w] ? 1 : 0;
        }
      }
      cur = next;
    }
    const band = new Uint8Array(h * w);
    for (let i = 0; i < band.length; i++) band[i] = src[i] && !cur[i] ? 1 : 0;
    return maskCanvas({ h: h, w: w, data: band }, rgb);
  }

  /** Draw boxes ([[x1, y1, x2, y2], ...]) and points ([[x, y], ...]) in image pixels; `scale` = line scale. */
  function drawPrompt(ctx, boxes, points, scale, dashed) {
    ctx.save();
    ctx.lineWidth = Math.max(1.5, 2 * scale);
    ctx.strokeStyle = BOX_COLOUR;
    if (dashed) ctx.setLineDash([6 * scale, 4 * scale]);
    for (const b of boxes || []) {
      ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
    }
    ctx.setLineDash([]);
    const r = Math.max(3, 4 * scale);
    for (const p of points || []) {
      ctx.beginPath();
      ctx.arc(p[0], p[1], r, 0, 2 * Math.PI);
      ctx.fillStyle = POINT_COLOUR;
      ctx.fill();
      ctx.lineWidth = Math.max(1, scale);
      ctx.strokeStyle = "#000";
      ctx.stroke();
    }
    ctx.restore();
  }

  /** Paint `image` with optional mask (at `opacity`), ground-truth outline and prompt on `canvas`.
   * opts: {mask: decoded mask, showMask, opacity (0..1), gt: decoded mask, showGt, ignore: decoded mask (drawn
   * grey, under the mask), boxes, points, showPrompt, pending: {boxes, points} drawn dashed}. The canvas takes the
   * image's natural size. */
  function paint(canvas, image, opts) {
    const w = image.naturalWidth || image.width, h = image.naturalHeight || image.height;
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    ctx.drawImage(image, 0, 0, w, h);
    const scale = Math.max(w, h) / 480;
    if (opts.ignore) {
      opts._ignoreCanvas = opts._ignoreCanvas || maskCanvas(opts.ignore, IGNORE_RGB);
      ctx.save();
      ctx.globalAlpha = 0.6;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(opts._ignoreCanvas, 0, 0, w, h);
      ctx.restore();
    }
    if (opts.mask && opts.showMask !== false) {
      opts._maskCanvas = opts._maskCanvas || maskCanvas(opts.mask, MASK_RGB);
      ctx.save();
      ctx.globalAlpha = opts.opacity === undefined ? 0.5 : opts.opacity;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(opts._maskCanvas, 0, 0, w, h);
      ctx.restore();
    }
    if (opts.gt && opts.showGt) {
      opts._gtCanvas = opts._gtCanvas || outlineCanvas(opts.gt, GT_RGB, Math.max(1, Math.round(scale * 1.5)));
      ctx.save();
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(opts._gtCanvas, 0, 0, w, h);
      ctx.restore();
    }
    if (opts.showPrompt !== false) drawPrompt(ctx, opts.boxes, opts.points, scale, false);
    if (opts.pending) drawPrompt(ctx, opts.pending.boxes, opts.pending.points, scale, true);
  }

  /** Load an image from a URL (object URL or data URI); resolves to the <img> element. */
  function loadImage(url) {
    return new Promise(function (resolve, reject) {
      const img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error("the browser could not decode this image")); };
      img.src = url;
    });
  }

  /** Mouse/pointer position on a canvas shown at any CSS size, in the canvas' own (image) pixels. */
  function canvasPoint(canvas, ev) {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    return Number(v).toFixed(digits === undefined ? 3 : digits);
  }

  /** Element builder: el("div", {class: "x", text: "..."}, [children]). */
  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children || []) if (c) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return e;
  }

  return {
    MASK_RGB: MASK_RGB, GT_RGB: GT_RGB, IGNORE_RGB: IGNORE_RGB, rleCounts: rleCounts, decodeRle: decodeRle, maskCanvas: maskCanvas,
    outlineCanvas: outlineCanvas, drawPrompt: drawPrompt, paint: paint, loadImage: loadImage,
    canvasPoint: canvasPoint, fmt: fmt, el: el,
  };
})();
