// The filter box: the model's metadata fields (GET /api/fields), an operator and a value per
// condition; conditions become the JSON object /api/search takes:
// {field: value}, {field: [values]} or {field: {gte: a, lt: b}}.
"use strict";

class Filters {
  constructor(report) {
    this.kinds = {}; // field -> ["boolean" | "number" | "text"]
    this.conditions = []; // {field, op, value} with value already typed
    this.report = report; // a problem with the typed condition, or "" when it was added
    this.field = document.getElementById("filter-field");
    this.op = document.getElementById("filter-op");
    this.value = document.getElementById("filter-value");
    this.list = document.getElementById("filter-list");
    const submit = () => this.report(this.addFromForm() || "");
    document.getElementById("filter-add").addEventListener("click", submit);
    this.value.addEventListener("keydown", (e) => { if (e.key === "Enter") submit(); });
  }

  async load(model) {
    this.field.replaceChildren();
    try {
      const response = await fetch(`/api/fields?model=${encodeURIComponent(model)}`);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const answer = await response.json();
      this.kinds = Object.fromEntries(answer.fields.map((f) => [f.name, f.kinds]));
      for (const f of answer.fields) this.field.append(new Option(`${f.name} (${f.kinds.join(" or ")})`, f.name));
      this.field.disabled = !answer.fields.length;
      if (!answer.fields.length) this.field.append(new Option("no metadata fields", ""));
    } catch (err) {
      this.kinds = {};
      this.field.append(new Option("fields unavailable", ""));
      this.field.disabled = true;
    }
  }

  // a typed value for the field: numbers and booleans where the field holds them, else text
  typed(field, text) {
    const kinds = this.kinds[field] || ["text"];
    const t = text.trim();
    if (kinds.includes("number") && t !== "" && Number.isFinite(Number(t))) return Number(t);
    if (kinds.includes("boolean") && /^(true|false)$/i.test(t)) return t.toLowerCase() === "true";
    return t;
  }

  addFromForm() {
    const field = this.field.value, op = this.op.value, text = this.value.value;
    if (!field) return "Choose a field to filter on.";
    if (!text.trim()) return "Type a value for the filter.";
    const value = op === "in" ? text.split(",").filter((v) => v.trim()).map((v) => this.typed(field, v))
      : this.typed(field, text);
    if (!["eq", "in"].includes(op) && typeof value === "boolean") return "A boolean field takes 'is', not a range.";
    this.add({ field, op, value });
    this.value.value = "";
    return null;
  }

  // a range operator joins the field's other range bounds; anything else replaces them
  add(condition) {
    const isRange = (c) => !["eq", "in"].includes(c.op);
    this.conditions = this.conditions.filter((c) => c.field !== condition.field ||
      (isRange(condition) && isRange(c) && c.op !== condition.op));
    this.conditions.push(condition);
    this.render();
  }

  remove(condition) {
    this.conditions = this.conditions.filter((c) => c !== condition);
    this.render();
  }

  // the filters as /api/search takes them, or null
  toJson() {
    const out = {};
    for (const c of this.conditions) {
      if (c.op === "eq" || c.op === "in") out[c.field] = c.value;
      else out[c.field] = { ...(out[c.field] || {}), [c.op]: c.value };
    }
    return Object.keys(out).length ? JSON.stringify(out) : null;
  }

  describe() {
    return this.conditions.map(Filters.text).join(", ");
  }

  static text(c) {
    const sign = { eq: "is", in: "is one of", gte: "≥", gt: ">", lte: "≤", lt: "<" }[c.op];
    const value = Array.isArray(c.value) ? c.value.map(String).join(", ") : JSON.stringify(c.value);
    return `${c.field} ${sign} ${value}`;
  }

  render() {
    this.list.replaceChildren();
    for (const c of this.conditions) {
      const li = document.createElement("li");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `remove the filter ${Filters.text(c)}`);
      remove.addEventListener("click", () => this.remove(c));
      li.append(Filters.text(c), " ", remove);
      this.list.append(li);
    }
  }
}

window.Filters = Filters;
