"""The per-app serving state: plans, loaded models with their batchers, chat models, recorder, metrics, auth."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from modelfab.compress.runtimes import set_onnx_spinning
from modelfab.serve.auth import ANONYMOUS, KeyVerifier, Principal, token_from_headers
from modelfab.serve.batching import DirectRunner, MicroBatcher
from modelfab.serve.chat_host import ChatHost, ChatPlan
from modelfab.serve.config import ServeSettings
from modelfab.serve.inputs import ApiError
from modelfab.serve.metrics import Metrics
from modelfab.serve.recorder import Recorder
from modelfab.serve.runtime import LoadedModel, Plan, load_models
from modelfab.store.store import Store

log = logging.getLogger("modelfab.serve")


@dataclass
class Served:
    """One model as this server serves it."""

    plan: Plan
    loaded: LoadedModel
    runner: MicroBatcher | DirectRunner
    deployment_id: str | None
    names: set[str]  # what a key scope may call it
    counters: Counter[str] = field(default_factory=Counter)


class ServeState:
    """Everything the routes need; built by :func:`modelfab.serve.app.create_app`."""

    def __init__(self, settings: ServeSettings, store: Store, plans: list[Plan],
                 chat_plans: Sequence[ChatPlan] = ()) -> None:
        self.settings = settings
        self.store = store
        self.plans = plans
        self.metrics = Metrics()
        self.recorder = Recorder(store)
        self.verifier = KeyVerifier(store, settings.key_cache_s)
        # One inference thread (the runtime's intra-op threads use the cores) and a small pool for
        # decoding and preprocessing whose torch ops run single-threaded: torch's default of one
        # OpenMP thread per core in every request thread oversubscribes the cores (measured: 110 ms
        # instead of 3 ms per image on a busy 2-core machine). torch thread counts are per thread.
        infer_threads = settings.threads or torch.get_num_threads()
        self.executor = ThreadPoolExecutor(max_workers=settings.concurrent_batches, thread_name_prefix="modelfab-infer",
                                           initializer=torch.set_num_threads, initargs=(infer_threads,))
        self.prep_executor = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                                thread_name_prefix="modelfab-prep",
                                                initializer=torch.set_num_threads, initargs=(1,))
        self.chat = ChatHost(store, chat_plans, settings, self.metrics)  # chat models and text encoders
        self.served: dict[str, Served] = {}
        self.index: dict[str, Served] = {}
        self.deployments: dict[str, str] = {}
        self.status = "loading"
        self.detail = ""

    @property
    def ready(self) -> bool:
        return self.status == "ok"

    def authorize(self, headers: Any, action: str) -> Principal:
        """The caller's principal, allowed to do ``action`` (401 / 403 otherwise)."""
        if not self.settings.auth:
            return ANONYMOUS
        token = token_from_headers(headers)
        if not token:
            raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer <key>)")
        principal = self.verifier(token)
        principal.require(action)
        return principal

    def lookup(self, name: str) -> Served:
        served = self.index.get(name)
        if served is None:
            entry = self.chat.index.get(name)
            if entry is not None:
                route = "/v1/chat/completions" if entry.plan.kind == "chat" else "/v1/embeddings"
                raise ApiError(400, "not_a_scenario_model", f"model {name!r} is a {entry.plan.kind} model; use {route}")
            raise ApiError(404, "not_found", f"model {name!r} is not served here; see GET /v1/models")
        return served

    def load(self) -> None:
        """Load and warm every model (runs in the inference thread)."""
        set_onnx_spinning(self.settings.ort_spinning)
        loaded = load_models(self.store, self.plans, self.settings.threads)
        if self.settings.warmup:
            for lm in loaded:
                lm.warmup()
        self._loaded = loaded
        self.chat.load()

    def start_runners(self) -> None:
        """Create a batcher per model on the running loop and build the name index."""
        s = self.settings
        for lm in self._loaded:
            plan = lm.plan
            label = plan.ref

            def on_batch(size: int, seconds: float, label: str = label) -> None:
                self.metrics.observe_batch(label, size, seconds)

            runner: MicroBatcher | DirectRunner
            if s.batching:
                runner = MicroBatcher(lm.infer, max_batch=s.max_batch, max_wait_ms=s.max_wait_ms,
                                      executor=self.executor, on_batch=on_batch, concurrency=s.concurrent_batches)
            else:
                runner = DirectRunner(lm.infer, executor=self.executor, on_batch=on_batch)
            runner.start()
            m, src = plan.model, plan.source
            names = {plan.ref, m.id, m.name, f"{m.name}:{m.version}", src.id, src.name, f"{src.name}:{src.version}"}
            self.served[plan.ref] = Served(plan, lm, runner, self.deployments.get(plan.ref), names)
        for key in ("ref", "id", "name"):  # exact refs first; other names only when unambiguous
            for served in self.served.values():
                cands = {"ref": [served.plan.ref], "id": [served.plan.model.id, served.plan.source.id],
                         "name": [served.plan.model.name, f"{served.plan.model.name}:{served.plan.model.version}"]}
                for cand in cands[key]:
                    self.index.setdefault(cand, served)
        self.chat.attach(self.deployments)
        if s.gc_freeze:
            # Everything loaded so far (models, libraries, modules) lives as long as the process: moved to
            # the permanent generation, it is no longer scanned by full collections, which otherwise stop
            # every thread for ~0.2 s every few seconds under load (measured with the ELPV bench model).
            gc.collect()
            gc.freeze()
        self.status = "ok"
        self.metrics.ready.set(1)

    async def stop_runners(self) -> None:
        for served in self.served.values():
            await served.runner.stop()
        if self.settings.gc_freeze:
            gc.unfreeze()  # an in-process server (tests, notebooks) leaves the collector as it found it
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.prep_executor.shutdown(wait=False, cancel_futures=True)
        self.chat.close()


async def load_in_background(state: ServeState) -> None:
    """Load models off the event loop; readiness flips once every model is warm."""
    try:
        await asyncio.get_running_loop().run_in_executor(state.executor, state.load)
        state.start_runners()
        log.info("ready: %s", ", ".join([*state.served, *state.chat.entries]))
    except Exception as exc:
        state.status = "failed"
        state.detail = f"{type(exc).__name__}: {exc}"
        log.exception("loading models failed")
