"""A local stack starts with the library's per-container state empty, as a new deployment's execution environments
do: every stack's functions run in this one process, so what one stack cached must not reach the next."""

from __future__ import annotations

from prfleet.cost import circuit
from prfleet_local.stack.local_stack import LocalStack


class _NoDynamo:
    def get_item(self, **_kwargs):
        raise AssertionError("the cached state was used, not read")


def test_a_cached_open_circuit_does_not_outlive_its_stack():
    """Found when a test whose spend limit left the circuit open ran just before another: the next stack's jobs
    were all deferred by the cached state (same table name, read at most every 15 s)."""
    table = "prfleet-local-LedgerTable"
    circuit._cache[table] = (0.0, circuit.State(True, "spend limit reached"))
    assert circuit.read_cached(
        _NoDynamo(), table, clock=lambda: 1.0
    ).open  # within CACHE_S: the cache answers
    LocalStack._reset_library_caches()
    assert table not in circuit._cache
