// The page: choose or drop an image (or take a result's, "more like this"), crop it, pick the model,
// k and filters, search, show the hits, load more up to the server's limit.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  settings: null, cropper: null, filters: null, file: null, objectUrl: null,
  query: { kind: "image" }, // or {kind: "doc", hit}: "more like this"
  last: null, // the search shown: {request, pageSize, hits}
  answered: 0, // searches answered (or failed), on #results as data-answered for scripts and tests
};

function showMessage(text, kind = "error") {
  const el = $("message");
  el.textContent = text;
  el.className = `message ${kind}`;
  el.hidden = !text;
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function init() {
  state.cropper = new Cropper($("stage"), $("query-image"), $("crop-box"), describeCrop);
  state.filters = new Filters((problem) => showMessage(problem));
  wireControls();
  try {
    const [settings, models] = await Promise.all([getJson("/api/settings"), getJson("/api/models")]);
    applySettings(settings);
    fillModels(models);
    await state.filters.load($("model").value);
  } catch (err) {
    showMessage(`Cannot reach the search server (${err.message}).`);
  }
}

function applySettings(settings) {
  state.settings = settings;
  $("title").textContent = settings.title;
  $("k").max = settings.max_k;
  $("k").value = settings.default_k;
  $("expand").disabled = settings.max_expand < 1;
}

// each option shows the model's whole name; its details go in the line below the list
function fillModels(models) {
  const select = $("model");
  for (const m of models) {
    const option = new Option(m.name, m.name, m.default, m.default);
    const docs = m.documents === null ? "store unreachable" : `${m.documents} images`;
    option.dataset.info = `${m.backbone}, ${m.pooling}, ${m.dims}-d, ${docs}`;
    select.append(option);
  }
  describeModel();
}

function describeModel() {
  const option = $("model").selectedOptions[0];
  $("model-info").textContent = option ? option.dataset.info : "";
}

function wireControls() {
  wireDrop();
  for (const b of document.querySelectorAll(".preset[data-ratio]")) {
    b.addEventListener("click", () => choosePreset(b));
  }
  $("full-image").addEventListener("click", () => {
    choosePreset(document.querySelector('.preset[data-ratio="free"]'));
    state.cropper.reset();
  });
  $("model").addEventListener("change", () => { describeModel(); state.filters.load($("model").value); });
  $("search").addEventListener("click", () => searchNew());
  $("load-more").addEventListener("click", () => loadMore());
  $("back-to-image").addEventListener("click", () => useImageQuery());
  $("detail-close").addEventListener("click", () => $("detail").close());
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
  input.addEventListener("change", () => {
    if (input.files[0]) useFile(input.files[0]);
    input.value = ""; // so that choosing the same file again is a change too
  });
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
    showMessage(`The image is too large: ${Messages.megabytes(file.size)}, the limit is ${Messages.megabytes(max)}.`);
    return;
  }
  if (file.type && !file.type.startsWith("image/")) {
    showMessage(`"${file.name}" is not an image.`);
    return;
  }
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(file);
  const img = $("query-image");
  img.onload = () => {
    state.file = file;
    useImageQuery();
    $("drop-hint").hidden = true;
    $("stage").hidden = false;
    choosePreset(document.querySelector('.preset[data-ratio="free"]'));
    state.cropper.reset();
  };
  img.onerror = () => {
    showMessage(`"${file.name}" cannot be shown: the file is damaged or is not an image.`);
    state.file = null;
    $("search").disabled = true;
  };
  img.src = state.objectUrl;
}

// the query panel: the user's image and its crop, or the document of "more like this"
function useImageQuery() {
  state.query = { kind: "image" };
  $("drop").hidden = false;
  $("presets").hidden = false;
  $("crop-info").hidden = false;
  $("doc-query").hidden = true;
  $("search").disabled = !state.file;
  if (state.file) state.cropper.render();
}

function useDocQuery(hit) {
  state.query = { kind: "doc", hit };
  $("drop").hidden = true;
  $("presets").hidden = true;
  $("crop-info").hidden = true;
  $("doc-query").hidden = false;
  $("doc-query-thumb").replaceChildren(Results.thumbnail(hit, `the query: ${hit.title}`));
  $("doc-query-label").textContent = `Query: more like ${hit.title}`;
  $("back-to-image").hidden = !state.file;
  $("search").disabled = false;
}

function moreLike(hit) {
  useDocQuery(hit);
  searchNew();
  window.scrollTo({ top: 0 });
}

// what is searched, fixed when the search starts: "load more" asks the same with a larger k
function snapshot() {
  const request = {
    model: $("model").value, filters: state.filters.toJson(), filterText: state.filters.describe(),
    expand: $("expand").checked ? Math.min(2, state.settings.max_expand) : 0,
  };
  if (state.query.kind === "doc") {
    const hit = state.query.hit;
    return { ...request, id: hit.id, label: `Query: more like ${hit.title}`, what: `like ${hit.title}`,
      picture: hit.thumbnail_url || "" };
  }
  const cropper = state.cropper, crop = cropper.cropParam();
  const name = state.file.name || "the image";
  const box = cropper.box || { x: 0, y: 0, w: cropper.width, h: cropper.height };
  return { ...request, file: state.file, crop, picture: Results.cropPicture($("query-image"), box),
    label: crop ? `Query: region ${crop} of ${name}` : `Query: ${name} (whole image)`,
    what: crop ? "for the region" : "for the image" };
}

function formOf(request, k) {
  const form = new FormData();
  if (request.id) form.append("id", request.id);
  else {
    form.append("image", request.file, request.file.name || "query");
    if (request.crop) form.append("crop", request.crop);
  }
  form.append("model", request.model);
  form.append("k", String(k));
  if (request.filters) form.append("filters", request.filters);
  if (request.expand) form.append("expand", String(request.expand));
  return form;
}

function searchNew() {
  if (state.query.kind === "image" && !state.file) return;
  const k = Number($("k").value);
  run(snapshot(), k, k);
}

function loadMore() {
  const last = state.last;
  if (!last) return;
  run(last.request, Math.min(last.hits.length + last.pageSize, state.settings.max_k), last.pageSize);
}

// one search; a failure leaves the results shown before it in place
async function run(request, k, pageSize) {
  const busy = [$("search"), $("load-more")];
  for (const b of busy) b.disabled = true;
  showMessage("");
  $("results").setAttribute("aria-busy", "true");
  try {
    const response = await fetch("/api/search", { method: "POST", body: formOf(request, k) });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) return failed(response.status, body.error || {}, response);
    const before = state.last && state.last.request === request ? state.last.hits.length : 0;
    state.last = { request, pageSize, k, hits: body.hits };
    render(body, before);
  } catch (err) {
    failed(0, { message: `cannot reach the search server (${err.message})` });
  } finally {
    $("results").removeAttribute("aria-busy");
    $("results").dataset.answered = String(++state.answered);
    for (const b of busy) b.disabled = false;
    $("search").disabled = state.query.kind === "image" && !state.file;
  }
}

function failed(status, error, response) {
  const text = status ? Messages.forError(status, error, state.settings, response)
    : `The search failed: ${error.message}.`;
  const kept = $("results").children.length ? " The results below are from the previous search." : "";
  showMessage(text + kept);
}

function render(result, before) {
  const last = state.last, request = last.request, t = result.timings;
  $("results-head").hidden = false;
  $("query-thumb").src = request.picture;
  $("query-thumb").hidden = !request.picture;
  $("query-label").textContent = request.label;
  const filtered = request.filterText ? `, filtered by ${request.filterText}` : "";
  $("summary").textContent =
    `${result.hits.length} results ${request.what} with ${result.model}${filtered} — ` +
    `decode ${t.decode_ms.toFixed(0)} ms, embed ${t.embed_ms.toFixed(0)} ms, k-NN ${t.knn_ms.toFixed(0)} ms` +
    (result.expand ? `, expansion ${t.expand_ms.toFixed(0)} ms` : "");
  const actions = { open: (hit) => Results.showDetail(hit, actions), similar: moreLike };
  $("results").replaceChildren(...result.hits.map((hit) => Results.card(hit, actions)));
  showMore(result.hits.length, last.k);
  if (before && result.hits.length > before) $("results").children[before].querySelector("button").focus();
  if (!result.hits.length) showMessage(emptyText(result), "info");
}

// "load more" while the server may have more: the last page was full and k is under its limit
function showMore(shown, k) {
  const max = state.settings.max_k;
  const full = shown >= k;
  $("load-more").hidden = !(full && k < max);
  $("limit-note").hidden = !(full && k >= max);
  $("limit-note").textContent = `${shown} results: the most this server gives for one search.`;
}

function emptyText(result) {
  const unknown = result.unknown_filter_fields || [];
  if (unknown.length) return `No document has the field ${unknown.join(", ")}, so the filters match nothing.`;
  return "No results (the store may be empty, or the filters match nothing).";
}

document.addEventListener("DOMContentLoaded", init);
