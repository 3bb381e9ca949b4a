"""What every command does first: open the registry and reconcile."""

from __future__ import annotations

from codexw.core.scheduler import reconcile
from codexw.core.store import Store


def open_store(reconcile_first: bool = True) -> Store:
    """Open the registry; by default mark vanished runners lost and fill free slots."""
    store = Store.open()
    if reconcile_first:
        reconcile(store)
    return store
