// Datasets: the list, a dataset's versions (parent, message), and a version: label distribution, the diff
// against its parent, and a gallery (thumbnails by screening score, heat-maps) or text samples.
import { api } from "../api.js";
import { authImg, enc, fmt, h, table, when } from "../ui.js";

const PAGE = 48;

async function listView(main) {
  const { datasets } = await api("/datasets");
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Datasets"),
    datasets.length ? table(datasets, [
      ["name", (d) => h("a", { href: `#/datasets/${enc(d.name)}` }, d.name)], ["modality", (d) => d.modality],
      ["latest", (d) => d.latest ? h("a", { href: `#/datasets/${enc(d.name)}/${d.latest}` }, `v${d.latest}`) : "–"],
      ["items", (d) => d.items], ["created", (d) => when(d.created_at)]], { id: "datasets" })
      : h("p", { class: "muted" }, "No datasets yet: modelfab data import …")));
}

async function versionsView(main, name) {
  const { versions } = await api(`/datasets/${enc(name)}/versions`);
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, h("a", { href: "#/datasets" }, "Datasets"), ` / ${name}`),
    table([...versions].reverse(), [
      ["version", (v) => h("a", { href: `#/datasets/${enc(name)}/${v.version}` }, v.ref)],
      ["parent", (v) => v.parent || "–"], ["items", (v) => v.items], ["message", (v) => v.message],
      ["created", (v) => when(v.created_at)]], { id: "versions" })));
}

function distributionView(dist, total) {
  const blocks = Object.entries(dist).map(([field, d]) => {
    if (d.kind === "numeric") {
      return h("div", {}, h("h4", {}, field), h("p", {}, `${d.count} values in [${fmt(d.min)}, ${fmt(d.max)}], ${d.missing} missing`));
    }
    const rows = Object.entries(d.counts).map(([value, n]) => ({ value, n }));
    if (d.missing) rows.push({ value: "(unlabelled)", n: d.missing });
    return h("div", {}, h("h4", {}, field), table(rows, [["value", (r) => r.value], ["items", (r) => r.n],
      ["", (r) => h("span", { class: "bar", style: `width:${Math.round((200 * r.n) / Math.max(total, 1))}px` })]],
    { class: "dist" }));
  });
  return blocks.length ? blocks : [h("p", { class: "muted" }, "no visible labels")];
}

function diffView(diff, parent) {
  if (!diff) return h("p", { class: "muted" }, "first version: no parent to compare with");
  const c = diff.counts;
  const list = (title, keys) => keys.length ? h("details", {}, h("summary", {}, `${title} (${keys.length} shown)`),
    h("ul", { class: "keys" }, keys.map((k) => h("li", {}, k)))) : null;
  return h("div", { id: "diff" },
    h("p", {}, `against ${parent}: `, h("b", {}, `+${c.added} added, −${c.removed} removed, ${c.replaced} replaced, ${c.relabelled} relabelled`)),
    list("added", diff.added), list("removed", diff.removed), list("replaced", diff.replaced),
    diff.relabelled.length ? h("details", {}, h("summary", {}, `relabelled (${diff.relabelled.length} shown)`),
      table(diff.relabelled, [["key", (r) => r.key], ["before", (r) => fmt(r.before)], ["after", (r) => fmt(r.after)]])) : null);
}

function labelsText(labels) {
  return Object.entries(labels).filter(([k]) => !k.startsWith("screen_")).map(([k, v]) => `${k}=${v}`).join(" ") || "unlabelled";
}

function galleryItem(name, version, it, heat) {
  const src = heat && it.heatmap ? `/datasets/${enc(name)}/versions/${version}/heatmaps/${it.rank}` : `/thumbs/${it.image}?size=192`;
  return h("figure", { class: "thumb" }, authImg(src, { alt: it.key, loading: "lazy" }),
    h("figcaption", {}, h("span", { class: "key" }, it.key), h("br"), labelsText(it.labels),
      it.score != null ? h("span", { class: "score" }, ` score ${fmt(it.score)}`) : null));
}

function textItem(it) {
  return h("li", {}, h("span", { class: "muted" }, `${it.key} [${labelsText(it.labels)}] `), it.text);
}

async function versionView(main, name, version) {
  const v = await api(`/datasets/${enc(name)}/versions/${version}`);
  const grid = h("div", { class: v.modality === "image" ? "gallery" : "" });
  const more = h("button", { type: "button" }, "More");
  const heat = h("input", { type: "checkbox", id: "heat" });
  let offset = 0;
  let items = [];
  const render = () => grid.replaceChildren(...(v.modality === "image"
    ? items.map((it) => galleryItem(name, version, it, heat.checked)) : [h("ol", { class: "texts" }, items.map(textItem))]));
  const load = async () => {
    const page = await api(`/datasets/${enc(name)}/versions/${version}/items?offset=${offset}&limit=${PAGE}`);
    items = items.concat(page.items);
    offset += page.items.length;
    more.hidden = offset >= page.total;
    order.textContent = `${page.total} items, ordered by ${page.order}`;
    render();
  };
  const order = h("p", { class: "muted" });
  more.addEventListener("click", load);
  heat.addEventListener("change", render);
  main.replaceChildren(
    h("section", { class: "card" },
      h("h2", {}, h("a", { href: "#/datasets" }, "Datasets"), " / ", h("a", { href: `#/datasets/${enc(name)}` }, name), ` / v${v.version}`),
      h("p", { id: "version-message" }, v.message || "(no message)"),
      h("p", { class: "muted" }, `${v.items} items · ${v.modality} · splits ${fmt(v.splits)} · parent `,
        v.parent ? h("a", { href: `#/datasets/${v.parent.replace("@", "/")}` }, v.parent) : "–", ` · ${when(v.created_at)}`),
      h("div", { class: "split" }, h("div", { class: "col" }, h("h3", {}, "Label distribution"), distributionView(v.distribution, v.items)),
        h("div", { class: "col" }, h("h3", {}, "Changes"), diffView(v.diff, v.parent)))),
    h("section", { class: "card" }, h("h3", {}, v.modality === "image" ? "Gallery" : "Samples"), order,
      v.scored && v.modality === "image" ? h("label", {}, heat, " show screening heat-maps (where stored)") : null,
      grid, more));
  await load();
}

export async function datasetsView(main, [name, version]) {
  if (!name) return listView(main);
  if (!version) return versionsView(main, name);
  return versionView(main, name, Number(version));
}
