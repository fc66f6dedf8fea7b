"""Typed application state: what the lifespan opens and the handlers use."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from aiohttp import web

from elastichash.index.base import Index
from elastichash.pipeline import Pipeline
from elastichash.priority import QueryFirst
from gateway.backpressure import BacklogGate
from gateway.config import GatewaySettings
from gateway.fetch import Fetcher
from gateway.metrics import Metrics
from gateway.pending import PendingSet


@dataclass
class Components:
    pipeline: Pipeline
    index: Index
    backend: str


ComponentsFactory = Callable[[GatewaySettings], AbstractAsyncContextManager[Components]]

SETTINGS = web.AppKey("settings", GatewaySettings)
COMPONENTS = web.AppKey("components", Components)
FETCHER = web.AppKey("fetcher", Fetcher)
METRICS = web.AppKey("metrics", Metrics)
PENDING = web.AppKey("pending", PendingSet)
BACKLOG = web.AppKey("backlog", BacklogGate)
QUERY_POOL = web.AppKey("query_pool", ThreadPoolExecutor)
SEARCHES = web.AppKey("searches", QueryFirst)  # searches in flight; uploads give way
