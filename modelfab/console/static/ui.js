// Small DOM helpers shared by the views.
import { blobUrl } from "./api.js";

/** h("div", {class: "x", onclick: f}, child, ...) -> element. */
export function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid != null && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

export function showError(err) {
  const box = document.getElementById("error");
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.className = "";
  box.textContent = err.status ? `${err.status} ${err.code}: ${err.message}` : String(err.message || err);
  box.hidden = false;
}

/** A success message in the same banner (green). */
export function flash(message) {
  const box = document.getElementById("error");
  box.className = "ok";
  box.textContent = message;
  box.hidden = false;
}

/** A table from rows (objects) and columns [[header, row => cell], ...]. */
export function table(rows, columns, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(r)))))));
}

export function fmt(value) {
  if (value == null) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function badge(status) {
  return h("span", { class: `badge s-${String(status).split(" ")[0]}` }, status);
}

export function when(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "–";
}

/** An <img> whose authenticated source is fetched as a blob. */
export function authImg(path, attrs = {}) {
  const img = h("img", { alt: attrs.alt || "", ...attrs });
  blobUrl(path).then((url) => { img.src = url; }, () => img.classList.add("broken"));
  return img;
}

export const enc = encodeURIComponent;
