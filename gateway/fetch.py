"""Fetch images from user-given URLs without becoming a proxy into the private network.

Every hop is checked: the literal host of each URL (redirects are followed by hand, so each
``Location`` is checked before it is requested) and every address a name resolves to (a
resolver that refuses forbidden addresses, so a DNS answer cannot smuggle in a private
target, and the connection goes to the address that was checked). Time and size are capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from elastichash.errors import (
    ElasticHashError,
    ForbiddenTarget,
    InvalidInput,
    PayloadTooLarge,
    Unavailable,
)
from gateway.config import FetchSettings

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges some Python versions' ipaddress does not flag (fixed upstream after 3.11.7:
# CVE-2024-4032): IETF protocol assignments, shared address space (CGNAT), "this network".
ALWAYS_BLOCKED = [ipaddress.ip_network(n) for n in (
    "192.0.0.0/24", "100.64.0.0/10", "0.0.0.0/8", "198.18.0.0/15", "fc00::/7", "fe80::/10",
)]


def is_forbidden(addr: IPAddress, settings: FetchSettings) -> bool:
    if any(addr in net for net in settings.allow_networks):
        return False
    if any(addr in net for net in ALWAYS_BLOCKED):
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address: judge the address they lead to.
        embedded = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if embedded is not None:
            return is_forbidden(embedded, settings) or not addr.is_global
        if addr.is_site_local:
            return True
    return (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global
    )


class GuardedResolver(AbstractResolver):
    """Resolves names and refuses the answer if any address is forbidden."""

    def __init__(self, settings: FetchSettings) -> None:
        self._inner = DefaultResolver()
        self._settings = settings

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for r in results:
            if is_forbidden(ipaddress.ip_address(r["host"]), self._settings):
                raise ForbiddenTarget(f"{host} resolves to a forbidden address {r['host']}")
        return results

    async def close(self) -> None:
        await self._inner.close()


def _short(url: str) -> str:
    return url if len(url) <= 200 else f"{url[:120]}...{url[-40:]}"


def check_host_name(host: str, url: str) -> None:
    """Refuse a host name that no resolver can take, naming the URL: the same IDNA encoding
    the resolver would do (which raises on a label over 63 characters or an empty one), and
    DNS's length and character rules."""
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii")
    except (UnicodeError, ValueError) as exc:
        raise InvalidInput(f"malformed host name in {_short(url)}: {exc}", field="url") from None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or any(not 0 < len(lab) <= 63 for lab in labels):
        raise InvalidInput(f"malformed host name in {_short(url)}: a DNS name has labels of "
                           "1-63 characters and at most 253 in all", field="url")
    if not all(_HOST_LABEL.fullmatch(lab) for lab in labels):
        raise InvalidInput(f"malformed host name in {_short(url)}: letters, digits and "
                           "'-' only", field="url")


# Underscores occur in real host names (though not in DNS's grammar); resolvers take them.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")


def check_url(url: str, settings: FetchSettings) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a port that is not a number in range)
    except ValueError as exc:
        raise InvalidInput(f"malformed URL {_short(url)}: {exc}", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(f"only http and https URLs can be fetched, not {parts.scheme!r}",
                           field="url")
    if not host:
        raise InvalidInput(f"URL {_short(url)} has no host", field="url")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        check_host_name(host, url)
        if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
            ".localhost"
        ):
            # Named loopback: refused unless loopback is explicitly allowed.
            addr = ipaddress.ip_address("127.0.0.1")
        else:
            return url
    if is_forbidden(addr, settings):
        raise ForbiddenTarget(f"refusing to fetch from {host}: private, loopback or "
                              "link-local address")
    return url


class FairSlots:
    """``total`` slots, of which one client holds at most ``per_client``: a client over its
    share waits on its own queue and never delays the others."""

    def __init__(self, total: int, per_client: int) -> None:
        self._total = asyncio.Semaphore(total)
        self._per_client = max(1, per_client)
        self._clients: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, client: str) -> AsyncIterator[None]:
        sem, users = self._clients.get(client, (asyncio.Semaphore(self._per_client), 0))
        self._clients[client] = (sem, users + 1)
        try:
            async with sem, self._total:
                yield
        finally:
            sem, users = self._clients[client]
            if users <= 1:
                del self._clients[client]
            else:
                self._clients[client] = (sem, users - 1)


class Fetcher:
    """One shared client session; constructed without I/O, opened in the app lifespan."""

    def __init__(self, settings: FetchSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._slots = FairSlots(settings.slots, settings.per_client)

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._settings),
                                         limit=self._settings.slots)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self._settings.user_agent},
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, url: str, client: str = "") -> bytes:
        """The image at ``url``. ``client`` names who asked, for the fair share of slots; the
        wait for a slot is bounded like the fetch itself (then 503)."""
        assert self._session is not None, "Fetcher.open() was not called"
        check_url(url, self._settings)
        wait = self._settings.timeout_s
        async with contextlib.AsyncExitStack() as held:
            try:
                async with asyncio.timeout(wait):
                    await held.enter_async_context(self._slots.slot(client))
            except TimeoutError:
                raise Unavailable(f"all URL fetch slots were busy for {wait:g} s",
                                  retry_after=wait) from None
            return await self._fetch(url)

    async def _fetch(self, url: str) -> bytes:
        assert self._session is not None
        current = check_url(url, self._settings)
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                for _ in range(self._settings.max_redirects + 1):
                    async with self._session.get(current, allow_redirects=False) as resp:
                        if resp.status in (301, 302, 303, 307, 308):
                            location = resp.headers.get("Location")
                            if not location:
                                raise InvalidInput(f"redirect without Location from {current}",
                                                   field="url")
                            current = check_url(urljoin(current, location), self._settings)
                            continue
                        if resp.status != 200:
                            raise InvalidInput(f"fetching {current} gave HTTP {resp.status}",
                                               field="url")
                        return await self._read_capped(resp)
                raise InvalidInput(f"too many redirects fetching {url}", field="url")
        except TimeoutError:
            raise InvalidInput(
                f"fetching {url} took longer than {self._settings.timeout_s:g} s", field="url"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            cause: Any = exc.__cause__ or exc.os_error
            if isinstance(cause, ForbiddenTarget):
                raise cause from None
            raise InvalidInput(f"cannot connect to {url}: {exc.os_error}", field="url") from None
        except ElasticHashError:
            raise
        except (UnicodeError, ValueError) as exc:
            # A URL or redirect target the HTTP client cannot encode: the client's input.
            raise InvalidInput(f"malformed URL {_short(current)}: {exc}", field="url") from None
        except aiohttp.ClientError as exc:
            raise InvalidInput(f"fetching {url} failed: {exc}", field="url") from None
        except OSError as exc:  # pragma: no cover - defensive
            raise Unavailable(f"fetching {url} failed: {exc}") from None

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self._settings.max_bytes
        declared = resp.content_length
        if declared is not None and declared > cap:
            raise PayloadTooLarge(f"remote image is {declared} bytes; the limit is {cap}")
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            buf += chunk
            if len(buf) > cap:
                raise PayloadTooLarge(f"remote image exceeds the limit of {cap} bytes")
        return bytes(buf)
