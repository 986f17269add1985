// Prompt templates (language-model track): edit a YAML template of Jinja strings, paste or upload a CSV/JSONL
// table, pick a causal LM for token counts; the preview (first N chats + every problem) follows the typing
// (debounced); "Render dataset" writes the SFT dataset version through modelfab.llm.templates.
import { api } from "../api.js";
import { enc, flash, h, table } from "../ui.js";

const DEBOUNCE_MS = 400;
const EXAMPLE_TEMPLATE = `name: permits
system: You answer questions about city services.
user: How do I {{ action }} a {{ service }}?
assistant: "{{ answer }}"
`;
const EXAMPLE_TABLE = `action,service,answer
renew,parking permit,Bring the old permit and pay the fee.
apply for,building permit,Submit the plans online.
cancel,water contract,Call the hotline with your contract number.
`;
// What was typed stays while the page is open (switching tabs keeps the draft).
const draft = { template: EXAMPLE_TEMPLATE, table: EXAMPLE_TABLE, format: "", model: "", max: "", n: "3", name: "" };

function chatView(sample) {
  return h("figure", { class: "chat" },
    h("figcaption", {}, h("b", {}, sample.where), ` (${sample.key}) · ${sample.tokens} tokens`),
    sample.messages.map((m) => h("div", { class: `msg role-${m.role}` }, h("span", { class: "role" }, m.role), m.content)),
    h("details", {}, h("summary", {}, "as the model sees it"), h("pre", {}, sample.rendered)));
}

function problemsView(out) {
  if (!out.problems.length) return h("p", { class: "ok-text" }, `all ${out.rows} rows valid`);
  const counts = Object.entries(out.counts).map(([k, n]) => `${n} ${k}`).join(", ");
  const more = out.problems.length < Object.values(out.counts).reduce((a, b) => a + b, 0) ? " (first ones listed)" : "";
  return h("div", {},
    h("p", { class: "err" }, `${out.rows - out.valid} of ${out.rows} rows invalid: ${counts}${more}`),
    table(out.problems, [["row", (p) => p.where], ["kind", (p) => h("span", { class: `kind k-${p.kind}` }, p.kind)],
      ["problem", (p) => p.message]], { id: "tpl-problems-table", class: "problems" }));
}

export async function promptsView(main, _args, session) {
  const { models } = await api("/llm/models");
  const canRender = session.who.role !== "viewer";
  const template = h("textarea", { id: "tpl-template", class: "code", rows: 10, spellcheck: "false" });
  template.value = draft.template;
  const tableText = h("textarea", { id: "tpl-table", class: "code", rows: 8, spellcheck: "false",
    placeholder: "CSV with a header row, or JSONL (one object per line)" });
  tableText.value = draft.table;
  const file = h("input", { id: "tpl-file", type: "file", accept: ".csv,.jsonl,.ndjson,text/csv" });
  const format = h("select", { id: "tpl-format" }, [["", "auto"], ["csv", "CSV"], ["jsonl", "JSONL"]]
    .map(([v, t]) => h("option", { value: v, selected: draft.format === v }, t)));
  const model = h("select", { id: "tpl-model" }, h("option", { value: "" }, "none (estimate tokens)"),
    models.map((m) => h("option", { value: m.ref, selected: draft.model === m.ref }, `${m.ref} (${m.tier}, ${m.task})`)));
  const max = h("input", { id: "tpl-max", type: "number", min: 1, size: 6, value: draft.max, placeholder: "context" });
  const n = h("input", { id: "tpl-n", type: "number", min: 0, max: 50, size: 3, value: draft.n });
  const status = h("p", { id: "tpl-status", class: "muted" });
  const error = h("p", { id: "tpl-error", class: "inline-error", hidden: true });
  const problems = h("div", { id: "tpl-problems" });
  const samples = h("div", { id: "tpl-samples" });
  const name = h("input", { id: "tpl-name", size: 24, value: draft.name, placeholder: "sft-dataset-name" });
  const skip = h("input", { id: "tpl-skip", type: "checkbox" });
  const render = h("button", { id: "tpl-render", type: "submit", class: "primary", disabled: !canRender }, "Render dataset");
  const result = h("p", { id: "tpl-result" });

  function body() {
    Object.assign(draft, { template: template.value, table: tableText.value, format: format.value, model: model.value,
      max: max.value, n: n.value, name: name.value });
    return { template: template.value, table: tableText.value, format: format.value || null, model: model.value || null,
      max_tokens: max.value ? Number(max.value) : null, n: n.value === "" ? 3 : Number(n.value) };
  }
  function showFailure(err) {
    error.textContent = err.status ? `${err.message} (${err.status})` : String(err.message || err);
    error.hidden = false;
  }

  let timer = null;
  let inflight = null;
  let seq = 0;
  async function refresh() {
    const mine = ++seq;
    if (inflight) inflight.abort();
    inflight = new AbortController();
    status.textContent = model.value ? `checking with ${model.value}…` : "checking…";
    try {
      const out = await api("/llm/template/preview", { method: "POST", body: body(), signal: inflight.signal });
      if (mine !== seq) return;
      error.hidden = true;
      const limit = out.limit ? ` · limit ${out.limit} tokens (${out.limit_reason})` : "";
      const missing = out.missing_columns.length ? h("span", { class: "err" }, ` · not in the table: ${out.missing_columns.join(", ")}`) : "";
      status.replaceChildren(`${out.valid} of ${out.rows} rows valid (${out.format}) · tokens: ${out.token_count}${limit}`,
        h("br"), `variables: ${out.variables.join(", ") || "none"} · columns: ${out.columns.join(", ")}`, missing);
      problems.replaceChildren(problemsView(out));
      samples.replaceChildren(...(out.samples.length ? out.samples.map(chatView)
        : [h("p", { class: "muted" }, out.valid ? "no samples shown (N = 0)" : "no valid row to show")]));
    } catch (err) {
      if (err.name === "AbortError" || mine !== seq) return;
      status.textContent = "";
      problems.replaceChildren();
      samples.replaceChildren();
      showFailure(err);
    }
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, DEBOUNCE_MS);
  }
  for (const el of [template, tableText, max, n]) el.addEventListener("input", schedule);
  name.addEventListener("input", () => { draft.name = name.value; });
  for (const el of [format, model]) el.addEventListener("change", schedule);
  file.addEventListener("change", async () => {
    const f = file.files[0];
    if (!f) return;
    tableText.value = await f.text();
    const ext = f.name.split(".").pop().toLowerCase();
    format.value = ext === "csv" ? "csv" : ext === "jsonl" || ext === "ndjson" ? "jsonl" : "";
    schedule();
  });

  const form = h("form", { id: "tpl-render-form", class: "inline" },
    h("label", {}, "Dataset name ", name), " ", h("label", {}, skip, " skip invalid rows"), " ", render,
    canRender ? null : h("span", { class: "err" }, " Your role (viewer) can preview; annotator or above renders."));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    result.replaceChildren();
    if (!name.value.trim()) return showFailure({ message: "give the dataset a name" });
    if (!model.value) return showFailure({ message: "pick a model: its tokenizer and chat template count the tokens" });
    render.disabled = true;
    result.textContent = "rendering…";
    try {
      const out = await api("/llm/template/render", { method: "POST",
        body: { ...body(), name: name.value.trim(), skip_invalid: skip.checked } });
      error.hidden = true;
      const link = h("a", { id: "tpl-dataset", href: `#/datasets/${enc(out.name)}/${out.version}` }, out.dataset);
      result.replaceChildren(out.created ? "Created " : "Unchanged: same content as ", link,
        `: ${out.items} samples, ${out.skipped.length} skipped, ${out.tokens.total} tokens (max ${out.tokens.max}).`);
      flash(`${out.created ? "created" : "unchanged"} ${out.dataset}`);
    } catch (err) {
      result.replaceChildren();
      showFailure(err);
    } finally {
      render.disabled = false;
    }
  });

  main.replaceChildren(h("section", { class: "card prompts" },
    h("h2", {}, "Prompt templates"),
    h("p", { class: "muted" }, "Language-model track: SFT chats from a Jinja2 template (YAML keys ", h("code", {}, "system"),
      ", ", h("code", {}, "user"), ", ", h("code", {}, "assistant"), ") filled from each table row, checked like ",
      h("code", {}, "modelfab llm template preview"), ". The preview follows your typing."),
    h("div", { class: "split" },
      h("div", { class: "col" },
        h("label", { class: "block" }, "Template (YAML)", template),
        h("label", { class: "block" }, "Table ", format, " ", file, tableText),
        h("p", {}, h("label", {}, "Model ", model), " ", h("label", {}, "Max tokens ", max), " ",
          h("label", {}, "Show ", n, " chats"))),
      h("div", { class: "col wide" },
        h("h3", {}, "Preview"), status, error, problems, samples)),
    h("h3", {}, "Render dataset"), form, result));
  await refresh();
  return () => { clearTimeout(timer); if (inflight) inflight.abort(); };
}
