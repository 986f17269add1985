"""The web console in headless Chromium (the Debian `chromium` package, driven by Playwright) against a live
console server over a real registry: sign in, open the lineage tree, label 10 images with keyboard
shortcuts and see the new version, approve a run waiting at its gate and watch it continue (live events),
and an annotator's Promote click showing the server's 403.

Screenshots go to $MODELFAB_SCREENSHOTS (e.g. docs/console) when it is set."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

expect = pytest.importorskip("playwright.sync_api").expect  # CI installs it (dev extra)

from modelfab.store.datasets import get_version, version_items  # noqa: E402
from tests.console_fixtures import Live, live_console, prepare, start_gate_run  # noqa: E402
from tests.e2e.browser import shot, sign_in  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    prepared = prepare(tmp_path_factory.mktemp("console-e2e"))
    with live_console(prepared) as server:
        yield server


def test_sign_in_and_lineage_tree(page: Any, live: Live) -> None:
    page.goto(f"{live.url}/console/")
    page.fill("#key", "mfk_wrong_key")
    page.click("#signin button[type=submit]")
    expect(page.locator("#signin .err")).to_contain_text("invalid API key")
    sign_in(page, live, "engineer", screenshot="login.png")
    tree = page.locator("#lineage")
    for name in ("lite0-64:1", "cells-l1:1", "cell-a:1"):
        expect(tree).to_contain_text(name)
    expect(page.locator("#lineage .tree .tree a.node")).to_contain_text("cell-a:1")  # L2 under L1 under L0
    page.click("a.node:has-text('cell-a:1')")
    card = page.locator("#model-card")
    expect(card).to_contain_text("val.auroc")
    expect(card).to_contain_text("cells-l1:1")
    expect(card.locator(".badge")).to_have_text("deployable")
    page.select_option("#cmp-a", label="cell-a:1 (L2)")
    page.select_option("#cmp-b", label="lite0-64:1 (L0)")
    page.click("#compare")
    expect(page.locator("#compare-out table")).to_contain_text("val.auroc")
    shot(page, "lineage.png")


def test_label_ten_images_with_the_keyboard(page: Any, live: Live) -> None:
    sign_in(page, live, "annotator")
    page.click("#tabs a[data-tab=label]")
    page.select_option("#lab-dataset", "pool")
    expect(page.locator("#lab-version")).to_contain_text("pool@1")
    expect(page.locator("#lab-classes")).to_have_value("ng, ok")
    page.click("#lab-start")
    progress = page.locator("#progress")
    expect(progress).to_have_text("0 / 12 labelled")
    expect(page.locator("#stage img")).to_have_attribute("src", re.compile("^blob:"))
    pressed: list[tuple[str, str]] = []  # (item key, expected class)
    for key, cls in [("d", "ng")] * 5 + [("1", "ng"), ("o", "ok"), ("o", "ok"), ("o", "ok"), ("2", "ok")]:
        item = page.locator("#current-key").inner_text().split(": ", 1)[1]
        page.keyboard.press(key)
        pressed.append((item, cls))
    expect(progress).to_have_text("10 / 12 labelled")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#current-key")).to_contain_text(pressed[-1][0])
    shot(page, "labeling.png")
    page.click("#save")
    expect(page.locator("#new-version")).to_have_text("pool@2")
    page.click("#new-version")
    expect(page.locator("#version-message")).to_contain_text("10 labels (label) from the console by annotator-test")
    expect(page.locator("#diff")).to_contain_text("10 relabelled")
    st = live.store()
    try:
        assert get_version(st, "pool@2").parent_id == get_version(st, "pool@1").id
        got = {r.key: r.labels.get("label") for r in version_items(st, "pool@2")}
    finally:
        st.close()
    assert {k: got[k] for k, _ in pressed} == dict(pressed)
    assert all(k.startswith(c) for k, c in pressed)  # the images really were of those classes


def test_approve_a_waiting_run_and_see_it_continue(page: Any, live: Live) -> None:
    run_id = start_gate_run(live.prepared)
    sign_in(page, live, "engineer")
    page.click("#tabs a[data-tab=runs]")
    page.click(f"#runs a:has-text('{run_id}')")
    expect(page.locator("#run-status")).to_have_text("waiting")
    graph = page.locator("#run-graph")
    expect(graph.locator("g[data-step=approve]")).to_have_class(re.compile("s-waiting"))
    expect(graph.locator("g[data-step=data]")).to_have_class(re.compile("s-succeeded"))
    expect(graph.locator("path.edge")).to_have_count(2)
    expect(page.locator("#logs")).to_contain_text("data")
    shot(page, "run.png")
    page.click("#approve-approve")
    expect(page.locator("#error.ok")).to_contain_text("approved approve by engineer-test")
    # no reload: the page follows the run through its event stream
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=180_000)
    expect(graph.locator("g[data-step=after]")).to_have_class(re.compile("s-succeeded"))
    expect(page.locator("#steps")).to_contain_text("approved by engineer-test")


def test_every_tab_renders(page: Any, live: Live) -> None:
    sign_in(page, live, "viewer")
    page.click("#tabs a[data-tab=datasets]")
    page.click("#datasets a:has-text('blobs')")
    page.click("#versions a:has-text('blobs@1')")
    expect(page.locator(".dist")).to_contain_text("ng")
    expect(page.locator(".gallery figure")).to_have_count(40)
    expect(page.locator(".gallery img").first).to_have_attribute("src", re.compile("^blob:"))
    page.goto(f"{live.url}/console/#/datasets/reviews/1")
    expect(page.locator("ol.texts li")).to_have_count(16)
    for tab, text in (("runs", "Pipeline runs"), ("reports", "Evaluation reports"), ("prompts", "Language-model track"),
                      ("ranking", "Language-model track")):
        page.click(f"#tabs a[data-tab={tab}]")
        expect(page.locator("main")).to_contain_text(text)
    page.click("#tabs a[data-tab=label]")
    expect(page.locator("#lab-form")).to_contain_text("Your role (viewer) cannot save labels")


def test_annotator_promote_shows_403(page: Any, live: Live) -> None:
    sign_in(page, live, "annotator")
    page.click("a.node:has-text('cell-a:1')")
    page.fill("#alias", "production")
    page.click("#promote")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("403 forbidden")
    expect(error).to_contain_text("needs engineer")
    st = live.store()
    try:
        with pytest.raises(Exception, match="unknown model"):
            st.get_model("cell-a@production")
    finally:
        st.close()

