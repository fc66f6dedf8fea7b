#!/usr/bin/env python3
"""Container health check: exit 0 when the service in this container answers /healthz.

One image runs every role, and Docker's HEALTHCHECK cannot see which command the container
was started with, so this probes each known health port on the loopback interface: the
gateway (8080), the search service (8081) and the workers' health servers (9100 as the
deployment files set it; 9101 is the indexer's own default). Only one
service runs per container, so any 200 means that service is alive. Pass ports as arguments
to probe only those: ``eh-healthcheck 9100``.

Standard library only: slim images have no curl.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_PORTS = (8080, 8081, 9100, 9101)
TIMEOUT_S = 3.0


def alive(port: int, timeout_s: float = TIMEOUT_S) -> bool:
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ports = [int(a) for a in args] if args else list(DEFAULT_PORTS)
    for port in ports:
        if alive(port):
            return 0
    print(f"no /healthz answered 200 on ports {ports}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
