// Reports: evaluation reports (self-contained HTML, shown sandboxed, and their PNG plots) and benchmark charts.
import { api, text } from "../api.js";
import { authImg, h, showError, when } from "../ui.js";

function openReport(box, ev) {
  return async () => {
    try {
      const html = await text(`/files/${ev.html}`);
      box.replaceChildren(h("h3", {}, `${ev.model} · ${ev.name}`),
        h("iframe", { sandbox: "", srcdoc: html, class: "report", title: `report ${ev.name}` }),
        h("div", { class: "gallery" }, ev.plots.map((p) => h("figure", { class: "thumb" }, authImg(`/files/${p}`, { alt: p }),
          h("figcaption", {}, p.split("/").pop())))));
    } catch (err) { showError(err); }
  };
}

export async function reportsView(main) {
  const { evaluations, bench } = await api("/reports");
  const viewer = h("div", { id: "report-view" });
  main.replaceChildren(
    h("section", { class: "card" }, h("h2", {}, "Evaluation reports"),
      evaluations.length ? h("ul", { id: "evaluations" }, evaluations.map((ev) => h("li", {},
        h("button", { type: "button", class: "link", onclick: openReport(viewer, ev) }, `${ev.model} · ${ev.name}`),
        h("span", { class: "muted" }, ` ${when(new Date(ev.modified * 1000).toISOString())}`))))
        : h("p", { class: "muted" }, "No evaluation reports yet (modelfab evaluate MODEL --data …)."),
      viewer),
    h("section", { class: "card" }, h("h2", {}, "Benchmarks"),
      bench.length ? h("div", { class: "gallery wide", id: "bench" }, bench.map((b) => h("figure", { class: "chart" },
        authImg(`/files/${b.png}`, { alt: b.name }), h("figcaption", {}, b.name))))
        : h("p", { class: "muted" }, "No benchmark charts (bench/results of a checkout).")));
}
