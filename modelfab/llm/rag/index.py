"""A retrieval index over a document folder, stored in the registry, and searching it.

:func:`build_index` reads and chunks the folder (:mod:`modelfab.llm.rag.chunking`), embeds every chunk
with a registered text encoder, L2-normalises the vectors and registers:

* the chunks as a dataset version ``<name>-docs`` of modality ``docs`` (one item per chunk, key
  ``source#00003``, text = the chunk text, meta = ``{source, start, end, heading}``);
* the index as an L2 model of task ``retrieval-index``: parent = the encoder, dataset version = the
  chunks, weights = safetensors ``{"embeddings": (N, D) float32}`` whose row ``i`` is the ``i``-th chunk
  in Python's sort order of item keys; the card's ``index`` entry holds the encoder id, the docs
  version, the chunking settings, ``dim``, ``count``, the digest of the serialised faiss
  ``IndexFlatIP`` and the digest of a JSON artifact with every document's text (what chunk offsets and
  QA passages refer to).

A chunk is embedded as its text, preceded by its heading when the text does not contain it.  Search is
cosine similarity (inner product of unit vectors) with faiss; :func:`load_index` rebuilds the flat
index from the stored embeddings (nothing is unpickled).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from modelfab.core import optional
from modelfab.core.errors import ConfigError, DataError
from modelfab.llm.rag.chunking import Chunk, ChunkingConfig, chunk_corpus, read_documents, tokenizer_spans
from modelfab.store.datasets import ItemSpec, VersionSpec, create_version, get_version, version_items
from modelfab.store.runs import finish_run, tracked_run

if TYPE_CHECKING:
    from modelfab.store.schema import Model
    from modelfab.store.store import Store
    from modelfab.zoo.base import Backbone

INDEX_TASK = "retrieval-index"
DOCS_MODALITY = "docs"


def _faiss() -> Any:
    return optional.faiss("llm")


@dataclass
class Hit:
    """One retrieved chunk with its cosine similarity to the query."""

    key: str
    text: str
    source: str
    heading: str
    score: float
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def embed_texts(backbone: Backbone, texts: Sequence[str], batch_size: int = 32,
                progress: str | None = None) -> torch.Tensor:
    """Unit-length embeddings of ``texts`` -> (N, D) float32, batch by batch without gradients."""
    from modelfab.core.progress import track
    from modelfab.zoo.base import evaluating

    if not texts:
        raise DataError("nothing to embed: the text list is empty")
    starts: Any = range(0, len(texts), batch_size)
    if progress:
        starts = track(starts, len(starts), progress)
    out: list[torch.Tensor] = []
    with evaluating(backbone.module):
        for a in starts:
            batch = backbone.preprocess(list(texts[a : a + batch_size]))
            out.append(backbone.embed(batch).float())  # (B, D)
    return F.normalize(torch.cat(out), dim=-1).contiguous()  # (N, D)


def embedding_text(chunk: Chunk) -> str:
    """What the encoder sees for a chunk: its heading (when not in the text) and its text."""
    return chunk.text if not chunk.heading or chunk.heading in chunk.text else f"{chunk.heading}\n{chunk.text}"


def _text_encoder(store: Store, ref: str) -> tuple[Backbone, Model]:
    from modelfab.zoo.registry import load_registered

    backbone, model = load_registered(store, ref)
    if backbone.input_spec.modality != "text":
        raise ConfigError(f"encoder {ref!r} is a {backbone.input_spec.modality} backbone, not a text encoder")
    return backbone, model


def _chunk_item(chunk: Chunk) -> ItemSpec:
    payload = json.dumps({"text": chunk.text, **chunk.meta}, sort_keys=True, ensure_ascii=False)
    return ItemSpec(chunk.key, hashlib.sha256(payload.encode()).hexdigest(), text=chunk.text, meta=chunk.meta)


def build_index(
    store: Store,
    docs_dir: str | Path,
    encoder_ref: str,
    name: str,
    chunk_tokens: int = 200,
    overlap: int = 40,
    *,
    strict: bool = False,
    batch_size: int = 32,
) -> Model:
    """Chunk, embed and register ``docs_dir`` as the retrieval index ``name`` (see the module docstring).

    The card's ``index`` entry also lists the ``skipped`` files and the ``run`` id.
    """
    cfg = ChunkingConfig(chunk_tokens, overlap)
    if not name or any(c in name for c in "@:/"):
        raise ConfigError(f"name: {name!r} must be non-empty without '@', ':' or '/'")
    folder = Path(docs_dir)
    corpus = read_documents(folder, strict=strict)
    backbone, encoder = _text_encoder(store, encoder_ref)
    spans = tokenizer_spans(getattr(backbone, "tokenizer", None))
    chunking = {"chunk_tokens": cfg.chunk_tokens, "overlap": cfg.overlap, "unit": "tokens" if spans else "words",
                "encoder_max_length": backbone.input_spec.max_length}
    config = {**chunking, "docs_dir": str(folder.resolve()), "strict": strict}
    started = time.perf_counter()
    with tracked_run(store, "llm-index", config=config, inputs={"docs": str(folder.resolve()), "encoder": encoder.id}
                     ) as run:
        chunks = sorted(chunk_corpus(corpus, cfg, spans), key=lambda c: c.key)
        vectors = embed_texts(backbone, [embedding_text(c) for c in chunks], batch_size, progress="embed chunks")
        n, dim = vectors.shape  # (N, D)
        dv, _ = create_version(store, f"{name}-docs", DOCS_MODALITY, VersionSpec(
            items=[_chunk_item(c) for c in chunks], message=f"chunks of {folder.resolve()} for index {name}"))
        faiss = _faiss()
        flat = faiss.IndexFlatIP(dim)
        flat.add(vectors.numpy())
        faiss_digest = store.artifacts.put_bytes(faiss.serialize_index(flat).tobytes())
        documents = store.artifacts.put_json({"documents": {d.source: d.text for d in corpus.documents}})
        weights = store.artifacts.put_tensors({"embeddings": vectors}, {"kind": INDEX_TASK, "encoder": encoder.id})
        docs_ref = f"{name}-docs@{dv.version}"
        skipped = [asdict(s) for s in corpus.skipped]
        info = {"encoder": encoder.id, "docs": docs_ref, "chunking": chunking, "dim": int(dim), "count": int(n),
                "faiss": faiss_digest, "documents": documents, "metric": "cosine", "skipped": skipped,
                "run": run.id}
        seconds = round(time.perf_counter() - started, 3)
        metrics = {"documents": len(corpus.documents), "chunks": int(n), "skipped": len(skipped), "seconds": seconds}
        model = store.register_model(
            name=name, tier="L2", task=INDEX_TASK,
            arch={"builder": "faiss-flat-ip", "dim": int(dim), "encoder": encoder.architecture.get("builder")},
            config=config, metrics=metrics, params=0, trainable_params=0, weights=weights,
            card={"index": info}, parent=encoder.id, dataset_version=dv.id,
        )
        finish_run(store, run.id, outputs={"model": model.id, "name": f"{model.name}:{model.version}",
                                           "docs": docs_ref}, metrics=metrics)
    return model


# -- loading and search ----------------------------------------------------------------------------------------------


def index_info(store: Store, ref: str) -> tuple[Model, dict[str, Any]]:
    """The registered index ``ref`` and its card's ``index`` entry."""
    from modelfab.store.models import model_card

    model = store.get_model(ref)
    if model.task != INDEX_TASK:
        raise ConfigError(f"model {ref!r} is a {model.task} model ({model.tier}), not a retrieval index")
    info = model_card(store, model.id).get("index")
    if not isinstance(info, dict) or not model.weights_digest:
        raise DataError(f"index {ref!r} has no index card or embeddings")
    return model, info


def index_documents(store: Store, info: dict[str, Any]) -> dict[str, str]:
    """Source path -> document text, as the index saw it."""
    return dict(store.artifacts.get_json(info["documents"])["documents"])


def stored_faiss(store: Store, info: dict[str, Any]) -> Any:
    """The serialised faiss index stored with an index (its card's ``index`` entry), deserialised."""
    import numpy as np

    data = np.frombuffer(store.artifacts.get_bytes(info["faiss"]), dtype=np.uint8)
    return _faiss().deserialize_index(data)


@dataclass
class KnowledgeIndex:
    """A loaded retrieval index: chunks, their unit embeddings, the faiss index and the encoder."""

    model: Model
    info: dict[str, Any]
    encoder: Backbone
    chunks: list[Hit]  # row i of the embeddings; score unused (0.0)
    vectors: torch.Tensor  # (N, D) float32, unit rows
    flat: Any  # faiss.IndexFlatIP

    def search(self, query: str, k: int = 4) -> list[Hit]:
        """The ``k`` chunks most similar to ``query``, best first."""
        if k < 1:
            raise ConfigError(f"k: must be >= 1, got {k}")
        if not query.strip():
            raise DataError("query: must not be empty")
        q = embed_texts(self.encoder, [query]).numpy()  # (1, D)
        scores, rows = self.flat.search(q, min(k, len(self.chunks)))  # (1, k) each
        out = []
        for score, row in zip(scores[0].tolist(), rows[0].tolist(), strict=True):
            if row >= 0:
                c = self.chunks[row]
                out.append(Hit(c.key, c.text, c.source, c.heading, round(float(score), 6), c.start, c.end))
        return out


def load_index(store: Store, ref: str) -> KnowledgeIndex:
    """A registered retrieval index, ready to search."""
    model, info = index_info(store, ref)
    backbone, _ = _text_encoder(store, info["encoder"])
    vectors = store.artifacts.get_tensors(model.weights_digest or "").get("embeddings")
    if vectors is None or vectors.ndim != 2:
        raise DataError(f"index {ref!r}: weights hold no (N, D) 'embeddings' tensor")
    dv = get_version(store, model.dataset_version_id) if model.dataset_version_id else get_version(store, info["docs"])
    rows = sorted(version_items(store, dv.id), key=lambda r: r.key)
    if len(rows) != vectors.shape[0]:
        raise DataError(f"index {ref!r}: {vectors.shape[0]} embeddings but {len(rows)} chunks")
    chunks = [Hit(r.key, r.text or "", str(r.meta.get("source", "")), str(r.meta.get("heading", "")), 0.0,
                  int(r.meta.get("start", 0)), int(r.meta.get("end", 0))) for r in rows]
    vectors = vectors.float().contiguous()
    flat = _faiss().IndexFlatIP(int(vectors.shape[1]))
    flat.add(vectors.numpy())
    return KnowledgeIndex(model, info, backbone, chunks, vectors, flat)
