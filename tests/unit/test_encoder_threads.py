"""The encoder worker leaves room for queries: its ingest threads are bounded, and the bounds
reach onnxruntime's sessions, not just the settings (the niceness: integration/
test_encoder_nice.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from elastichash.settings import ModelSettings
from encoder_worker import config
from encoder_worker.config import EncoderWorkerSettings
from encoder_worker.worker import EncoderWorker, _load_encoders


def _threads(encoder: object) -> tuple[int, int]:
    """(onnxruntime intra-op threads of the encoder's session, its decode workers)."""
    session = encoder.model._session  # type: ignore[attr-defined]
    return session.get_session_options().intra_op_num_threads, encoder._workers  # type: ignore[attr-defined]


@pytest.fixture
def loaded(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[object, object]]]:
    """Load a worker's two encoders as it does at start-up, on a machine of 4 cores."""
    monkeypatch.setattr(config, "usable_cores", lambda: 4)
    made: list[object] = []

    def load(model: ModelSettings | None = None, **settings: object) -> tuple[object, object]:
        s = EncoderWorkerSettings(
            model=model or ModelSettings(path=model_path), **settings  # type: ignore[arg-type]
        )
        pair = _load_encoders(s)
        made.extend(pair)
        return pair

    yield load
    for enc in made:
        enc.close()  # type: ignore[attr-defined]


def test_the_ingest_session_leaves_one_core_free_by_default_and_queries_have_their_own(
    loaded: Callable[..., tuple[object, object]],
) -> None:
    ingest, query = loaded()
    assert _threads(ingest) == (3, 3)
    assert query is not ingest
    assert _threads(query) == (1, 1)


def test_ingest_threads_bound_inference_and_decoding_unless_the_model_settings_say(
    loaded: Callable[..., tuple[object, object]], model_path: Path
) -> None:
    ingest, query = loaded(ingest_threads=2, rpc_threads=2)
    assert _threads(ingest) == (2, 2)
    assert _threads(query) == (2, 1)
    # An explicit model setting wins for its own part.
    ingest, _ = loaded(ModelSettings(path=model_path, intra_op_threads=1), ingest_threads=2)
    assert _threads(ingest) == (1, 2)


def test_batches_encoded_at_once_are_bounded_by_the_ingest_threads(model_path: Path) -> None:
    wide = EncoderWorkerSettings(ingest_threads=4, batch_max=8)
    wide.amqp.prefetch = 128
    narrow = wide.model_copy(update={"ingest_threads": 1})
    assert EncoderWorker(wide, None).parallel == 4
    assert EncoderWorker(narrow, None).parallel == 1
