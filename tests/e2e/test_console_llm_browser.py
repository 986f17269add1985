"""The language-model views of the web console in headless Chromium (the Debian `chromium` package, driven by
Playwright) against a live console over a real registry with a tiny chat LM: a template with an undefined
variable shows the problem inline, the fixed one previews rendered chats and renders an SFT dataset; three
prompts ranked with the keyboard are submitted as a new ranking version, and the agreement panel shows the
pair once a second annotator's rankings exist.

Screenshots go to $MODELFAB_SCREENSHOTS (e.g. docs/console) when it is set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

expect = pytest.importorskip("playwright.sync_api").expect  # CI installs it (dev extra)

from modelfab.llm.formats import chat_messages  # noqa: E402
from modelfab.store.datasets import get_version, version_items  # noqa: E402
from tests.console_fixtures import ROWS, TEMPLATE, Live, import_for, live_console, prepare_llm  # noqa: E402
from tests.e2e.browser import shot, sign_in  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    prepared = prepare_llm(tmp_path_factory.mktemp("console-llm-e2e"))
    with live_console(prepared) as server:
        yield server


def test_template_editor_previews_and_renders(page: Any, live: Live) -> None:
    sign_in(page, live, "annotator")
    page.click("#tabs a[data-tab=prompts]")
    expect(page.locator("main")).to_contain_text("Language-model track")
    expect(page.locator("#tpl-samples figure.chat").first).to_be_visible()  # the example previews at once
    page.fill("#tpl-table", ROWS)
    page.fill("#tpl-template", TEMPLATE.replace("{{ service }}?", "{{ service }} in {{ ciy }}?"))
    problems = page.locator("#tpl-problems")
    expect(problems).to_contain_text("6 of 6 rows invalid: 6 undefined")
    expect(problems.locator("tr").nth(1)).to_contain_text("row 1")
    expect(problems.locator("tr").nth(1)).to_contain_text("undefined variable 'ciy'")
    expect(page.locator("#tpl-status")).to_contain_text("not in the table: ciy")
    expect(page.locator("#tpl-samples")).to_contain_text("no valid row to show")
    page.fill("#tpl-template", "user: [unclosed\n")  # broken YAML: the API's 422, shown inline
    expect(page.locator("#tpl-error")).to_contain_text("template.yaml: invalid YAML/JSON at line 2")
    expect(page.locator("#error")).to_be_hidden()
    page.fill("#tpl-template", TEMPLATE)
    page.select_option("#tpl-model", "tinychat:1")
    expect(page.locator("#tpl-error")).to_be_hidden()
    expect(problems).to_contain_text("all 6 rows valid")
    expect(page.locator("#tpl-status")).to_contain_text("tokens: chat template")
    samples = page.locator("#tpl-samples figure.chat")
    expect(samples).to_have_count(3)
    expect(samples.first).to_contain_text("How do I renew a parking permit?")
    expect(samples.first.locator(".msg.role-assistant")).to_have_text("assistantBring the old permit and pay the fee.")
    page.fill("#tpl-name", "sft-console")
    shot(page, "prompts.png", full_page=True)
    page.click("#tpl-render")
    link = page.locator("#tpl-dataset")
    expect(link).to_have_text("sft-console@1")
    expect(page.locator("#tpl-result")).to_contain_text("Created sft-console@1: 6 samples, 0 skipped")
    link.click()
    expect(page.locator("#version-message")).to_contain_text("template permits over rows.csv")
    st = live.store()
    try:
        dv = get_version(st, "sft-console@1")
        rows = version_items(st, dv.id)
    finally:
        st.close()
    assert dv.dataset.modality == "chat" and len(rows) == 6
    assert chat_messages(rows[0].text)[1] == {"role": "user", "content": "How do I renew a parking permit?"}


def test_rank_three_prompts_with_the_keyboard(page: Any, live: Live) -> None:
    sign_in(page, live, "annotator")
    page.click("#tabs a[data-tab=ranking]")
    expect(page.locator("main h2").first).to_have_text("Ranking rk@2 as ann")
    progress = page.locator("#rk-progress")
    expect(progress).to_have_text("0 / 3 ranked")
    expect(page.locator("#rk-agreement")).to_contain_text("agreement needs rankings from at least two")
    expected: dict[str, list[str]] = {}
    for n in range(3):
        current = page.locator("#rk-current")
        expect(current).to_contain_text(f"prompt {n + 1} of 3")
        key = current.inner_text().split(": ", 1)[1].split(" ")[0]
        ids = page.locator("#rk-candidates button.cand").evaluate_all("bs => bs.map(b => b.dataset.id)")
        if n == 0:  # a wrong pick, undone
            page.keyboard.press("2")
            expect(page.locator("#rk-candidates button.picked")).to_have_count(1)
            page.keyboard.press("Backspace")
            expect(page.locator("#rk-candidates button.picked")).to_have_count(0)
        page.keyboard.press("3")
        page.keyboard.press("3")  # already picked: ignored (no ties)
        expect(page.locator("#rk-candidates button.picked .rank")).to_have_text("#1")
        page.keyboard.press("1")  # the last one falls into place and the next prompt comes
        expected[key] = [ids[2], ids[0], ids[1]]
    expect(progress).to_have_text("3 / 3 ranked (3 not submitted)")
    expect(page.locator("#rk-candidates button.picked .rank")).to_have_text(["#2", "#3", "#1"])
    page.click("#rk-submit")
    expect(page.locator("#rk-version")).to_have_text("rk@3")
    expect(progress).to_have_text("3 / 3 ranked")
    st = live.store()
    try:
        assert get_version(st, "rk@3").parent_id == get_version(st, "rk@2").id
        saved = {r.key: r.labels["rank:ann"] for r in version_items(st, "rk@3") if "rank:ann" in r.labels}
    finally:
        st.close()
    assert saved == expected

    assert import_for(live, "bob", "reverse") == "rk@4"  # a second annotator's rankings, through the library
    page.click("#rk-agree-refresh")
    row = page.locator("#rk-agreement-table tbody tr").first
    expect(row).to_contain_text("ann")
    expect(row).to_contain_text("bob")
    expect(row.locator("td").nth(2)).to_have_text("1")
    expect(page.locator("#rk-agreement")).to_contain_text("rankers: ann (human), bob (human)")
    shot(page, "ranking.png", full_page=True)
