"""The port for limit state: small JSON documents under a key, changed atomically.

One primitive serves every rule: read a key's state, let a pure function decide the new state
and an answer, store it, all in one atomic step, so that processes and function instances
sharing the store never both spend the same token.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# change(state, now) -> (new state or None to delete, answer). State is absent (None) when the
# key was never written or its expiry has passed. Returning the state unchanged writes nothing,
# so its expiry stays as it was.
Change = Callable[[dict | None, float], tuple[dict | None, Any]]


class LimitStore(abc.ABC):
    """Atomic read-modify-write of JSON states; adapters raise StoreUnavailable on outages.

    `expires_in` is an upper bound (seconds from now) on how long the new state matters; after
    it the state reads as absent and the adapter may drop it."""

    def update(
        self,
        key: str,
        change: Callable[[dict | None, float], tuple[dict | None, T]],
        *,
        expires_in: float,
    ) -> T:
        return self.update_many([(key, change, expires_in)])[0]

    @abc.abstractmethod
    def update_many(self, items: Sequence[tuple[str, Change, float]]) -> list[Any]:
        """Apply each (key, change, expires_in) in order; a key listed twice sees its first
        change's result. Returns each change's answer, in order."""

    def close(self) -> None:  # noqa: B027 - optional: not every adapter holds resources
        pass
