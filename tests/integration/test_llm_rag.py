"""Knowledge QA end to end: index a small corpus, search it, answer with citations, evaluate a QA file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modelfab.store.store import Store
from tests.llm_fixtures import register_tiny_chat

DOCS = {
    "permits.md": (
        "# Parking permit renewal\n\n"
        "To renew a parking permit, bring the renewal form and your identity card to counter 4 of the town hall. "
        "Renewal costs 25 euros and takes ten working days.\n\n"
        "## Lost permits\n\n"
        "A lost parking permit is replaced after you report the loss to the police and pay a 10 euro fee.\n"
    ),
    "hotline.html": (
        "<html><head><title>Citizen hotline</title></head><body><nav>Home | Services</nav>"
        "<h1>Citizen hotline</h1><p>The citizen hotline number is 0800 123 456. Hotline operators answer "
        "calls from 8 am to 8 pm on weekdays.</p><h2>Urgent calls</h2><p>For a water pipe burst or a gas smell "
        "outside office hours, call the emergency line 112.</p></body></html>"
    ),
    "waste.txt": (
        "Waste collection\n================\n\n"
        "Glass bottles go in the green container at the corner. Paper and cardboard are collected every second "
        "Tuesday; put the bundle at the kerb before 7 am.\n\n"
        "Bulky waste such as sofas and mattresses is picked up once a month after booking online.\n"
    ),
    "library.md": (
        "# Public library\n\n"
        "The public library lends up to twelve books per library card for three weeks. "
        "Late returns cost 50 cents per book per day.\n\n"
        "## Reading rooms\n\nThe reading rooms are quiet zones with free wifi and open on Saturdays.\n"
    ),
    "passports/passport.md": (
        "# Passport application\n\n"
        "An adult passport is valid for ten years and costs 60 euros. Apply at the town hall with your birth "
        "certificate and one biometric photo.\n\n"
        "## Children\n\nA passport for children under twelve is valid for five years.\n"
    ),
}
QUESTIONS = {  # phrased with the documents' key words
    "How do I renew my parking permit?": "permits.md",
    "What is the citizen hotline number?": "hotline.html",
    "When are paper and cardboard collected?": "waste.txt",
    "How many books does the public library lend?": "library.md",
    "How long is an adult passport valid?": "passports/passport.md",
}
QA = [
    {"id": "q1", "question": "How much does renewing a parking permit cost?", "answer": "It costs 25 euros.",
     "source": "permits.md", "passage": "Renewal costs 25 euros and takes ten working days.", "facts": ["25 euros"]},
    {"id": "q2", "question": "What is the citizen hotline number?", "answer": "0800 123 456",
     "source": "hotline.html", "passage": "The citizen hotline number is 0800 123 456.", "facts": ["0800 123 456"]},
    {"id": "q3", "question": "How long is an adult passport valid?", "answer": "Ten years.",
     "source": "passports/passport.md", "passage": "An adult passport is valid for ten years and costs 60 euros.",
     "facts": ["ten years"]},
]


def write_docs(root: Path) -> Path:
    docs = root / "docs"
    for rel, text in DOCS.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text, encoding="utf-8")
    (docs / "scan.pdf").write_bytes(b"%PDF-1.4")
    return docs


def write_qa(path: Path, items: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return path


def register_tiny_encoder(store: Store, root: Path) -> str:
    from modelfab.zoo.registry import register_foundation
    from modelfab.zoo.testing import write_tiny_hf_model

    model, _ = register_foundation(store, "local", path=str(write_tiny_hf_model(root / "enc", "text")),
                                   name="tinyenc")
    return model.id


def test_index_registers_chunks_embeddings_and_faiss(cli, backend_store: Store, tmp_path: Path) -> None:
    """On SQLite and PostgreSQL (row order of the embeddings must not depend on the database's collation)."""
    store = backend_store
    from modelfab.llm.rag.index import embedding_text, load_index, stored_faiss
    from modelfab.store.models import model_card
    from modelfab.store.runs import list_runs

    docs = write_docs(tmp_path)
    encoder_id = register_tiny_encoder(store, tmp_path)
    res = cli("llm", "index", str(docs), "--encoder", "tinyenc", "--name", "kb", "--chunk-tokens", "16",
              "--overlap", "4", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["documents"] == 5 and out["docs"] == "kb-docs@1" and out["dim"] == 16
    assert out["skipped"] == [{"path": "scan.pdf", "reason": "unsupported file type .pdf"}]
    assert out["chunking"] == {"chunk_tokens": 16, "overlap": 4, "unit": "tokens", "encoder_max_length": 64}

    model = store.get_model("kb")
    assert (model.tier, model.task, model.parent_id) == ("L2", "retrieval-index", encoder_id)
    info = model_card(store, model.id)["index"]
    assert info["encoder"] == encoder_id and info["docs"] == "kb-docs@1" and info["count"] == out["chunks"]
    items = store.version_items("kb-docs@1")
    assert model.dataset_version_id == store.get_dataset_version("kb-docs@1").id
    assert len(items) == out["chunks"] > 5  # the documents are longer than 16 tokens
    assert store.get_dataset_version("kb-docs@1").dataset.modality == "docs"
    texts = store.artifacts.get_json(info["documents"])["documents"]
    assert sorted(texts) == sorted(DOCS)
    for item in items:
        meta = item.meta
        assert set(meta) == {"source", "start", "end", "heading"}
        assert texts[meta["source"]][meta["start"]:meta["end"]] == item.text
    html_heads = {i.meta["heading"] for i in items if i.meta["source"] == "hotline.html"}
    assert html_heads <= {"Citizen hotline", "Urgent calls"} and "Urgent calls" in html_heads
    assert not any("Home | Services" in (i.text or "") for i in items)

    emb = store.artifacts.get_tensors(model.weights_digest or "")["embeddings"]
    assert emb.shape == (len(items), 16) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(items)), atol=1e-5)
    flat = stored_faiss(store, info)
    assert flat.ntotal == len(items) and flat.d == 16
    assert torch.allclose(torch.from_numpy(flat.reconstruct_n(0, flat.ntotal)), emb)
    runs = list_runs(store, "llm-index")
    assert runs[0].status == "succeeded" and runs[0].outputs["model"] == model.id

    index = load_index(store, "kb")
    from modelfab.llm.rag.chunking import Chunk

    row = 3
    c = index.chunks[row]
    probe = embedding_text(Chunk(c.source, 0, c.start, c.end, c.heading, c.text, 0))
    hits = index.search(probe, k=4)
    assert len(hits) == 4 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert c.key in [h.key for h in hits if h.score > 0.9999]
    assert index.search("permit", k=1000)[-1].score <= hits[0].score and len(index.search("x", k=1000)) == len(items)

    again = json.loads(cli("llm", "index", str(docs), "--encoder", "tinyenc", "--name", "kb", "--chunk-tokens", "16",
                           "--overlap", "4", "--json").out)
    assert again["name"] == "kb:2" and again["docs"] == "kb-docs@1"  # same chunks: the same docs version


def test_minilm_retrieves_the_right_document(store: Store, tmp_path: Path) -> None:
    """The real MiniLM encoder: keyword questions find their document in the top 2; recall@2 is 1."""
    from modelfab.llm.rag.index import build_index, load_index
    from modelfab.llm.rag.qa_eval import evaluate_qa
    from modelfab.zoo.registry import register_foundation

    docs = write_docs(tmp_path)
    register_foundation(store, "minilm-l6")
    model = build_index(store, docs, "minilm-l6", "kb", chunk_tokens=48, overlap=8)
    index = load_index(store, model.id)
    assert index.info["chunking"]["unit"] == "tokens" and index.vectors.shape[1] == 384
    for question, source in QUESTIONS.items():
        hits = index.search(question, k=2)
        assert source in [h.source for h in hits], (question, [(h.source, h.score) for h in hits])

    register_tiny_chat(store, tmp_path)
    qa = write_qa(tmp_path / "qa.jsonl", QA)
    report = evaluate_qa(store, "kb", "tinychat", qa, k=2, max_new_tokens=4)
    assert report["items"] == 3 and report["recall@k"] == 1.0 and 0 <= report["recall@1"] <= 1
    assert [r["rank"] for r in report["rows"]] == [r["rank"] for r in report["rows"] if r["rank"] in (1, 2)]
    assert all(0 <= r["f1"] <= 1 and r["given"] >= 1 for r in report["rows"])


def test_ask_and_qa_eval_cli(cli, store: Store, tmp_path: Path) -> None:
    docs = write_docs(tmp_path)
    register_tiny_encoder(store, tmp_path)
    register_tiny_chat(store, tmp_path)
    assert cli("llm", "index", str(docs), "--encoder", "tinyenc", "--name", "kb", "--chunk-tokens", "40",
               "--overlap", "8").code == 0

    res = cli("llm", "ask", "kb", "How do I renew my parking permit?", "--model", "tinychat", "--k", "4",
              "--max-new-tokens", "8", "--json")
    assert res.code == 0, res.err
    ans = json.loads(res.out)
    assert isinstance(ans["answer"], str) and ans["retrieval"] is True
    assert len(ans["citations"]) >= 1 and len(ans["citations"]) + ans["dropped"] == 4
    assert ans["dropped"] >= 1  # 4 passages of 40 encoder tokens do not fit the tiny LM's 256-token window
    assert ans["prompt_tokens"] + 8 <= 256 and ans["completion_tokens"] <= 8
    first = ans["citations"][0]
    assert first["n"] == 1 and {"key", "text", "source", "heading", "score", "cited"} <= set(first)
    assert all(c["cited"] == (c["n"] in ans["cited"]) for c in ans["citations"])

    bare = json.loads(cli("llm", "ask", "kb", "How do I renew my parking permit?", "--model", "tinychat",
                          "--no-retrieval", "--max-new-tokens", "8", "--json").out)
    assert bare["citations"] == [] and bare["retrieval"] is False and bare["prompt_tokens"] < ans["prompt_tokens"]

    table = cli("llm", "ask", "kb", "What is the citizen hotline number?", "--model", "tinychat", "--k", "2",
                "--max-new-tokens", "4")
    assert table.code == 0 and "[1]" in table.out and "score" in table.out

    qa = write_qa(tmp_path / "qa.jsonl", QA)
    res = cli("llm", "qa-eval", "kb", "--model", "tinychat", "--qa", str(qa), "--k", "2", "--limit", "2",
              "--max-new-tokens", "4", "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["items"] == 2 and [r["id"] for r in report["rows"]] == ["q1", "q2"]
    assert {"recall@1", "recall@k", "f1", "fact_score", "accuracy", "rule", "run"} <= set(report)
    assert 0 <= report["recall@1"] <= report["recall@k"] <= 1
    base = json.loads(cli("llm", "qa-eval", "kb", "--model", "tinychat", "--qa", str(qa), "--no-retrieval",
                          "--max-new-tokens", "4", "--json").out)
    assert base["recall@k"] is None and base["items"] == 3 and all(r["rank"] is None for r in base["rows"])
    shown = cli("llm", "qa-eval", "kb", "--model", "tinychat", "--qa", str(qa), "--limit", "1", "--max-new-tokens", "2")
    assert shown.code == 0 and "accuracy" in shown.out and "recall@4" in shown.out


def test_bad_input(cli, store: Store, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    register_tiny_encoder(store, tmp_path)
    res = cli("llm", "index", str(empty), "--encoder", "tinyenc", "--name", "kb")
    assert res.code == 2 and res.err.count("\n") == 1 and res.err.startswith("error: no readable documents in")

    docs = write_docs(tmp_path)
    res = cli("llm", "index", str(docs), "--encoder", "tinyenc", "--name", "kb", "--overlap", "100")
    assert res.code == 2 and "overlap" in res.err
    register_tiny_chat(store, tmp_path)
    res = cli("llm", "index", str(docs), "--encoder", "tinychat", "--name", "kb")
    assert res.code == 2 and "not a text encoder" in res.err
    assert cli("llm", "index", str(docs), "--encoder", "tinyenc", "--name", "kb", "--chunk-tokens", "32",
               "--overlap", "8").code == 0

    res = cli("llm", "ask", "nope", "a question", "--model", "tinychat")
    assert res.code == 2 and res.err.startswith("error: unknown model 'nope'")
    res = cli("llm", "ask", "tinychat", "a question", "--model", "tinychat")
    assert res.code == 2 and "not a retrieval index" in res.err
    res = cli("llm", "ask", "kb", "  ", "--model", "tinychat")
    assert res.code == 2 and "question" in res.err

    bad = write_qa(tmp_path / "bad.jsonl", [QA[0], {**QA[1], "passage": "The hotline number is 999."}])
    res = cli("llm", "qa-eval", "kb", "--model", "tinychat", "--qa", str(bad))
    assert res.code == 2 and res.err.strip() == "error: QA item 'q2': passage not found in its source document " \
                                                 "hotline.html"
    other = write_qa(tmp_path / "other.jsonl", [{**QA[0], "source": "missing.md"}])
    res = cli("llm", "qa-eval", "kb", "--model", "tinychat", "--qa", str(other))
    assert res.code == 2 and "'missing.md' is not a document of index kb:1" in res.err
    facts = write_qa(tmp_path / "facts.jsonl", [{**QA[0], "facts": ["30 euros"]}])
    res = cli("llm", "qa-eval", "kb", "--model", "tinychat", "--qa", str(facts))
    assert res.code == 2 and "not contained in its reference answer" in res.err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "q1"}\nnot json\n')
    res = cli("llm", "qa-eval", "kb", "--model", "tinychat", "--qa", str(broken))
    assert res.code == 2 and "broken.jsonl line 1: field 'question'" in res.err
