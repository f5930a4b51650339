// A small cropper: a box over the image, in the image's own (natural) pixels, with eight handles,
// moved by dragging, drawn anew by dragging outside it, and an optional fixed aspect ratio.
"use strict";

class Cropper {
  constructor(stage, image, box, onChange) {
    this.stage = stage;
    this.image = image;
    this.boxEl = box;
    this.onChange = onChange;
    this.ratio = null; // width / height, or null for free
    this.box = null; // {x, y, w, h} in natural pixels
    this.drag = null;
    stage.addEventListener("pointerdown", (e) => this.start(e));
    stage.addEventListener("pointermove", (e) => this.move(e));
    stage.addEventListener("pointerup", (e) => this.end(e));
    stage.addEventListener("pointercancel", (e) => this.end(e));
    box.addEventListener("keydown", (e) => this.key(e));
    window.addEventListener("resize", () => this.render());
  }

  get width() { return this.image.naturalWidth; }
  get height() { return this.image.naturalHeight; }
  get scale() { return this.image.clientWidth / this.width || 1; }
  get minSide() { return Math.max(4, Math.min(this.width, this.height) * 0.02); }

  // the whole image (the search then sends no crop)
  reset() {
    this.ratio = null;
    this.box = { x: 0, y: 0, w: this.width, h: this.height };
    this.changed();
  }

  isWholeImage() {
    const b = this.box;
    return !b || (b.x <= 0.5 && b.y <= 0.5 && b.w >= this.width - 1 && b.h >= this.height - 1);
  }

  // a fixed ratio: the largest box of that shape inside the image, 80% of it, centred on the old box
  setRatio(ratio) {
    this.ratio = ratio;
    if (!ratio) { this.changed(); return; }
    let w = this.width, h = w / ratio;
    if (h > this.height) { h = this.height; w = h * ratio; }
    w *= 0.8; h *= 0.8;
    const b = this.box || { x: 0, y: 0, w: this.width, h: this.height };
    const cx = b.x + b.w / 2, cy = b.y + b.h / 2;
    this.box = this.clampMove({ x: cx - w / 2, y: cy - h / 2, w, h });
    this.changed();
  }

  setBox(x, y, w, h) {
    this.box = this.clampMove({ x, y, w: Math.min(w, this.width), h: Math.min(h, this.height) });
    this.changed();
  }

  // the crop as integers "x,y,w,h" for the API, or null for the whole image
  cropParam() {
    if (this.isWholeImage()) return null;
    const b = this.box;
    const x = Math.round(b.x), y = Math.round(b.y);
    const w = Math.max(1, Math.min(Math.round(b.w), this.width - x));
    const h = Math.max(1, Math.min(Math.round(b.h), this.height - y));
    return `${x},${y},${w},${h}`;
  }

  point(e) {
    const r = this.image.getBoundingClientRect();
    const s = this.scale;
    return {
      x: Math.min(Math.max((e.clientX - r.left) / s, 0), this.width),
      y: Math.min(Math.max((e.clientY - r.top) / s, 0), this.height),
    };
  }

  start(e) {
    if (!this.box || e.button !== 0) return;
    e.preventDefault();
    const p = this.point(e);
    const handle = e.target.dataset ? e.target.dataset.handle : undefined;
    if (handle) this.drag = { mode: handle, p, box: { ...this.box } };
    else if (e.target === this.boxEl && !this.isWholeImage()) this.drag = { mode: "move", p, box: { ...this.box } };
    else this.drag = { mode: "draw", p, box: { x: p.x, y: p.y, w: 0, h: 0 } };
    this.stage.setPointerCapture(e.pointerId);
  }

  move(e) {
    if (!this.drag) return;
    e.preventDefault();
    const p = this.point(e);
    const d = this.drag;
    if (d.mode === "move") {
      this.box = this.clampMove({ ...d.box, x: d.box.x + p.x - d.p.x, y: d.box.y + p.y - d.p.y });
    } else if (d.mode === "draw") {
      this.box = this.fromCorners(d.p, p);
    } else {
      this.box = this.resize(d.box, d.mode, p);
    }
    this.changed();
  }

  end(e) {
    if (!this.drag) return;
    this.drag = null;
    if (this.box.w < this.minSide || this.box.h < this.minSide) this.reset(); // a click, not a drag
    if (this.stage.hasPointerCapture(e.pointerId)) this.stage.releasePointerCapture(e.pointerId);
  }

  key(e) {
    const step = e.shiftKey ? 10 : 1;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    const m = moves[e.key];
    if (!m || !this.box) return;
    e.preventDefault();
    this.box = this.clampMove({ ...this.box, x: this.box.x + m[0] / this.scale, y: this.box.y + m[1] / this.scale });
    this.changed();
  }

  // a box from a fixed corner a to the pointer b, of the current ratio, inside the image
  fromCorners(a, b) {
    let w = Math.abs(b.x - a.x), h = Math.abs(b.y - a.y);
    const sx = b.x >= a.x ? 1 : -1, sy = b.y >= a.y ? 1 : -1;
    const maxW = sx > 0 ? this.width - a.x : a.x, maxH = sy > 0 ? this.height - a.y : a.y;
    if (this.ratio) {
      w = Math.max(w, h * this.ratio);
      w = Math.min(w, maxW, maxH * this.ratio);
      h = w / this.ratio;
    } else {
      w = Math.min(w, maxW); h = Math.min(h, maxH);
    }
    return { x: sx > 0 ? a.x : a.x - w, y: sy > 0 ? a.y : a.y - h, w, h };
  }

  resize(box, handle, p) {
    const right = box.x + box.w, bottom = box.y + box.h;
    if (handle.length === 2) { // a corner: the opposite corner stays
      const anchor = { x: handle.includes("w") ? right : box.x, y: handle.includes("n") ? bottom : box.y };
      return this.ensureMin(this.fromCorners(anchor, p), anchor);
    }
    let { x, y, w, h } = box;
    if (handle === "e") w = p.x - x;
    if (handle === "w") { w = right - p.x; x = p.x; }
    if (handle === "s") h = p.y - y;
    if (handle === "n") { h = bottom - p.y; y = p.y; }
    w = Math.max(w, this.minSide); h = Math.max(h, this.minSide);
    if (this.ratio) { // the other side follows, centred on the box
      if (handle === "e" || handle === "w") { const c = box.y + box.h / 2; h = w / this.ratio; y = c - h / 2; }
      else { const c = box.x + box.w / 2; w = h * this.ratio; x = c - w / 2; }
      if (w > this.width || h > this.height) {
        const f = Math.min(this.width / w, this.height / h);
        w *= f; h *= f;
      }
    }
    if (handle === "w") x = right - w;
    if (handle === "n") y = bottom - h;
    return this.clampMove({ x, y, w: Math.min(w, this.width), h: Math.min(h, this.height) });
  }

  ensureMin(b, anchor) {
    if (b.w >= this.minSide && b.h >= this.minSide) return b;
    const w = Math.max(b.w, this.minSide), h = this.ratio ? w / this.ratio : Math.max(b.h, this.minSide);
    return this.clampMove({ x: b.x < anchor.x ? anchor.x - w : anchor.x, y: b.y < anchor.y ? anchor.y - h : anchor.y, w, h });
  }

  clampMove(b) {
    return {
      w: b.w, h: b.h,
      x: Math.min(Math.max(b.x, 0), this.width - b.w),
      y: Math.min(Math.max(b.y, 0), this.height - b.h),
    };
  }

  changed() {
    this.render();
    if (this.onChange) this.onChange(this);
  }

  render() {
    if (!this.box) return;
    const s = this.scale, b = this.box, el = this.boxEl.style;
    el.left = `${this.image.offsetLeft + b.x * s}px`;
    el.top = `${this.image.offsetTop + b.y * s}px`;
    el.width = `${b.w * s}px`;
    el.height = `${b.h * s}px`;
  }
}

window.Cropper = Cropper;
