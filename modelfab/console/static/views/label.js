// Labeling: pick a dataset version, a label field and its classes; label the unlabelled items one at a time
// (keys 1-9 pick a class, d/o = defect/ok for a binary defect task, arrows move); Save makes a new version.
import { api } from "../api.js";
import { authImg, enc, flash, h, showError } from "../ui.js";

const OK = /^(ok|good|normal|pass|fine|no|none|0|false|negative)$/i;

/** For two classes where one reads as "ok": {d: defect class, o: ok class}. */
function defectKeys(classes) {
  if (classes.length !== 2) return null;
  const ok = classes.find((c) => OK.test(c));
  return ok ? { o: ok, d: classes.find((c) => c !== ok) } : null;
}

function suggestClasses(v, field) {
  const task = v.tasks?.[field];
  if (task?.classes?.length) return task.classes;
  const schema = v.label_schema?.[field]?.values;
  if (schema?.length) return schema;
  const dist = v.distribution?.[field];
  return dist?.kind === "categorical" ? Object.keys(dist.counts) : [];
}

function labeler(main, v, field, classes, queue) {
  const labels = new Map();
  let i = 0;
  const dk = defectKeys(classes);
  const progress = h("p", { id: "progress", class: "progress" });
  const stage = h("div", { id: "stage", class: "stage" });
  const keyLine = h("p", { id: "current-key", class: "muted" });
  const buttons = classes.map((c, n) => h("button", { type: "button", class: "cls", "data-class": c, onclick: () => pick(c) },
    `${n + 1} ${c}`, dk && dk.d === c ? " (d)" : "", dk && dk.o === c ? " (o)" : ""));
  const save = h("button", { id: "save", type: "button", class: "primary" }, "Save as new version");
  const result = h("p", { id: "save-result" });

  function show() {
    const it = queue[i];
    progress.textContent = `${labels.size} / ${queue.length} labelled`;
    keyLine.textContent = it ? `${i + 1} of ${queue.length}: ${it.key}` : "";
    for (const b of buttons) b.classList.toggle("chosen", it && labels.get(it.key) === b.dataset.class);
    if (!it) return stage.replaceChildren(h("p", {}, "Nothing left to label in this version."));
    stage.replaceChildren(it.image ? authImg(`/thumbs/${it.image}?size=384`, { alt: it.key, class: "big" })
      : h("blockquote", { class: "text-item" }, it.text));
  }
  function move(step) {
    i = Math.max(0, Math.min(queue.length - 1, i + step));
    show();
  }
  function pick(c) {
    if (!queue[i]) return;
    labels.set(queue[i].key, c);
    if (i < queue.length - 1) i += 1;
    show();
  }
  function onKey(ev) {
    if (ev.target.matches("input, textarea, select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (/^[1-9]$/.test(ev.key) && classes[Number(ev.key) - 1]) pick(classes[Number(ev.key) - 1]);
    else if (dk && (ev.key === "d" || ev.key === "o")) pick(dk[ev.key]);
    else if (ev.key === "ArrowRight") move(1);
    else if (ev.key === "ArrowLeft") move(-1);
    else return;
    ev.preventDefault();
  }
  save.addEventListener("click", async () => {
    if (!labels.size) return showError({ message: "nothing labelled yet" });
    try {
      const res = await api(`/datasets/${enc(v.dataset)}/versions/${v.version}/labels`,
        { method: "POST", body: { field, labels: Object.fromEntries(labels) } });
      const [name, ver] = res.dataset.split("@");
      result.replaceChildren(`Saved ${res.labels} labels as `, h("a", { href: `#/datasets/${enc(name)}/${ver}`, id: "new-version" }, res.dataset),
        ` (parent ${res.parent})`);
      flash(`saved ${res.dataset}`);
    } catch (err) { showError(err); }
  });
  document.addEventListener("keydown", onKey);
  main.replaceChildren(h("section", { class: "card labeler" },
    h("h2", {}, `Labeling ${v.ref}: field `, h("code", {}, field)),
    progress, keyLine, stage, h("div", { class: "classes" }, buttons),
    h("p", { class: "muted" }, `Keys: 1–${classes.length} pick a class`, dk ? `, d = ${dk.d}, o = ${dk.o}` : "",
      ", ← → move. Labels stay in this page until you save."),
    h("p", {}, save, " ", h("button", { type: "button", onclick: () => move(-1) }, "← Previous"), " ",
      h("button", { type: "button", onclick: () => move(1) }, "Next →")), result));
  show();
  return () => document.removeEventListener("keydown", onKey);
}

export async function labelView(main, [dsArg, verArg], session) {
  const { datasets } = await api("/datasets");
  const ds = h("select", { id: "lab-dataset" }, datasets.map((d) => h("option", { value: d.name, selected: d.name === dsArg }, d.name)));
  const ver = h("select", { id: "lab-version" });
  const field = h("input", { id: "lab-field", value: "label", size: 12 });
  const classes = h("input", { id: "lab-classes", size: 30, placeholder: "ok, ng" });
  const start = h("button", { id: "lab-start", type: "submit" }, "Start labeling");
  let asked = 0; // answers to an older selection are dropped (a slow first load must not win)
  const refreshClasses = async () => {
    if (!ver.value) return;
    const mine = ++asked;
    const detail = await api(`/datasets/${enc(ds.value)}/versions/${ver.value}`);
    if (mine !== asked) return;
    classes.value = suggestClasses(detail, field.value.trim()).join(", ");
  };
  const loadVersions = async () => {
    if (!ds.value) return;
    const wanted = ds.value;
    const { versions } = await api(`/datasets/${enc(wanted)}/versions`);
    if (ds.value !== wanted) return;
    ver.replaceChildren(...[...versions].reverse().map((x) => h("option", { value: x.version, selected: String(x.version) === verArg },
      `${x.ref} (${x.items} items) ${x.message.slice(0, 40)}`)));
    await refreshClasses();
  };
  ds.addEventListener("change", () => loadVersions().catch(showError));
  ver.addEventListener("change", () => refreshClasses().catch(showError));
  field.addEventListener("change", () => refreshClasses().catch(showError));
  let stop = null;
  const form = h("form", { class: "card", id: "lab-form" }, h("h2", {}, "Labeling"),
    session.who.role === "viewer" ? h("p", { class: "err" }, "Your role (viewer) cannot save labels; annotator or above can.") : null,
    h("p", {}, h("label", {}, "Dataset ", ds), " ", h("label", {}, "Version ", ver)),
    h("p", {}, h("label", {}, "Label field ", field), " ", h("label", {}, "Classes (comma-separated) ", classes)),
    start);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const list = classes.value.split(",").map((c) => c.trim()).filter(Boolean);
    if (!list.length) return showError({ message: "give at least one class" });
    if (list.length > 9) return showError({ message: "at most 9 classes (keys 1-9)" });
    const f = field.value.trim();
    // the version selected now (not whichever answer arrived last) is the one labels are saved to
    const detail = await api(`/datasets/${enc(ds.value)}/versions/${ver.value}`);
    const page = await api(`/datasets/${enc(ds.value)}/versions/${ver.value}/items?unlabeled=${enc(f)}&limit=1000`);
    stop = labeler(main, detail, f, list, page.items);
  });
  main.replaceChildren(form);
  await loadVersions();
  return () => stop && stop();
}
