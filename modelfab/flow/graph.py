"""Step ordering: ``needs:`` plus implicit edges from references; cycles are named."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modelfab.core.errors import ConfigError


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Steps in an order where each comes after its dependencies (ties keep the spec's order)."""
    order: list[str] = []
    done: set[str] = set()
    remaining = list(deps)
    while remaining:
        ready = [s for s in remaining if all(d in done for d in deps[s])]
        if not ready:
            cycle = find_cycle(deps, remaining)
            raise ConfigError(f"steps: cycle {' -> '.join(cycle)}")
        for s in ready:
            order.append(s)
            done.add(s)
        remaining = [s for s in remaining if s not in done]
    return order


def find_cycle(deps: Mapping[str, Sequence[str]], among: Sequence[str]) -> list[str]:
    """One dependency cycle among ``among``, as a closed path ``[a, b, a]``."""
    allowed = set(among)
    for start in among:
        path = [start]
        seen = {start}
        node = start
        while True:
            nxt = next((d for d in deps[node] if d in allowed), None)
            if nxt is None:
                break
            if nxt in seen:
                return [*path[path.index(nxt):], nxt]
            path.append(nxt)
            seen.add(nxt)
            node = nxt
    return list(among)


def downstream(deps: Mapping[str, Sequence[str]], roots: set[str]) -> set[str]:
    """Every step that depends (transitively) on one of ``roots``."""
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for step, ds in deps.items():
            if step not in out and any(d in roots or d in out for d in ds):
                out.add(step)
                changed = True
    return out
