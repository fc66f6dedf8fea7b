"""Fault injection, driven from the test process (another thread): item rejections, whole-
request failures, delays (client timeouts) and outages (connections dropped)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

ERROR_TYPES = {
    429: ("es_rejected_execution_exception",
          "rejected execution of coordinating operation [shard_detail=[test]]"),
    500: ("exception", "injected internal failure"),
    502: ("exception", "injected bad gateway"),
    503: ("unavailable_shards_exception", "[test][0] primary shard is not active"),
    504: ("process_cluster_event_timeout_exception", "injected timeout"),
}


@dataclass
class RequestFault:
    path: re.Pattern[str] | None
    method: str | None
    status: int = 0  # 0: no status fault
    delay_s: float = 0.0
    times: int | None = None  # None: until cleared

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or bool(self.path.search(path))
        )


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, list[int]] = {}
        self._requests: list[RequestFault] = []
        self.outage = False
        # bulk attempts seen per (concrete index, _id), for assertions
        self.item_attempts: dict[tuple[str, str], int] = {}

    def reject_items(self, ids: list[str], status: int = 429, times: int = 1) -> None:
        """The next ``times`` bulk attempts of each id fail with ``status``."""
        with self._lock:
            for i in ids:
                self._items.setdefault(i, []).extend([status] * times)

    def fail_requests(self, status: int, *, path: str | None = None,
                      method: str | None = None, times: int | None = None) -> None:
        with self._lock:
            self._requests.append(RequestFault(re.compile(path) if path else None, method,
                                               status=status, times=times))

    def delay(self, seconds: float, *, path: str | None = None, method: str | None = None,
              times: int | None = None) -> None:
        with self._lock:
            self._requests.append(RequestFault(re.compile(path) if path else None, method,
                                               delay_s=seconds, times=times))

    def set_outage(self, on: bool) -> None:
        self.outage = on

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._requests.clear()
            self.item_attempts.clear()
            self.outage = False

    def take_item(self, index: str, doc_id: str) -> int | None:
        with self._lock:
            key = (index, doc_id)
            self.item_attempts[key] = self.item_attempts.get(key, 0) + 1
            queue = self._items.get(doc_id)
            if not queue:
                return None
            status = queue.pop(0)
            if not queue:
                del self._items[doc_id]
            return status

    def take_request(self, method: str, path: str) -> RequestFault | None:
        with self._lock:
            for fault in self._requests:
                if fault.matches(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._requests.remove(fault)
                    return fault
        return None
