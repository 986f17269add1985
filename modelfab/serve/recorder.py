"""Record every prediction compactly, off the request path (one background thread, batched writes).

Per prediction: a ``predictions`` row (id, deployment, model, input hash, label, scores) and the
input itself in the artifact store under its sha256 (so ``ingest-feedback`` can build items from
it); a low-confidence prediction also gets a ``feedback`` row of kind ``low-confidence`` for
review. :meth:`Recorder.flush` waits until everything queued so far is written (feedback calls it
before looking a prediction up).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert

from modelfab.store.schema import Feedback, Prediction, utcnow
from modelfab.store.store import Store

log = logging.getLogger("modelfab.serve")


@dataclass
class PredictionRecord:
    """One prediction to persist."""

    row: dict[str, Any]  # columns of Prediction
    data: bytes | None  # the input, stored as an artifact (None: do not keep it)
    low_confidence: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """A writer thread draining a queue of :class:`PredictionRecord` in batched transactions."""

    def __init__(self, store: Store, max_rows: int = 512) -> None:
        self.store = store
        self.max_rows = max_rows
        self._queue: queue.Queue[PredictionRecord | None] = queue.Queue()
        self._cond = threading.Condition()
        self._queued = 0
        self._written = 0
        self._stored: set[str] = set()  # digests known to be in the artifact store
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="modelfab-recorder", daemon=True)
            self._thread.start()

    def add(self, records: list[PredictionRecord]) -> None:
        with self._cond:
            self._queued += len(records)
        for r in records:
            self._queue.put(r)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record added so far is written (or dropped after an error)."""
        with self._cond:
            target = self._queued
            return self._cond.wait_for(lambda: self._written >= target, timeout)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            stop = first is None
            batch = [] if first is None else [first]
            while len(batch) < self.max_rows:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            if batch:
                try:
                    self._write(batch)
                except Exception:
                    self.errors += 1
                    log.exception("could not record %d predictions", len(batch))
                with self._cond:
                    self._written += len(batch)
                    self._cond.notify_all()
            if stop:
                return

    def _write(self, batch: list[PredictionRecord]) -> None:
        for r in batch:
            digest = r.row["input_hash"]
            if r.data is not None and digest not in self._stored:
                if not self.store.artifacts.exists(digest):
                    self.store.artifacts.put_bytes(r.data)
                self._stored.add(digest)
        now = utcnow()
        preds = [{**r.row, "created_at": now} for r in batch]
        low = [
            {
                "deployment_id": r.row["deployment_id"],
                "prediction_id": r.row["id"],
                "model_id": r.row["model_id"],
                "input_hash": r.row["input_hash"],
                "prediction": {"label": r.row["label"], "scores": r.row["scores"], "confidence": r.row["confidence"]},
                "correction": None,
                "kind": "low-confidence",
                "created_at": now,
            }
            for r in batch
            if r.low_confidence
        ]
        with self.store.transaction() as s:
            s.execute(insert(Prediction), preds)
            if low:
                s.execute(insert(Feedback), low)
