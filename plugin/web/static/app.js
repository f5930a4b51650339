// The demo page: choose or drop an image, crop it, pick the model and k, search, show the hits.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, settings: null, cropper: null, objectUrl: null };

const MESSAGES = {
  413: (e) => `The image is too large: ${e.message}`,
  415: () => "That file is not an image this server can read (JPEG, PNG, WebP, GIF, BMP, TIFF).",
  429: (e, r) => `Too many searches; try again in ${r.headers.get("Retry-After") || "a few"} seconds.`,
  503: () => "The search backend (the cluster) is down or unreachable; try again later.",
};

function showMessage(text, kind = "error") {
  const el = $("message");
  el.textContent = text;
  el.className = `message ${kind}`;
  el.hidden = !text;
}

function megabytes(n) { return `${(n / 2 ** 20).toFixed(n < 2 ** 20 ? 2 : 0)} MB`; }

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function init() {
  try {
    const [settings, models] = await Promise.all([getJson("/api/settings"), getJson("/api/models")]);
    state.settings = settings;
    $("title").textContent = settings.title;
    const k = $("k");
    k.max = settings.max_k;
    k.value = settings.default_k;
    $("expand").disabled = settings.max_expand < 1;
    const select = $("model");
    for (const m of models) {
      const option = document.createElement("option");
      option.value = m.name;
      const docs = m.documents === null ? "store unreachable" : `${m.documents} images`;
      option.textContent = `${m.name} — ${m.backbone}, ${m.pooling}, ${m.dims}-d, ${docs}`;
      option.selected = m.default;
      select.append(option);
    }
  } catch (err) {
    showMessage(`Cannot reach the search server (${err.message}).`);
  }
  state.cropper = new Cropper($("stage"), $("query-image"), $("crop-box"), describeCrop);
  wireDrop();
  for (const b of document.querySelectorAll(".preset[data-ratio]")) {
    b.addEventListener("click", () => choosePreset(b));
  }
  $("full-image").addEventListener("click", () => {
    choosePreset(document.querySelector('.preset[data-ratio="free"]'));
    state.cropper.reset();
  });
  $("search").addEventListener("click", () => search());
}

function choosePreset(button) {
  for (const b of document.querySelectorAll(".preset[data-ratio]")) b.classList.toggle("active", b === button);
  if (!state.cropper.box) return;
  const r = button.dataset.ratio;
  state.cropper.setRatio(r === "free" ? null : Number(r));
}

function describeCrop(cropper) {
  const crop = cropper.cropParam();
  $("crop-info").textContent = crop
    ? `Region x,y,w,h = ${crop} of ${cropper.width}×${cropper.height}`
    : `Whole image, ${cropper.width}×${cropper.height} (drag on it to crop)`;
}

function wireDrop() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => input.files[0] && useFile(input.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) useFile(file);
  });
  drop.addEventListener("keydown", (e) => {
    if ((e.key === "Enter" || e.key === " ") && e.target === drop) input.click();
  });
}

function useFile(file) {
  showMessage("");
  const max = state.settings ? state.settings.max_upload_bytes : Infinity;
  if (file.size > max) {
    showMessage(`The image is too large: ${megabytes(file.size)}, the limit is ${megabytes(max)}.`);
    return;
  }
  if (file.type && !file.type.startsWith("image/")) {
    showMessage(`"${file.name}" is not an image.`);
    return;
  }
  state.file = file;
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(file);
  const img = $("query-image");
  img.onload = () => {
    $("drop-hint").hidden = true;
    $("stage").hidden = false;
    choosePreset(document.querySelector('.preset[data-ratio="free"]'));
    state.cropper.reset();
    $("search").disabled = false;
  };
  img.onerror = () => {
    showMessage(`"${file.name}" cannot be shown as an image.`);
    state.file = null;
    $("search").disabled = true;
  };
  img.src = state.objectUrl;
}

async function search(docId = null) {
  const form = new FormData();
  if (docId) form.append("id", docId);
  else if (state.file) {
    form.append("image", state.file, state.file.name || "query");
    const crop = state.cropper.cropParam();
    if (crop) form.append("crop", crop);
  } else return;
  form.append("model", $("model").value);
  form.append("k", $("k").value);
  if ($("expand").checked) form.append("expand", String(Math.min(2, state.settings.max_expand)));
  const button = $("search");
  button.disabled = true;
  $("summary").textContent = "Searching…";
  showMessage("");
  try {
    const response = await fetch("/api/search", { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = body.error || { message: `HTTP ${response.status}` };
      const make = MESSAGES[response.status];
      showMessage(make ? make(error, response) : error.message);
      $("summary").textContent = "";
      $("results").replaceChildren();
      return;
    }
    render(body, docId);
  } catch (err) {
    showMessage(`Cannot reach the search server (${err.message}).`);
    $("summary").textContent = "";
  } finally {
    button.disabled = !state.file;
  }
}

function render(result, docId) {
  const t = result.timings;
  const what = docId ? `similar to ${docId.slice(0, 12)}…` : result.crop ? "for the region" : "for the image";
  $("summary").textContent =
    `${result.hits.length} results ${what} with ${result.model} — decode ${t.decode_ms.toFixed(0)} ms, ` +
    `embed ${t.embed_ms.toFixed(0)} ms, k-NN ${t.knn_ms.toFixed(0)} ms` +
    (result.expand ? `, expansion ${t.expand_ms.toFixed(0)} ms` : "");
  const list = $("results");
  list.replaceChildren();
  for (const hit of result.hits) list.append(card(hit));
  if (!result.hits.length) showMessage("No results (the store may be empty, or the filters match nothing).", "info");
}

function card(hit) {
  const li = document.createElement("li");
  li.className = "hit";
  const link = document.createElement(hit.image_url ? "a" : "div");
  if (hit.image_url) {
    link.href = hit.image_url;
    link.target = "_blank";
    link.rel = "noopener";
  }
  link.className = "thumb";
  if (hit.thumbnail_url) {
    const img = document.createElement("img");
    img.src = hit.thumbnail_url;
    img.alt = `result ${hit.rank}`;
    img.loading = "lazy";
    img.onerror = () => { link.replaceChildren("image not available"); };
    link.append(img);
  } else {
    link.textContent = "no image";
  }
  const info = document.createElement("div");
  info.className = "info";
  const head = document.createElement("p");
  head.innerHTML = "<strong></strong> <span class=score></span>";
  head.querySelector("strong").textContent = `#${hit.rank}`;
  head.querySelector(".score").textContent = hit.score.toFixed(3);
  info.append(head);
  const meta = document.createElement("dl");
  for (const [key, value] of Object.entries(hit.metadata).slice(0, 6)) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
    meta.append(dt, dd);
  }
  info.append(meta);
  const similar = document.createElement("button");
  similar.type = "button";
  similar.className = "similar";
  similar.textContent = "more like this";
  similar.addEventListener("click", () => search(hit.id));
  info.append(similar);
  li.append(link, info);
  return li;
}

document.addEventListener("DOMContentLoaded", init);
