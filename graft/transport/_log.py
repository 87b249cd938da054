"""The transport's logger and its warn-once latch."""

from __future__ import annotations

import logging

logger = logging.getLogger("graft.transport")


class WarnOnce:
    """Logs a WARNING the first time a key is seen, and at DEBUG after that.

    Refusals repeat at every reconnection attempt of a misconfigured peer; the operator needs
    the first one, not one per second. The set of keys is bounded because keys can come from
    the network (a claimed node id): past `limit` keys it starts over, so a flood of distinct
    ids costs at most one warning per key per `limit` distinct keys.
    """

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int = 1024) -> None:
        self._seen: set[tuple[str, ...]] = set()
        self._limit = limit

    def warning(self, key: tuple[str, ...], message: str, *args: object) -> None:
        if key in self._seen:
            logger.debug(message, *args)
            return
        if len(self._seen) >= self._limit:
            self._seen.clear()
        self._seen.add(key)
        logger.warning(message, *args)

    def forget_prefix(self, prefix: tuple[str, ...]) -> None:
        """Warn again next time for keys starting with `prefix`: the condition was resolved
        (e.g. the peer that refused us has accepted us since)."""
        size = len(prefix)
        self._seen = {key for key in self._seen if key[:size] != prefix}
