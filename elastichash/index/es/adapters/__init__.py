"""One adapter per engine: :class:`~elastichash.index.es.client.EngineClient` over that
engine's Python client, with its exceptions translated. Imported lazily by
:func:`~elastichash.index.es.client.connect`."""
