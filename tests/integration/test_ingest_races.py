"""Uploads of one image or one id that overlap: every acknowledged upload is answered for,
the latest one is what the index holds (also across a crash), and a full spool says so."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient

from elastichash.index.base import Document, WriteResult
from elastichash.index.embedded import EmbeddedIndex
from elastichash.model.encoder import Encoder
from elastichash.pipeline import IngestItem
from elastichash.settings import ImageLimits, ModelSettings, SpoolSettings
from elastichash.standalone import LocalPipeline
from gateway.state import COMPONENTS
from tests.imagegen import make_image
from tests.standalone import (
    ServeProcess,
    form_with_files,
    gateway_client,
    standalone_settings,
    wait_for,
    wait_indexed,
)

pytestmark = pytest.mark.timeout(180)


async def test_concurrent_uploads_of_one_image_are_all_accepted_and_leave_no_spool_file(
        client: TestClient, tmp_path: Path) -> None:
    data = make_image(11)

    async def upload(i: int) -> tuple[int, dict[str, Any]]:
        resp = await client.post("/v1/images", data=form_with_files(
            [(f"same{i}.jpg", data, "image/jpeg"), (f"other{i}.jpg", make_image(100 + i),
                                                     "image/jpeg")]))
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(upload(i) for i in range(40)))
    assert {status for status, _ in answers} == {202}, answers
    ids = {img["id"] for _, body in answers for img in body["images"]}
    assert len(ids) == 41  # the shared image once, plus each request's own
    statuses = await wait_indexed(client, sorted(ids))
    assert {s["status"] for s in statuses.values()} == {"indexed"}

    async def spool_empty() -> bool:
        return not list((tmp_path / "spool").glob("*"))

    await wait_for(spool_empty, 30, "the spool to empty")


async def test_concurrent_uploads_under_one_client_id_all_get_202_and_one_of_them_wins(
        client: TestClient) -> None:
    images = [make_image(200 + i) for i in range(30)]

    async def upload(data: bytes) -> int:
        resp = await client.post("/v1/images", data=form_with_files(
            [("x.jpg", data, "image/jpeg")], id="shared-id"))
        return resp.status

    assert set(await asyncio.gather(*(upload(d) for d in images))) == {202}
    final = await wait_indexed(client, ["shared-id"])
    assert final["shared-id"]["status"] == "indexed"
    # The status settles: nothing of the id stays queued for ever.
    resp = await client.post("/v1/search", json={"id": "shared-id", "k": 1})
    assert resp.status == 200


class GatedIndex(EmbeddedIndex):
    """A real embedded index whose writes wait for the test to let each one through."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gates: list[asyncio.Event] = []
        self.calls = 0
        self.written = 0

    async def upsert(self, docs: Any) -> list[WriteResult]:
        self.calls += 1
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        out = await super().upsert(docs)
        self.written += 1
        return out


async def test_a_reupload_under_the_same_id_survives_the_first_being_indexed_then_a_crash(
        tmp_path: Path, model_path: Path) -> None:
    encoder = await asyncio.to_thread(Encoder.load, ModelSettings(path=model_path),
                                      ImageLimits())
    older, newer = make_image(301), make_image(302)
    [enc_old, enc_new] = await encoder.aencode([older, newer])
    assert not isinstance(enc_new, Exception)
    assert not isinstance(enc_old, Exception)
    spool = tmp_path / "spool"

    index = GatedIndex(tmp_path / "index")
    await index.open()
    first = LocalPipeline(encoder, index, spool, batch_ms=0)
    await first.start()
    await first.submit([IngestItem("photo", older, "old.jpg")])
    await wait_for(lambda: _true(index.calls == 1), 30, "the first write to start")
    await first.submit([IngestItem("photo", newer, "new.jpg")])  # acknowledged: a 202
    index.gates[0].set()  # the older upload is written, its spool file removed
    await wait_for(lambda: _true(index.written == 1), 30, "the first write to finish")
    # The process dies here: the newer upload's write never happens.
    for task in first._tasks:
        task.cancel()
    await asyncio.gather(*first._tasks, return_exceptions=True)
    await EmbeddedIndex.close(index)

    index2 = EmbeddedIndex(tmp_path / "index")
    await index2.open()
    restarted = LocalPipeline(encoder, index2, spool)
    await restarted.start()
    try:
        await asyncio.wait_for(restarted.drained(), 60)
        doc = await index2.get("photo")
        assert doc is not None
        assert (doc.code, doc.source) == (enc_new.code, "new.jpg")
        assert list(spool.glob("*")) == []
    finally:
        await restarted.stop()
        await index2.close()


async def _true(value: bool) -> bool:
    return value


async def test_an_older_upload_still_waiting_is_never_written_over_a_newer_one(
        tmp_path: Path, model_path: Path) -> None:
    encoder = await asyncio.to_thread(Encoder.load, ModelSettings(path=model_path),
                                      ImageLimits())
    spool = tmp_path / "spool"
    index = EmbeddedIndex(tmp_path / "index")
    await index.open()
    crashed = LocalPipeline(encoder, index, spool)  # never started: both wait in the spool
    await crashed.submit([IngestItem("p", make_image(401), "first.jpg")])
    await crashed.submit([IngestItem("p", make_image(402), "second.jpg")])
    await crashed.submit([IngestItem("p", make_image(403), "third.jpg")])
    assert len(list(spool.glob("*.img"))) == 3
    restarted = LocalPipeline(encoder, index, spool, batch_size=1)
    await restarted.start()
    try:
        await asyncio.wait_for(restarted.drained(), 60)
        doc = await index.get("p")
        assert doc is not None
        assert doc.source == "third.jpg"
        assert restarted.counts["superseded"] == 2
    finally:
        await restarted.stop()
        await index.close()


def test_a_reupload_acknowledged_before_sigkill_wins_after_restart(
        tmp_path: Path, model_path: Path) -> None:
    older, newer = make_image(501, size=(320, 240)), make_image(502, size=(320, 240))
    proc = ServeProcess(tmp_path / "d", model_path).start()
    try:
        for name, data in (("old.jpg", older), ("new.jpg", newer)):
            resp = requests.post(f"{proc.base}/v1/images", timeout=30,
                                 files=[("id", (None, "photo")),
                                        ("file", (name, data, "image/jpeg"))])
            assert resp.status_code == 202, resp.text
    finally:
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait(30)
    proc = ServeProcess(tmp_path / "d", model_path).start()
    try:
        status = _wait_status(proc.base, "photo")
        assert status["status"] == "indexed", status
        assert status["source"] == "new.jpg", status
        top = requests.post(f"{proc.base}/v1/search", timeout=30, data={"k": "1"},
                            files=[("file", ("q.jpg", newer, "image/jpeg"))]).json()
        assert (top["results"][0]["id"], top["results"][0]["distance"]) == ("photo", 0)
    finally:
        assert proc.stop() == 0


def _wait_status(base: str, image_id: str, within_s: float = 60.0) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + within_s
    while True:
        resp = requests.get(f"{base}/v1/images/{image_id}", timeout=10)
        body: dict[str, Any] = resp.json()
        if resp.status_code == 200 and body["status"] in ("indexed", "failed"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


async def test_a_full_spool_answers_503_with_retry_after_and_spools_nothing(
        tmp_path: Path, model_path: Path) -> None:
    settings = standalone_settings(tmp_path, model_path,
                                   spool=SpoolSettings(max_bytes=1))
    async with gateway_client(settings, tmp_path) as client:
        resp = await client.post("/v1/images", data=form_with_files(
            [("a.jpg", make_image(601), "image/jpeg")]))
        body = await resp.json()
        assert resp.status == 503, body
        assert resp.headers["Retry-After"] == "5"
        assert "spool" in body["error"]["message"]
        assert body["errors"][0]["filename"] == "a.jpg"
        assert [p for p in (tmp_path / "spool").glob("*") if p.is_file()] == []


async def test_a_later_group_refused_by_the_spool_still_answers_for_the_earlier_ones(
        tmp_path: Path, model_path: Path) -> None:
    files = [(f"g{i}.jpg", make_image(700 + i), "image/jpeg") for i in range(40)]
    first_group = sum(len(d) for _, d, _ in files[:32])
    settings = standalone_settings(tmp_path, model_path,
                                   spool=SpoolSettings(max_bytes=first_group + 10))
    async with gateway_client(settings, tmp_path) as client:
        # Keep the worker from draining the spool meanwhile: the cap must be hit.
        gate = asyncio.Event()
        index = client.app[COMPONENTS].index
        real = index.upsert

        async def held(docs: list[Document]) -> list[WriteResult]:
            await gate.wait()
            return await real(docs)

        index.upsert = held  # type: ignore[method-assign]
        try:
            resp = await client.post("/v1/images", data=form_with_files(files))
            body = await resp.json()
        finally:
            gate.set()
        assert resp.status == 202, body
        assert len(body["images"]) == 32
        assert [e["filename"] for e in body["errors"]] == [f"g{i}.jpg" for i in range(32, 40)]
        assert {e["code"] for e in body["errors"]} == {"unavailable"}
        statuses = await wait_indexed(client, [i["id"] for i in body["images"]])
        assert {s["status"] for s in statuses.values()} == {"indexed"}
