// Placeholder tabs for the language-model track (issue 12), built separately.
import { h } from "../ui.js";

export function lmPlaceholder(title, what) {
  return async (main) => {
    main.replaceChildren(h("section", { class: "card" }, h("h2", {}, title),
      h("p", {}, `Language-model track: ${what}. This view is not built yet; use the CLI (modelfab llm …).`)));
  };
}
