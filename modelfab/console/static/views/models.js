// Models: the lineage tree L0 -> L1 -> L2, a model's card, side-by-side comparison, promote to an alias.
import { api } from "../api.js";
import { badge, enc, flash, fmt, h, showError, table, when } from "../ui.js";

function flatten(tree, out = []) {
  for (const n of tree) { out.push(n); flatten(n.children, out); }
  return out;
}

function treeList(nodes, selected, id = null) {
  return h("ul", { class: "tree", id }, nodes.map((n) => h("li", {},
    h("a", { href: `#/models/${enc(n.id)}`, class: `node${n.id === selected ? " selected" : ""}`, "data-model": n.id },
      h("span", { class: `tier t-${n.tier}` }, n.tier), ` ${n.name}:${n.version}`,
      h("span", { class: "muted" }, ` ${n.task}`),
      n.aliases.map((a) => h("span", { class: "alias" }, a.split("@")[1]))),
    n.children.length ? treeList(n.children, selected) : null)));
}

function promoteForm(m) {
  const alias = h("input", { id: "alias", value: "production", size: 14, pattern: "[A-Za-z0-9._-]+" });
  const button = h("button", { id: "promote", type: "submit" }, "Promote");
  const form = h("form", { class: "inline" }, "Point ", h("code", {}, `${m.name}@`), alias, " at this model ", button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!confirm(`Point ${m.name}@${alias.value} at ${m.name}:${m.version} (${m.id})?`)) return;
    try {
      const res = await api(`/models/${enc(m.id)}/promote`, { method: "POST", body: { alias: alias.value } });
      flash(`${res.alias} -> ${res.model}`);
    } catch (err) { showError(err); }
  });
  return form;
}

function cardView(m) {
  const parity = m.parity;
  const metrics = Object.entries(m.metrics_flat).map(([k, v]) => ({ k, v }));
  return h("section", { class: "card", id: "model-card" },
    h("h2", {}, h("span", { class: `tier t-${m.tier}` }, m.tier), ` ${m.name}:${m.version}`),
    h("p", { class: "muted" }, `${m.id} · ${m.task} · created ${when(m.created_at)}`),
    table([m], [["parent", (r) => r.parent ? h("a", { href: `#/models/${enc(r.parent)}` }, r.parent_name) : "–"],
      ["params", (r) => fmt(r.params)], ["trainable", (r) => fmt(r.trainable_params)],
      ["aliases", (r) => r.aliases.join(", ") || "–"]]),
    h("p", {}, "Parity / deployable: ", badge(parity.deployable ? "deployable" : "not-deployable"), ` ${parity.reason}`),
    promoteForm(m),
    h("h3", {}, "Metrics"),
    metrics.length ? table(metrics, [["metric", (r) => r.k], ["value", (r) => fmt(r.v)]], { class: "metrics" })
      : h("p", { class: "muted" }, "no metrics recorded"),
    h("h3", {}, "Latency profiles"),
    m.profiles.length ? table(m.profiles, [["device", (r) => r.device], ["runtime", (r) => r.runtime],
      ["batch", (r) => r.batch], ["threads", (r) => r.threads], ["p50 ms", (r) => fmt(r.p50_ms)],
      ["p95 ms", (r) => fmt(r.p95_ms)], ["items/s", (r) => fmt(r.throughput)], ["MB", (r) => fmt(r.size_mb)]])
      : h("p", { class: "muted" }, "no profiles (modelfab profile MODEL)"),
    h("details", {}, h("summary", {}, "Config and architecture"),
      h("pre", {}, JSON.stringify({ config: m.config, architecture: m.architecture }, null, 1))),
    h("details", {}, h("summary", {}, "Model card"), h("pre", {}, JSON.stringify(m.card, null, 1))));
}

function compareForm(all, first) {
  const options = (sel) => all.map((n) => h("option", { value: n.id, selected: n.id === sel }, `${n.name}:${n.version} (${n.tier})`));
  const a = h("select", { id: "cmp-a" }, options(first));
  const b = h("select", { id: "cmp-b" }, options(all.find((n) => n.id !== first)?.id));
  const out = h("div", { id: "compare-out" });
  const form = h("form", { class: "inline" }, a, " vs ", b, " ", h("button", { type: "submit", id: "compare" }, "Compare"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const res = await api(`/compare?a=${enc(a.value)}&b=${enc(b.value)}`);
      out.replaceChildren(table(res.rows, [["", (r) => r.metric], [res.a, (r) => fmt(r.a)], [res.b, (r) => fmt(r.b)]],
        { class: "metrics" }));
    } catch (err) { showError(err); }
  });
  return h("section", { class: "card" }, h("h3", {}, "Compare two models"), form, out);
}

export async function modelsView(main, [selected]) {
  const { tree } = await api("/models");
  const all = flatten(tree);
  const left = h("div", { class: "col" },
    h("section", { class: "card" }, h("h2", {}, "Lineage"),
      tree.length ? treeList(tree, selected, "lineage") : h("p", { class: "muted" }, "No models yet: modelfab models add-foundation …")),
    all.length > 1 ? compareForm(all, selected || all[0].id) : null);
  const right = h("div", { class: "col wide" });
  main.replaceChildren(h("div", { class: "split" }, left, right));
  if (selected) right.replaceChildren(cardView(await api(`/models/${enc(selected)}`)));
  else right.replaceChildren(h("p", { class: "muted" }, "Select a model to see its card."));
}
