"""Deterministic stratified splits.

An item's place depends only on (seed, item key), never on input order, so the same items give
the same split on any machine. Within each stratum, items are ordered by a keyed hash and cut
into the named parts by largest-remainder rounding of the ratios.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Hashable, Mapping

from modelfab.core.errors import ConfigError

OFFICIAL_RATIOS: dict[str, float] = {"train": 0.55, "val": 0.10, "calibration": 0.15, "test": 0.20}


def parse_ratios(text: str) -> dict[str, float]:
    """``"train=0.8,val=0.1,test=0.1"`` -> dict, validated."""
    ratios: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            ratios[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"ratios: expected name=fraction pairs, got {part!r}") from None
    return check_ratios(ratios)


def check_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    from modelfab.store.schema import SPLITS

    unknown = set(ratios) - set(SPLITS)
    if unknown:
        raise ConfigError(f"ratios: unknown split {sorted(unknown)}; use {', '.join(SPLITS)}")
    if any(v < 0 for v in ratios.values()) or abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ConfigError(f"ratios: must be non-negative and sum to 1, got {dict(ratios)}")
    return dict(ratios)


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def _cut(n: int, ratios: Mapping[str, float]) -> dict[str, int]:
    raw = {name: n * r for name, r in ratios.items()}
    counts = {name: int(v) for name, v in raw.items()}
    left = n - sum(counts.values())
    for name in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), list(ratios).index(k)))[:left]:
        counts[name] += 1
    return counts


def stratified_split(strata: Mapping[str, Hashable], ratios: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """Assign each key of ``strata`` (key -> stratum) to a split name, stratified and seeded."""
    ratios = check_ratios(ratios)
    groups: dict[str, list[str]] = defaultdict(list)
    for key, stratum in strata.items():
        groups[json.dumps(stratum, sort_keys=True, default=str)].append(key)
    out: dict[str, str] = {}
    for group in sorted(groups):
        keys = sorted(groups[group], key=lambda k: _rank(seed, k))
        start = 0
        for name, count in _cut(len(keys), ratios).items():
            for key in keys[start : start + count]:
                out[key] = name
            start += count
    return out


def split_hash(splits: Mapping[str, str]) -> str:
    """A short hash identifying a split assignment (recorded by every benchmark)."""
    payload = json.dumps(sorted(splits.items())).encode()
    return hashlib.sha256(payload).hexdigest()[:16]
