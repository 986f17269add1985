"""Subprocess entry of the latency profiler: ``python -m modelfab.compress.profile_worker`` < job JSON.

Reads one JSON job on stdin (store location, model id, runtime, batch sizes, threads, repeats,
warm-up), prints one JSON list of timings on the last stdout line. Errors go to stderr, exit 1.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path


def main() -> int:
    job = json.loads(sys.stdin.read())
    import torch

    torch.set_num_threads(int(job["threads"]))
    import onnxruntime  # noqa: F401  - imported before the baseline so both runtimes start equal

    from modelfab.compress.profile import _rss_mb, time_predictor
    from modelfab.compress.runtimes import load_predictor
    from modelfab.core.config import Settings
    from modelfab.core.errors import ModelfabError
    from modelfab.store.store import Store

    baseline = _rss_mb()
    store = Store(Settings(home=Path(job["home"]), db_url=job["db"], artifacts_url=job["artifacts"]))
    try:
        predictor = load_predictor(store, job["model"], job["runtime"], int(job["threads"]))
        timings = time_predictor(predictor, job["batches"], int(job["repeats"]), int(job["warmup"]), baseline)
    except ModelfabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps([asdict(t) for t in timings]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
