// Ranking (language-model track): the signed-in key's assigned prompts one at a time; click the candidates from
// best to worst (or keys 1..N pick the next best, Backspace undoes, arrows move). The last candidate falls into
// place, so every ranking is a full order without ties. Submit saves them through modelfab.llm.ranking's
// import (a new version); the agreement panel shows Kendall tau and pairwise agreement per annotator pair.
import { api } from "../api.js";
import { enc, flash, fmt, h, showError, table } from "../ui.js";

function promptView(messages) {
  return h("div", { id: "rk-prompt", class: "prompt" },
    messages.map((m) => h("div", { class: `msg role-${m.role}` }, h("span", { class: "role" }, m.role), m.content)));
}

function agreementTable(info) {
  const rows = [...info.pairs, { a: "mean", b: "", items: "", kendall_tau: info.mean.kendall_tau, pairwise: info.mean.pairwise }];
  return h("div", {},
    table(rows, [["annotator a", (p) => p.a], ["annotator b", (p) => p.b], ["items", (p) => p.items],
      ["Kendall tau", (p) => fmt(p.kendall_tau)], ["pairwise agreement", (p) => fmt(p.pairwise)]],
    { id: "rk-agreement-table", class: "metrics" }),
    h("p", { class: "muted" }, `${info.dataset} · rankers: `,
      Object.entries(info.rankers).map(([r, kind]) => `${r} (${kind})`).join(", "),
      " · tau 1 = same order, −1 = reversed; pairwise = share of candidate pairs ordered alike"));
}

function ranker(stage, progress, data, state) {
  const items = data.items;
  const picks = state.picks;
  for (const it of items) {
    if (!picks.has(it.key) && it.ranked) picks.set(it.key, it.ranked.slice(0, it.ranked.length - 1));
  }
  const chosen = (it) => picks.get(it.key) || [];
  const complete = (it) => chosen(it).length >= it.candidates.length - 1;
  const full = (it) => [...chosen(it), ...it.candidates.map((c) => c.id).filter((id) => !chosen(it).includes(id))];
  const changed = (it) => complete(it) && (!it.ranked || full(it).join() !== it.ranked.join());

  function show() {
    const done = items.filter(complete).length;
    const unsaved = items.filter(changed).length;
    progress.textContent = `${done} / ${items.length} ranked` + (unsaved ? ` (${unsaved} not submitted)` : "");
    const it = items[state.i];
    if (!it) return stage.replaceChildren(h("p", {}, "No prompts to rank."));
    const order = complete(it) ? full(it) : chosen(it);
    const cands = it.candidates.map((c, n) => {
      const pos = order.indexOf(c.id);
      return h("li", {}, h("button", { type: "button", class: `cand${pos >= 0 ? " picked" : ""}`, "data-id": c.id,
        onclick: () => pick(c.id) },
      h("kbd", {}, n + 1), h("span", { class: "text" }, c.text || h("i", { class: "muted" }, "(empty)")),
      pos >= 0 ? h("span", { class: "rank" }, `#${pos + 1}`) : null));
    });
    stage.replaceChildren(
      h("p", { id: "rk-current", class: "muted" }, `prompt ${state.i + 1} of ${items.length}: ${it.key}`,
        complete(it) ? (changed(it) ? " · ranked, not submitted" : " · ranked") : ""),
      promptView(it.prompt), h("ol", { id: "rk-candidates", class: "candidates" }, cands));
  }
  function pick(id) {
    const it = items[state.i];
    if (!it || complete(it) || chosen(it).includes(id)) return;
    picks.set(it.key, [...chosen(it), id]);
    if (complete(it) && state.i < items.length - 1) state.i += 1;
    show();
  }
  function undo() {
    let it = items[state.i];
    if (it && !chosen(it).length && state.i > 0) it = items[--state.i];
    if (it && chosen(it).length) picks.set(it.key, chosen(it).slice(0, -1));
    show();
  }
  function move(step) {
    state.i = Math.max(0, Math.min(items.length - 1, state.i + step));
    show();
  }
  function onKey(ev) {
    if (ev.target.matches("input, textarea, select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const it = items[state.i];
    if (/^[1-9]$/.test(ev.key) && it && it.candidates[Number(ev.key) - 1]) pick(it.candidates[Number(ev.key) - 1].id);
    else if (ev.key === "Backspace") undo();
    else if (ev.key === "ArrowRight") move(1);
    else if (ev.key === "ArrowLeft") move(-1);
    else return;
    ev.preventDefault();
  }
  show();
  return { move, undo, onKey, pending: () => Object.fromEntries(items.filter(changed).map((it) => [it.key, full(it)])) };
}

export async function rankingView(main, [dsArg], session) {
  const { datasets } = await api("/llm/ranking/datasets");
  const intro = h("p", { class: "muted" }, "Language-model track: rank the candidate responses of each prompt, best first ",
    "(", h("code", {}, "modelfab llm rank"), "); rankings are saved as labels ", h("code", {}, "rank:<your key's name>"),
    " in a new dataset version.");
  if (!datasets.length) {
    main.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Ranking"), intro,
      h("p", {}, "No ranking datasets yet: ", h("code", {}, "modelfab llm rank candidates PROMPTS --model M --name NAME"), ".")));
    return null;
  }
  const name = datasets.some((d) => d.name === dsArg) ? dsArg : datasets[0].name;
  const select = h("select", { id: "rk-dataset" }, datasets.map((d) => h("option", { value: d.name, selected: d.name === name },
    `${d.name} (${d.items} prompts)`)));
  select.addEventListener("change", () => { location.hash = `#/ranking/${enc(select.value)}`; });
  const noAuth = session.who.auth === false;
  const who = h("input", { id: "rk-annotator", size: 12, value: "console" });
  const progress = h("p", { id: "rk-progress", class: "progress" });
  const stage = h("div", { id: "rk-stage", class: "stage" });
  const submit = h("button", { id: "rk-submit", type: "button", class: "primary", disabled: session.who.role === "viewer" },
    "Submit rankings");
  const result = h("p", { id: "rk-result" });
  const agreement = h("div", { id: "rk-agreement" });
  const synthetic = h("input", { id: "rk-synthetic", type: "checkbox" });
  const refresh = h("button", { id: "rk-agree-refresh", type: "button" }, "Refresh");
  const heading = h("h2", {}, "Ranking");
  const state = { picks: new Map(), i: 0 };
  let rk = null;
  let data = null;

  const query = () => (noAuth ? `?annotator=${enc(who.value.trim())}` : "");
  async function loadAgreement() {
    try {
      const info = await api(`/llm/ranking/${enc(name)}/agreement?include_synthetic=${synthetic.checked}`);
      agreement.replaceChildren(agreementTable(info));
    } catch (err) {
      if (err.status !== 422) throw err;
      agreement.replaceChildren(h("p", { class: "muted" }, err.message));
    }
  }
  async function loadTasks() {
    try {
      data = await api(`/llm/ranking/${enc(name)}/tasks${query()}`);
    } catch (err) {
      if (!err.status || err.status >= 500 || err.status === 401) throw err;
      data = null;
      rk = null;
      progress.textContent = "";
      stage.replaceChildren(h("p", { class: "inline-error" }, err.message));
      return;
    }
    heading.textContent = `Ranking ${data.dataset} as ${data.annotator}`;
    if (state.i >= data.items.length) state.i = 0;
    if (!state.started) {  // start at the first prompt not ranked yet
      const first = data.items.findIndex((t) => !t.ranked);
      state.i = first >= 0 ? first : 0;
      state.started = true;
    }
    rk = ranker(stage, progress, data, state);
  }
  submit.addEventListener("click", async () => {
    const rankings = rk ? rk.pending() : {};
    if (!Object.keys(rankings).length) return showError({ message: "nothing new to submit: rank a prompt first" });
    submit.disabled = true;
    try {
      const out = await api(`/llm/ranking/${enc(name)}/rankings`, { method: "POST",
        body: { rankings, annotator: noAuth ? who.value.trim() : null } });
      const [ds, ver] = out.dataset.split("@");
      result.replaceChildren(`Saved ${out.rankings} rankings (${out.field}) as `,
        h("a", { id: "rk-version", href: `#/datasets/${enc(ds)}/${ver}` }, out.dataset), ` (parent ${out.parent}).`);
      flash(`saved ${out.dataset}`);
      state.picks.clear();
      await loadTasks();
      await loadAgreement();
    } catch (err) {
      showError(err);
    } finally {
      submit.disabled = session.who.role === "viewer";
    }
  });
  synthetic.addEventListener("change", () => loadAgreement().catch(showError));
  refresh.addEventListener("click", () => loadAgreement().catch(showError));
  who.addEventListener("change", () => { state.picks.clear(); state.started = false; loadTasks().catch(showError); });
  const onKey = (ev) => rk && rk.onKey(ev);
  document.addEventListener("keydown", onKey);

  main.replaceChildren(
    h("section", { class: "card ranker" }, heading, intro,
      h("p", {}, h("label", {}, "Dataset ", select), noAuth ? h("label", {}, " Annotator ", who) : null),
      session.who.role === "viewer" ? h("p", { class: "err" }, "Your role (viewer) cannot submit rankings; annotator or above can.") : null,
      progress, stage,
      h("p", { class: "muted" }, "Click the candidates from best to worst, or press 1–9 to pick the next best; ",
        "the last one falls into place. Backspace undoes, ← → move between prompts. Rankings stay in this page until you submit."),
      h("p", {}, submit, " ", h("button", { type: "button", onclick: () => rk && rk.move(-1) }, "← Previous"), " ",
        h("button", { type: "button", onclick: () => rk && rk.move(1) }, "Next →"), " ",
        h("button", { type: "button", onclick: () => rk && rk.undo() }, "Undo")),
      result),
    h("section", { class: "card" }, h("h3", {}, "Agreement"),
      h("p", {}, h("label", {}, synthetic, " include synthetic (rule) rankers"), " ", refresh), agreement));
  await loadTasks();
  await loadAgreement();
  return () => document.removeEventListener("keydown", onKey);
}
