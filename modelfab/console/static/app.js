// The console shell: sign-in, tabs and hash routing (#/tab/arg/...). Each view renders into <main> and may
// return a cleanup function (closing event streams, removing key handlers) that runs on the next route.
import { api, auth } from "./api.js";
import { h, showError } from "./ui.js";
import { datasetsView } from "./views/datasets.js";
import { labelView } from "./views/label.js";
import { modelsView } from "./views/models.js";
import { promptsView } from "./views/prompts.js";
import { rankingView } from "./views/ranking.js";
import { reportsView } from "./views/reports.js";
import { runsView } from "./views/runs.js";

const VIEWS = {
  models: modelsView,
  datasets: datasetsView,
  label: labelView,
  runs: runsView,
  reports: reportsView,
  prompts: promptsView,
  ranking: rankingView,
};

const main = document.getElementById("view");
let cleanup = null;
export const session = { who: null };

function signIn(message) {
  document.getElementById("tabs").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  const input = h("input", { id: "key", type: "password", autocomplete: "off", placeholder: "mfk_…", required: true });
  const form = h("form", { id: "signin", class: "card narrow" },
    h("h2", {}, "Sign in"),
    h("p", {}, "Use an API key of this registry; the server checks its role on every request."),
    h("label", {}, "API key ", input),
    h("button", { type: "submit" }, "Sign in"),
    h("p", { class: "muted" }, "Create one with ", h("code", {}, "modelfab keys create --role engineer --name you"), "."),
    message ? h("p", { class: "err" }, message) : null);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    auth.set(input.value.trim());
    await start();
  });
  main.replaceChildren(form);
  input.focus();
}

let routeSeq = 0;

// Each navigation renders into its own container: a slower view that finishes after the user moved on
// writes into a detached element instead of over the current view.
async function route() {
  const mine = ++routeSeq;
  if (cleanup) { cleanup(); cleanup = null; }
  showError(null);
  const [tab = "models", ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const view = VIEWS[tab] || VIEWS.models;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === tab);
  const slot = h("div", { class: "view", "data-view": tab });
  slot.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(slot);
  try {
    const done = (await view(slot, args, session)) || null;
    if (mine !== routeSeq) { if (done) done(); return; }
    cleanup = done;
  } catch (err) {
    if (mine !== routeSeq) return;
    if (err.status === 401) return signIn(err.message);
    main.replaceChildren();
    showError(err);
  }
}

async function start() {
  if (!auth.get()) return signIn();
  try {
    session.who = await api("/whoami");
  } catch (err) {
    auth.clear();
    return signIn(err.status ? err.message : String(err));
  }
  const w = session.who;
  document.getElementById("who").textContent = `${w.name || w.key_id} · ${w.role}`;
  document.getElementById("tabs").hidden = false;
  document.getElementById("signout").hidden = false;
  if (!location.hash) location.hash = "#/models";
  await route();
}

document.getElementById("signout").addEventListener("click", () => {
  auth.clear();
  if (cleanup) { cleanup(); cleanup = null; }
  signIn();
});
window.addEventListener("hashchange", () => { if (session.who && auth.get()) route(); });
start();
