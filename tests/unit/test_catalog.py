from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelfab.core.catalog import Catalog, contract_params
from modelfab.core.errors import ConflictError, NotFoundError


def test_register_and_get() -> None:
    cat: Catalog[object] = Catalog("widget")

    @cat.register("a", summary="first")
    def build_a() -> str:
        return "A"

    assert cat.get("a") is build_a
    assert cat.names() == ["a"]
    assert "a" in cat and "b" not in cat
    assert cat.entry("a").summary == "first"


def test_duplicate_rejected() -> None:
    cat: Catalog[object] = Catalog("widget")
    cat.add("x", object())
    with pytest.raises(ConflictError, match="already registered"):
        cat.add("x", object())


def test_unknown_lists_known() -> None:
    cat: Catalog[object] = Catalog("widget")
    cat.add("alpha", 1)
    cat.add("beta", 2)
    with pytest.raises(NotFoundError, match=r"unknown widget 'gamma'; known: alpha, beta"):
        cat.get("gamma")


def test_invalid_name() -> None:
    cat: Catalog[object] = Catalog("widget")
    with pytest.raises(ValueError):
        cat.add(" padded", 1)


def test_entry_point_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party package registers through the entry-point group modelfab.<kind>."""
    pkg = tmp_path / "thirdparty_plugin.py"
    pkg.write_text("def hook(catalog):\n    catalog.add('from-plugin', 42, summary='third party')\n")
    dist = tmp_path / "thirdparty_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[modelfab.gadget]\nplug = thirdparty_plugin:hook\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cat: Catalog[int] = Catalog("gadget")
    assert cat.get("from-plugin") == 42
    assert "thirdparty_plugin" in sys.modules


def test_contract_params_ids() -> None:
    cat: Catalog[int] = Catalog("widget")
    cat.add("one", 1)
    cat.add("two", 2)
    params = contract_params(cat)
    assert [p.id for p in params] == ["one", "two"]
