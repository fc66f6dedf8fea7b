"""Typed application keys."""

from __future__ import annotations

from aiohttp import web

from elastichash.index.base import Index
from elastichash.priority import QueryFirst
from search_service.config import SearchServiceSettings
from search_service.metrics import Metrics

INDEX_KEY = web.AppKey("index", Index)
SETTINGS_KEY = web.AppKey("settings", SearchServiceSettings)
METRICS_KEY = web.AppKey("metrics", Metrics)
SEARCHES_KEY = web.AppKey("searches", QueryFirst)  # searches in flight; writes give way
