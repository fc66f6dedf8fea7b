"""What the four distributed roles (``gateway``, ``encoder-worker``, ``indexer-worker``,
``search-service``) share at their edge: the command line, settings built once, logging, and
start-up failures reported as one line with a documented exit status.

Exit statuses (the same for every role; DEPLOY.md and MESSAGING.md quote this table):

* 0 - stopped cleanly (SIGTERM / SIGINT, drained);
* 1 - an unexpected error: a bug, reported with its traceback;
* 2 - a dependency cannot be reached at start (broker, search service, engine) or the port is
  taken: restarting later may work, so an orchestrator should restart it;
* 3 - a setting is refused (an invalid value, queue arguments that differ from the broker's,
  a model that breaks the contract): restarting will not help until the setting changes.

``--check`` (queue workers) exits 0 when the running worker's ``/readyz`` answers 200, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
import textwrap
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic_settings import BaseSettings

from elastichash.errors import ConfigError, ElasticHashError, ModelContractError, Unavailable
from elastichash.settings import port_number

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 2
EXIT_CONFIG = 3

EXIT_STATUS_HELP = (
    "Exit status: 0 stopped cleanly; 1 unexpected error (a bug, with a traceback); "
    "2 a dependency (broker, search service, engine) unreachable at start or the port taken: "
    "restart later; 3 a setting refused (invalid value, queue arguments that differ, a model "
    "that breaks the contract): fix the setting."
)


@dataclass(frozen=True)
class Role:
    command: str  # as in ``elastichash <command>``
    summary: str  # one line, for ``elastichash --help``
    description: str  # full sentences, for ``elastichash <command> --help``
    env_prefix: str  # ``EH_GATEWAY_``
    settings: type[BaseSettings]
    example_setting: str  # a nested setting to show in the help: ``AMQP__URL``
    # What the unprefixed ELASTICHASH_DATA decides for this role, in a sentence.
    data_note: str
    worker: bool = False  # a queue worker: its port is the health port; it has --check

    @property
    def host_field(self) -> str:
        return "health_host" if self.worker else "host"

    @property
    def port_field(self) -> str:
        return "health_port" if self.worker else "port"

    def setting(self, field: str) -> str:
        """The environment variable of a dotted setting: ``amqp.url`` -> ``EH_X_AMQP__URL``."""
        return self.env_prefix + field.upper().replace(".", "__")

    def epilog(self) -> str:
        p = self.env_prefix
        paragraphs = [
            f"Settings come from {p}* environment variables, nested groups joined by '__' "
            f"(for example {p}{self.example_setting}); options given here override them.",
            "ELASTICHASH_DATA (unprefixed; default ~/.local/share/elastichash) is the data "
            f"directory. {self.data_note}",
            EXIT_STATUS_HELP,
        ]
        return "\n\n".join(textwrap.fill(text, 79) for text in paragraphs)

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=f"elastichash {self.command}",
            description=textwrap.fill(self.description, 79),
            epilog=self.epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        what = "health and metrics" if self.worker else "HTTP"
        parser.add_argument("--host", help=f"{what} bind address ({self.setting(self.host_field)})")
        parser.add_argument(
            "--port", type=port_number, help=f"{what} port ({self.setting(self.port_field)})"
        )
        if self.worker:
            parser.add_argument(
                "--check",
                action="store_true",
                help="probe the running worker's /readyz on --port; exit 0 if ready, 1 if not",
            )
        return parser


Start = Callable[[Any], "int | Coroutine[Any, Any, int | None] | None"]


def run_role(
    role: Role,
    argv: list[str] | None,
    start: Start,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    apply: Callable[[argparse.Namespace, Any], None] | None = None,
) -> int:
    """Parse the command line, build the settings once, then run ``start(settings)`` (a
    function or a coroutine function); start-up failures become one line and a status."""
    parser = role.parser()
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = role.settings()
    except pydantic.ValidationError as exc:
        return _refused(role, EXIT_CONFIG, _validation_line(role, exc))
    if args.host:
        setattr(settings, role.host_field, args.host)
    if args.port:
        setattr(settings, role.port_field, args.port)
    if apply is not None:
        apply(args, settings)
    if getattr(args, "check", False):
        from elastichash.health import check

        return check(getattr(settings, role.port_field))
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        started = start(settings)
        result = started if started is None or isinstance(started, int) else asyncio.run(started)
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        failure = startup_failure(role, exc, port=getattr(settings, role.port_field, None))
        if failure is None:
            raise
        return _refused(role, *failure)
    return int(result or 0)


def startup_failure(
    role: Role, exc: BaseException, port: int | None = None
) -> tuple[int, str] | None:
    """(exit status, one line) for a failure an operator can act on; None for a bug."""
    if isinstance(exc, ConfigError | ModelContractError):
        return EXIT_CONFIG, _with_setting(role, exc)
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE, _with_setting(role, exc)
    if isinstance(exc, ElasticHashError):
        return EXIT_CONFIG, _with_setting(role, exc)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return EXIT_UNAVAILABLE, (
            f"port {port} is in use: stop what holds it or choose another with --port "
            f"or {role.setting(role.port_field)}"
        )
    if isinstance(exc, pydantic.ValidationError):
        return EXIT_CONFIG, _validation_line(role, exc)
    return None


def _with_setting(role: Role, exc: ElasticHashError) -> str:
    if exc.field:
        return f"{exc.message} (setting {role.setting(exc.field)})"
    return exc.message


def _validation_line(role: Role, exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{role.setting(where) if where else role.env_prefix + '*'}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)


def _refused(role: Role, status: int, line: str) -> int:
    print(f"elastichash {role.command}: cannot start: {line}", file=sys.stderr, flush=True)
    return status
