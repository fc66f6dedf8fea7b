"""Ids accepted but not yet indexed or failed, bounded so a flood cannot exhaust memory."""

from __future__ import annotations

import time
from collections import OrderedDict


class PendingSet:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    def add(self, image_id: str, source: str | None) -> None:
        self._items[image_id] = (source, time.time())
        self._items.move_to_end(image_id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def discard(self, image_id: str) -> None:
        self._items.pop(image_id, None)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._items

    def source(self, image_id: str) -> str | None:
        entry = self._items.get(image_id)
        return entry[0] if entry else None

    def submitted_at(self, image_id: str) -> float | None:
        entry = self._items.get(image_id)
        return entry[1] if entry else None

    def __len__(self) -> int:
        return len(self._items)
