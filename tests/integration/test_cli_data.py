"""The data CLI end to end in a temporary MODELFAB_HOME (in-process)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import write_image


def _one_line_error(res, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert res.code == 2, res
    # progress lines ("checking x: 3/27") may precede it; the error itself is exactly one line
    lines = [ln for ln in res.err.strip().splitlines() if not re.fullmatch(r".+: \d+/\d+", ln)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.err


def test_import_folder_show_and_relabel(cli, backend_home: str, image_folder: Path, tmp_path: Path) -> None:
    res = cli("data", "import", str(image_folder), "--name", "parts", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["dataset"] == "parts@1" and out["items"] == 24 and out["created"]
    info = json.loads(cli("data", "show", "parts", "--json").out)
    assert info["tasks"]["label"]["distribution"] == {"ng": 12, "ok": 12}
    assert sum(info["splits"].values()) == 24
    # re-import of identical content: no new version
    again = json.loads(cli("data", "import", str(image_folder), "--name", "parts", "--json").out)
    assert again["dataset"] == "parts@1" and not again["created"]
    # export, change one label, import: version 2 with parent 1
    csv_text = cli("data", "export", "parts").out
    lines = csv_text.splitlines()
    assert lines[0] == "key,split,label" and len(lines) == 25
    changed = [lines[0], lines[1].replace(",ng", ",ok"), *lines[2:]]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(changed) + "\n")
    v2 = json.loads(cli("data", "import-labels", "parts@1", str(labels), "--json").out)
    assert v2["dataset"] == "parts@2" and v2["created"]
    info2 = json.loads(cli("data", "show", "parts@2", "--json").out)
    assert info2["tasks"]["label"]["distribution"] == {"ng": 11, "ok": 13}
    assert [v["version"] for v in info2["versions"]] == [1, 2]
    assert info2["versions"][1]["parent_id"] == info2["versions"][0]["id"]
    listing = json.loads(cli("data", "list", "--json").out)
    assert listing == [{"name": "parts", "modality": "image", "version": 2, "items": 24, "hash": info2["content_hash"]}]


def test_label_studio_roundtrip(cli, home: Path, image_folder: Path, tmp_path: Path) -> None:
    assert cli("data", "import", str(image_folder), "--name", "p").code == 0
    out = tmp_path / "ls.json"
    assert cli("data", "export", "p", "--format", "label-studio", "-o", str(out)).code == 0
    tasks = json.loads(out.read_text())
    assert len(tasks) == 24 and tasks[0]["data"]["image"].startswith("/data/local-files/?d=")
    for t in tasks:
        t["annotations"][0]["result"][0]["value"]["choices"] = ["ok"]
    out.write_text(json.dumps(tasks))
    res = cli("data", "import-labels", "p", str(out), "--json")
    assert res.code == 0, res.err
    info = json.loads(cli("data", "show", "p@2", "--json").out)
    assert info["tasks"]["label"]["distribution"] == {"ok": 24}


def test_bad_files_skipped_or_strict(cli, home: Path, image_folder: Path) -> None:
    (image_folder / "ok" / "empty.png").write_bytes(b"")
    (image_folder / "ok" / "notes.png").write_text("not an image")
    good = (image_folder / "ng" / "ng00.png").read_bytes()
    (image_folder / "ng" / "cut.png").write_bytes(good[: len(good) // 3])
    strict = cli("data", "import", str(image_folder), "--name", "s", "--strict")
    _one_line_error(strict, "3 unusable files")
    assert json.loads(cli("data", "list", "--json").out) == []
    assert not list((home / "artifacts").rglob("*.png"))
    res = cli("data", "import", str(image_folder), "--name", "s", "--json")
    out = json.loads(res.out)
    assert out["items"] == 24 and {s["key"] for s in out["skipped"]} == {"ok/empty.png", "ok/notes.png", "ng/cut.png"}


def test_odd_images_import(cli, home: Path, tmp_path: Path) -> None:
    root = tmp_path / "odd"
    write_image(root / "a" / "cmyk.jpg", mode="CMYK")
    write_image(root / "a" / "deep.png", mode="I;16")
    write_image(root / "b" / "alpha.png", mode="RGBA")
    write_image(root / "b" / "strip.png", size=(3000, 4))
    res = cli("data", "import", str(root), "--name", "odd", "--strict", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["items"] == 4


def test_label_file_errors(cli, backend_home: str, image_folder: Path, tmp_path: Path) -> None:
    assert cli("data", "import", str(image_folder), "--name", "p").code == 0
    missing = tmp_path / "missing.csv"
    missing.write_text("key,label\nok/ok00.png,ng\nok/nothere.png,ng\n")
    _one_line_error(cli("data", "import-labels", "p", str(missing)), "name missing items")
    escape = tmp_path / "escape.csv"
    escape.write_text("key,label\n../../etc/passwd,ng\n")
    _one_line_error(cli("data", "import-labels", "p", str(escape)), "escapes the dataset root")
    absolute = tmp_path / "abs.csv"
    absolute.write_text("key,label\n/etc/passwd,ng\n")
    _one_line_error(cli("data", "import-labels", "p", str(absolute)), "absolute")
    broken = tmp_path / "broken.json"
    broken.write_text("[{not json")
    _one_line_error(cli("data", "import-labels", "p", str(broken)), "invalid JSON")
    info = json.loads(cli("data", "show", "p", "--json").out)
    assert [v["version"] for v in info["versions"]] == [1]


def test_text_tables(cli, backend_home: str, tmp_path: Path) -> None:
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("text,label\n" + "".join(f"review number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40)))
    res = cli("data", "import", str(csv_path), "--json")
    assert res.code == 0 and json.loads(res.out)["dataset"] == "reviews@1"
    info = json.loads(cli("data", "show", "reviews", "--json").out)
    assert info["modality"] == "text" and info["tasks"]["label"]["distribution"] == {"neg": 20, "pos": 20}
    jl = tmp_path / "tickets.jsonl"
    jl.write_text("".join(json.dumps({"id": f"t{i}", "body": f"ticket {i}", "intent": "x"}) + "\n" for i in range(5)))
    res = cli(
        "data",
        "import",
        str(jl),
        "--text-column",
        "body",
        "--label-column",
        "intent",
        "--id-column",
        "id",
        "--unlabeled",
        "--json",
    )
    assert res.code == 0, res.err
    info = json.loads(cli("data", "show", "tickets", "--json").out)
    assert info["hidden_ground_truth"] and info["tasks"]["label"]["labeled"] == 0
    _one_line_error(cli("data", "import", str(csv_path), "--label-column", "nope", "--name", "r2"), "no column 'nope'")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{oops\n')
    _one_line_error(cli("data", "import", str(bad)), "bad.jsonl:2: invalid JSON")


def test_split_command(cli, home: Path, image_folder: Path) -> None:
    assert cli("data", "import", str(image_folder), "--name", "p").code == 0
    res = cli("data", "split", "p", "--ratios", "train=0.5,test=0.5", "--seed", "3", "--stratify", "label", "--json")
    assert res.code == 0, res.err
    info = json.loads(cli("data", "show", "p@2", "--json").out)
    assert info["splits"] == {"test": 12, "train": 12}
    assert info["tasks"]["label"]["by_split"]["test"] == {"ng": 6, "ok": 6}
    assert info["split_info"]["seed"] == 3
    _one_line_error(cli("data", "split", "p", "--ratios", "train=0.9"), "sum to 1")


def test_unknown_things(cli, home: Path) -> None:
    _one_line_error(cli("data", "show", "ghost"), "unknown dataset 'ghost'")
    _one_line_error(cli("models", "show", "ghost"), "unknown model 'ghost'")
    _one_line_error(cli("runs", "show", "r-nothing"), "unknown run")
    _one_line_error(cli("data", "import", "/no/such/place"), "no such file or folder")
    _one_line_error(cli("data", "show", "x@abc"), "must be a number")
    assert cli("data", "bogus-command").code == 2


def test_labels_for_unlabeled_import_keep_ground_truth(
    cli, backend_home: str, image_folder: Path, tmp_path: Path
) -> None:
    """Annotators label a dataset imported with --unlabeled: the visible label sits beside the hidden one."""
    assert cli("data", "import", str(image_folder), "--name", "raw", "--unlabeled").code == 0
    lines = cli("data", "export", "raw").out.splitlines()
    assert lines[0] == "key,split" and len(lines) == 25  # no visible labels yet
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(["key,split,label", *[line + ",ok" for line in lines[1:5]]]) + "\n")
    res = cli("data", "import-labels", "raw@1", str(labels), "--json")
    assert res.code == 0, res.err
    info = json.loads(cli("data", "show", "raw@2", "--json").out)
    assert info["tasks"]["label"]["labeled"] == 4 and info["hidden_ground_truth"]
