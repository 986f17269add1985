"""Document reading and chunking: overlap, boundaries, HTML text, determinism, bad folders."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.llm.rag.chunking import (
    ChunkingConfig,
    Document,
    chunk_document,
    html_to_text,
    markdown_headings,
    read_documents,
    tokenizer_spans,
    word_spans,
)


def _words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def _doc(text: str) -> Document:
    return Document("d.md", "md", text, tuple(markdown_headings(text)))


def test_overlap_is_exact_and_chunks_are_slices() -> None:
    doc = _doc(_words(100))  # one paragraph, no sentence ends: cuts at the window end
    chunks = chunk_document(doc, ChunkingConfig(chunk_tokens=20, overlap=5))
    assert [c.tokens for c in chunks[:-1]] == [20] * (len(chunks) - 1)
    for a, b in pairwise(chunks):
        assert a.text.split()[-5:] == b.text.split()[:5]  # exactly 5 shared words
    assert chunks[0].text.split()[0] == "w0" and chunks[-1].text.split()[-1] == "w99"
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[3].key == "d.md#00003"


def test_prefers_paragraph_then_heading_boundaries() -> None:
    text = f"{_words(14, 'a')}.\n\n{_words(10, 'b')} x. {_words(10, 'c')}\n\n## Next\n\n{_words(12, 'd')}"
    doc = _doc(text)
    chunks = chunk_document(doc, ChunkingConfig(chunk_tokens=24, overlap=3))
    # window 0..24: the paragraph break after a13 (token 14) is past half the window -> cut there
    assert chunks[0].text.endswith("a13.")
    assert chunks[0].heading == ""
    # the next chunk overlaps 3 words, then runs to the heading: a cut at a heading has no overlap
    assert chunks[1].text.startswith("a11 a12 a13.")
    heading_chunk = next(c for c in chunks if c.text.startswith("## Next"))
    assert heading_chunk.heading == "Next"
    previous = chunks[chunks.index(heading_chunk) - 1]
    assert "## Next" not in previous.text and previous.heading == ""
    # a sentence end is used when no paragraph break lies past half the window
    long = _doc(f"{_words(15, 'e')}. {_words(30, 'f')}")
    first = chunk_document(long, ChunkingConfig(chunk_tokens=20, overlap=2))[0]
    assert first.text.endswith("e14.")


def test_heading_is_that_of_the_new_text() -> None:
    text = f"# Alpha\n\n{_words(30, 'a')}\n\n# Beta\n\n{_words(30, 'b')}"
    chunks = chunk_document(_doc(text), ChunkingConfig(chunk_tokens=16, overlap=4))
    for c in chunks:
        assert c.heading == ("Alpha" if c.text.split()[-1].startswith("a") else "Beta")


def test_markdown_headings_skip_code_fences_and_read_setext() -> None:
    text = "Title\n=====\n\nbody\n\n```\n# not a heading\n```\n\nSub\n---\n\n  ## Third ##\n"
    assert markdown_headings(text) == [(0, "Title"), (text.index("Sub"), "Sub"), (text.index("  ## Third"), "Third")]


def test_html_stripping() -> None:
    html = (
        "<html><head><title>Guide</title><style>p{color:red}</style></head><body>"
        "<nav><a>Home</a></nav><div role='navigation'><div>menu</div></div>"
        "<h1>Hot&shy;line <a class='headerlink' href='#x'>\u00b6</a></h1>"
        "<script>var s = '<p>hidden</p>';</script>"
        "<p>Call   us at 555&nbsp;0100 &amp; wait.</p><ul><li>Mon</li><li>Tue</li></ul>"
        "<pre>a\n  b</pre><h2>Next</h2><p>x<br>y</p></body></html>"
    )
    text, headings = html_to_text(html)
    assert text == "Hot\u00adline\n\nCall us at 555 0100 & wait.\n\nMon\nTue\n\na\n  b\n\nNext\n\nx\ny"
    assert headings == [(0, "Guide"), (0, "Hot\u00adline"), (text.index("Next"), "Next")]
    for banned in ("Home", "menu", "hidden", "color", "\u00b6"):
        assert banned not in text


def test_read_folder_reports_skips_and_is_deterministic(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "b.md").write_text("# B\n\nbee text\n")
    (docs / "sub" / "a.txt").write_text("plain text here\n")
    (docs / "page.htm").write_text("<p>para <b>bold</b></p>")
    (docs / "bad.txt").write_bytes(b"caf\xe9 latin-1")
    (docs / "empty.md").write_text("  \n")
    (docs / "image.png").write_bytes(b"\x89PNG")
    (docs / ".hidden.md").write_text("ignored")
    corpus = read_documents(docs)
    assert [d.source for d in corpus.documents] == ["b.md", "page.htm", "sub/a.txt"]
    assert corpus.documents[1].text == "para bold"
    reasons = {s.path: s.reason for s in corpus.skipped}
    assert set(reasons) == {"bad.txt", "empty.md", "image.png"}
    assert "UTF-8" in reasons["bad.txt"] and "no text" in reasons["empty.md"] and ".png" in reasons["image.png"]
    with pytest.raises(DataError, match=r"bad\.txt: not UTF-8"):
        read_documents(docs, strict=True)
    cfg = ChunkingConfig(chunk_tokens=8, overlap=2)
    first = [chunk_document(d, cfg) for d in read_documents(docs).documents]
    second = [chunk_document(d, cfg) for d in read_documents(docs).documents]
    assert first == second


def test_empty_folder_and_bad_settings(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"no readable documents in {empty}"):
        read_documents(empty)
    (empty / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(DataError, match="1 files skipped"):
        read_documents(empty)
    with pytest.raises(NotFoundError, match="does not exist"):
        read_documents(tmp_path / "missing")
    with pytest.raises(ConfigError, match="overlap"):
        ChunkingConfig(chunk_tokens=20, overlap=10)
    with pytest.raises(ConfigError, match="chunk_tokens"):
        ChunkingConfig(chunk_tokens=4, overlap=0)


def test_tokenizer_spans_count_encoder_tokens(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from modelfab.zoo.testing import write_tiny_hf_model

    folder = write_tiny_hf_model(tmp_path / "enc", "text")
    spans = tokenizer_spans(AutoTokenizer.from_pretrained(str(folder)))
    assert spans is not None
    text = "The panel, cracked."
    assert [text[a:b] for a, b in spans(text)] == ["The", "panel", ",", "cracked", "."]
    assert len(word_spans(text)) == 3
    chunks = chunk_document(_doc("the cell is fine. " * 10), ChunkingConfig(chunk_tokens=10, overlap=2), spans)
    assert chunks[0].tokens == 10 and chunks[0].text == "the cell is fine. the cell is fine."
