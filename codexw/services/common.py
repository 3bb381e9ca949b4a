"""What every command does first: open the registry and reconcile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from codexw.core.scheduler import reconcile
from codexw.core.store import Store


def open_store(reconcile_first: bool = True) -> Store:
    """Open the registry; by default mark vanished runners lost and fill free slots.

    The caller closes it (`with open_store() as store:`)."""
    store = Store.open()
    if reconcile_first:
        try:
            reconcile(store)
        except BaseException:
            store.close()
            raise
    return store


@contextmanager
def using_store(store: Store | None, reconcile_first: bool = True) -> Iterator[Store]:
    """The caller's `store` (left open: it is theirs), or one opened here and closed
    when the block ends."""
    if store is not None:
        yield store
        return
    with open_store(reconcile_first) as opened:
        yield opened
