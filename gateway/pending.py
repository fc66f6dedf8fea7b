"""Ids accepted but not yet indexed or failed, bounded so a flood cannot exhaust memory."""

from __future__ import annotations

from collections import OrderedDict


class PendingSet:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, str | None] = OrderedDict()

    def add(self, image_id: str, source: str | None) -> None:
        self._items[image_id] = source
        self._items.move_to_end(image_id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def discard(self, image_id: str) -> None:
        self._items.pop(image_id, None)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._items

    def source(self, image_id: str) -> str | None:
        return self._items.get(image_id)

    def __len__(self) -> int:
        return len(self._items)
