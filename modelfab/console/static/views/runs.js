// Pipeline runs: the list, and a run's live step graph (server-sent events), step table, approve/reject at
// an approve gate, resume and cancel, and the step logs.
import { api, streamEvents } from "../api.js";
import { badge, enc, flash, fmt, h, showError, table, when } from "../ui.js";

const SVG = "http://www.w3.org/2000/svg";
const BOX = { w: 150, h: 40, dx: 190, dy: 58, pad: 10 };

function svg(tag, attrs = {}, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...kids);
  return el;
}

/** Steps in columns by depth (longest chain of needs), edges from each need to its step. */
function graph(steps) {
  const byName = Object.fromEntries(steps.map((s) => [s.name, s]));
  const depth = {};
  const d = (n, seen = new Set()) => {
    if (depth[n] != null) return depth[n];
    if (seen.has(n)) return 0;
    seen.add(n);
    const needs = (byName[n]?.needs || []).filter((x) => byName[x]);
    return (depth[n] = needs.length ? 1 + Math.max(...needs.map((x) => d(x, seen))) : 0);
  };
  const rows = {};
  const pos = {};
  for (const s of steps) {
    const c = d(s.name);
    rows[c] = (rows[c] || 0) + 1;
    pos[s.name] = { x: BOX.pad + c * BOX.dx, y: BOX.pad + (rows[c] - 1) * BOX.dy };
  }
  const width = BOX.pad * 2 + (Math.max(0, ...Object.keys(rows).map(Number)) * BOX.dx) + BOX.w;
  const height = BOX.pad * 2 + (Math.max(1, ...Object.values(rows)) - 1) * BOX.dy + BOX.h;
  const root = svg("svg", { width, height, class: "graph", id: "run-graph", viewBox: `0 0 ${width} ${height}` });
  for (const s of steps) {
    for (const n of s.needs.filter((x) => pos[x])) {
      const a = pos[n];
      const b = pos[s.name];
      root.append(svg("path", { class: "edge", d: `M${a.x + BOX.w},${a.y + BOX.h / 2} C${a.x + BOX.w + 25},${a.y + BOX.h / 2} ${b.x - 25},${b.y + BOX.h / 2} ${b.x},${b.y + BOX.h / 2}` }));
    }
  }
  for (const s of steps) {
    const p = pos[s.name];
    const t1 = svg("text", { x: p.x + 8, y: p.y + 16, class: "name" });
    t1.textContent = `${s.name} (${s.uses})`;
    const t2 = svg("text", { x: p.x + 8, y: p.y + 32, class: "state" });
    t2.textContent = s.status + (s.seconds != null ? ` · ${s.seconds.toFixed(1)} s` : "");
    root.append(svg("g", { class: `step s-${s.status}`, "data-step": s.name },
      svg("rect", { x: p.x, y: p.y, width: BOX.w, height: BOX.h, rx: 6 }), t1, t2));
  }
  return root;
}

async function listView(main, all) {
  const { runs } = await api(all ? "/runs" : "/runs?kind=pipeline");
  const toggle = h("a", { href: all ? "#/runs" : "#/runs/~all" }, all ? "pipeline runs only" : "show all runs");
  main.replaceChildren(h("section", { class: "card" }, h("h2", {}, all ? "Runs" : "Pipeline runs"), h("p", {}, toggle),
    runs.length ? table(runs, [
      ["run", (r) => h("a", { href: `#/runs/${enc(r.id)}` }, r.id)], ["kind", (r) => r.kind],
      ["pipeline", (r) => r.pipeline || "–"], ["status", (r) => badge(r.status)], ["started", (r) => when(r.started_at)],
      ["seconds", (r) => fmt(r.seconds)], ["error", (r) => (r.error || "").slice(0, 120)]], { id: "runs" })
      : h("p", { class: "muted" }, "No runs yet.")));
}

function decide(runId, step, approved) {
  return async () => {
    const comment = approved ? "" : (prompt(`Why reject ${step}?`) ?? null);
    if (comment === null || !confirm(`${approved ? "Approve" : "Reject"} step ${step} of ${runId} and continue the run?`)) return;
    try {
      const res = await api(`/runs/${enc(runId)}/approve`, { method: "POST", body: { step, approved, comment } });
      flash(`${approved ? "approved" : "rejected"} ${res.step} by ${res.by}; the run continues (driver pid ${res.resumed_pid})`);
    } catch (err) { showError(err); }
  };
}

function action(label, id, path, question) {
  return h("button", { type: "button", id, onclick: async () => {
    if (!confirm(question)) return;
    try {
      const res = await api(path, { method: "POST" });
      flash(`${label}: ${JSON.stringify(res)}`);
    } catch (err) { showError(err); }
  } }, label);
}

function stepsTable(runId, steps) {
  return table(steps, [
    ["step", (s) => s.name], ["uses", (s) => s.uses], ["status", (s) => badge(s.status)], ["seconds", (s) => fmt(s.seconds)],
    ["needs", (s) => s.needs.join(", ") || "–"],
    ["outputs / reason", (s) => (["failed", "waiting", "skipped"].includes(s.status) && s.error) ? s.error
      : Object.entries(s.outputs || {}).filter(([, v]) => typeof v !== "object").map(([k, v]) => `${k}=${v}`).join(", ")],
    ["decision", (s) => s.approval ? `${s.approval.approved ? "approved" : "rejected"} by ${s.approval.by} at ${s.approval.at}`
      : (s.uses === "approve" && s.status === "waiting") ? h("span", {},
        h("button", { type: "button", class: "primary", id: `approve-${s.name}`, onclick: decide(runId, s.name, true) }, "Approve"), " ",
        h("button", { type: "button", id: `reject-${s.name}`, onclick: decide(runId, s.name, false) }, "Reject")) : "–"],
  ], { id: "steps" });
}

async function logsView(box, runId) {
  const { logs } = await api(`/runs/${enc(runId)}/logs`);
  box.replaceChildren(...Object.entries(logs).map(([step, text]) =>
    h("details", {}, h("summary", {}, step), h("pre", { class: "log" }, text || "(no log)"))));
}

async function runView(main, runId) {
  const run = await api(`/runs/${enc(runId)}`);
  const status = h("span", { id: "run-status" });
  const graphBox = h("div", { class: "graph-box" });
  const stepsBox = h("div");
  const logsBox = h("div", { id: "logs" });
  const update = (state) => {
    status.replaceChildren(badge(state.status));
    graphBox.replaceChildren(state.steps.length ? graph(state.steps) : h("p", { class: "muted" }, "not a pipeline run"));
    stepsBox.replaceChildren(state.steps.length ? stepsTable(runId, state.steps) : "");
  };
  const pipeline = run.kind === "pipeline";
  main.replaceChildren(h("section", { class: "card" },
    h("h2", {}, h("a", { href: "#/runs" }, "Runs"), ` / ${run.id} `, status),
    h("p", { class: "muted" }, `${run.kind}${run.pipeline ? ` ${run.pipeline}` : ""} · started ${when(run.started_at)}`,
      h("span", { id: "live" }, pipeline ? " · live" : "")),
    pipeline ? h("p", {}, action("Resume", "resume", `/runs/${enc(runId)}/resume`, `Resume run ${runId}?`), " ",
      action("Cancel", "cancel", `/runs/${enc(runId)}/cancel`, `Cancel run ${runId}?`), " ",
      h("button", { type: "button", id: "rerun", onclick: async () => {
        if (!confirm(`Start a new run of ${run.pipeline || "this pipeline"} (unchanged steps come from the cache)?`)) return;
        try {
          const res = await api(`/runs/${enc(runId)}/rerun`, { method: "POST" });
          location.hash = `#/runs/${enc(res.run)}`;
        } catch (err) { showError(err); }
      } }, "Re-run"), " ",
      h("button", { type: "button", onclick: () => logsView(logsBox, runId).catch(showError) }, "Refresh logs")) : null,
    graphBox, stepsBox,
    pipeline ? h("h3", {}, "Logs") : null, logsBox,
    h("details", {}, h("summary", {}, "Config, inputs, outputs, metrics"),
      h("pre", {}, JSON.stringify({ config: run.config, inputs: run.inputs, outputs: run.outputs, metrics: run.metrics }, null, 1))),
    run.spec ? h("details", {}, h("summary", {}, "Pipeline spec"), h("pre", {}, run.spec)) : null));
  update(run);
  if (!pipeline) return null;
  await logsView(logsBox, runId);
  const ctrl = new AbortController();
  streamEvents(`/runs/${enc(runId)}/events`, (event, state) => {
    if (event === "state") {
      const changed = JSON.stringify(state.steps.map((s) => s.status)) !== JSON.stringify(run.steps.map((s) => s.status));
      run.steps = state.steps;
      update(state);
      if (changed) logsView(logsBox, runId).catch(() => {});
    }
  }, ctrl.signal).catch((err) => { if (err.name !== "AbortError") showError(err); });
  return () => ctrl.abort();
}

export async function runsView(main, [runId]) {
  if (!runId || runId === "~all") return listView(main, runId === "~all");
  return runView(main, runId);
}
