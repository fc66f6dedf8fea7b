"""The encoder worker leaves room for queries: its ingest threads are bounded and run at a
lower CPU priority, and those settings reach onnxruntime and the kernel, not just the config."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from elastichash.ids import content_id
from elastichash.model.default import build_default
from elastichash.pipeline import IngestItem
from elastichash.settings import ModelSettings
from encoder_worker import config
from encoder_worker.config import EncoderWorkerSettings
from encoder_worker.worker import EncoderWorker, _load_encoders
from tests.distributed_fixtures import Cluster, cluster_factory, model_file, publish, wait_for
from tests.imagegen import make_image

__all__ = ["cluster_factory", "model_file"]  # fixtures used from this module

Factory = Callable[[str, str], Cluster]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "default.onnx"
    build_default(path)
    return path


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


def _task_stats(pid: int) -> dict[int, tuple[int, int]]:
    """Each live thread of ``pid``: (nice value, CPU ticks used so far)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[16]), int(fields[11]) + int(fields[12]))
    return out


@pytest.mark.rabbitmq
@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_a_worker_started_with_ingest_nice_encodes_its_backlog_at_that_niceness(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Factory
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    backlog = []
    for seed in range(300):
        data = make_image(70_000 + seed, size=(320, 240))
        backlog.append(IngestItem(id=content_id(data), data=data, content_type="image/jpeg"))
    await publish(rabbitmq_url, amqp_prefix, backlog)
    encoder = c.encoder(batch_max=16, prefetch=64, EH_ENCODER_INGEST_NICE="7")
    await c.ready(encoder)
    pid = encoder.proc.pid

    async def encoded(n: int) -> bool:
        return await encoder.metric("eh_encoder_encoded_total") >= n

    await wait_for(lambda: encoded(20), 60, "the first batches")
    before = _task_stats(pid)
    await wait_for(lambda: encoded(200), 120, "200 images encoded")
    after = _task_stats(pid)

    assert after[pid][0] == 0, "the main thread (the event loop, queries) keeps its priority"
    assert {nice for nice, _ in after.values()} <= {0, 7}
    used = {nice: 0 for nice in (0, 7)}
    for tid, (nice, ticks) in after.items():
        used[nice] += ticks - before.get(tid, (nice, 0))[1]
    # Decoding and inference (all but the broker I/O) ran on the lowered threads.
    assert used[7] > 2 * used[0], used
