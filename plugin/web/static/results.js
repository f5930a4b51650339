// The result cards and the detail view of one hit.
"use strict";

const Results = (() => {
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  const valueText = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : String(v));

  // nested metadata as dotted names, the way a filter names them
  function flat(metadata, prefix = "") {
    const out = [];
    for (const [key, value] of Object.entries(metadata || {})) {
      const name = prefix ? `${prefix}.${key}` : key;
      if (value && typeof value === "object" && !Array.isArray(value)) out.push(...flat(value, name));
      else out.push([name, Array.isArray(value) ? value.map(valueText).join(", ") : valueText(value)]);
    }
    return out;
  }

  function thumbnail(hit, alt) {
    const box = el("div", "thumb");
    if (!hit.thumbnail_url) { box.textContent = "no image"; return box; }
    const img = el("img");
    img.src = hit.thumbnail_url;
    img.alt = alt;
    img.loading = "lazy";
    img.onerror = () => { box.replaceChildren("image not available"); };
    box.append(img);
    return box;
  }

  function definitions(list, pairs) {
    list.replaceChildren();
    for (const [key, value] of pairs) list.append(el("dt", "", key), el("dd", "", value));
  }

  // one card: the image and title open the detail view; "more like this" searches with it
  function card(hit, actions) {
    const li = el("li", "hit");
    li.dataset.id = hit.id;
    const open = el("button", "open-detail");
    open.type = "button";
    open.setAttribute("aria-label", `details of result ${hit.rank}: ${hit.title}`);
    open.append(thumbnail(hit, `result ${hit.rank}: ${hit.title}`), el("span", "title", hit.title));
    open.querySelector(".title").title = hit.title;
    open.addEventListener("click", () => actions.open(hit));
    const head = el("p", "rank-score");
    head.append(el("span", "rank", `#${hit.rank}`), el("span", "score", hit.score.toFixed(3)));
    head.querySelector(".score").title = "cosine similarity (1 = identical)";
    const meta = el("dl");
    definitions(meta, flat(hit.metadata).slice(0, 3));
    const similar = el("button", "similar", "more like this");
    similar.type = "button";
    similar.setAttribute("aria-label", `more like ${hit.title}`);
    similar.addEventListener("click", () => actions.similar(hit));
    const info = el("div", "info");
    info.append(head, meta, similar);
    li.append(open, info);
    return li;
  }

  function showDetail(hit, actions) {
    const dialog = document.getElementById("detail");
    const image = document.getElementById("detail-image");
    image.replaceChildren();
    if (hit.image_url) {
      const img = el("img");
      img.src = hit.image_url;
      img.alt = hit.title;
      img.onerror = () => { image.replaceChildren("image not available"); };
      image.append(img);
    } else image.textContent = "no image (the server serves no image folders)";
    document.getElementById("detail-title").textContent = hit.title;
    definitions(document.getElementById("detail-fields"), [
      ["rank", `#${hit.rank}`], ["score", `${hit.score.toFixed(4)} (cosine similarity)`], ["id", hit.id],
      ["image", hit.image_ref || "none"],
    ]);
    const meta = flat(hit.metadata);
    definitions(document.getElementById("detail-metadata"), meta.length ? meta : [["", "none"]]);
    const link = document.getElementById("detail-open");
    link.hidden = !hit.image_url;
    if (hit.image_url) link.href = hit.image_url;
    document.getElementById("detail-similar").onclick = () => { dialog.close(); actions.similar(hit); };
    dialog.showModal();
  }

  // a small picture of the query: the cropped region of the query image, drawn on a canvas
  function cropPicture(image, box, side = 160) {
    const scale = Math.min(side / box.w, side / box.h, 1);
    const canvas = el("canvas");
    canvas.width = Math.max(1, Math.round(box.w * scale));
    canvas.height = Math.max(1, Math.round(box.h * scale));
    canvas.getContext("2d").drawImage(image, box.x, box.y, box.w, box.h, 0, 0, canvas.width, canvas.height);
    return canvas.toDataURL("image/jpeg", 0.85);
  }

  return { card, showDetail, cropPicture, thumbnail };
})();

window.Results = Results;
