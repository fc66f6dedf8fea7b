"""The ``elastichash`` command: the one composition root.

One module per verb group registers its commands through ``register(subparsers)``:
``cli/model.py`` (model ..., encode), ``cli/import_codes.py`` (import-codes),
``cli/standalone.py`` (serve, index, search); the roles (gateway, workers, search service)
are listed in ``ROLES`` here. Services are imported lazily, inside the subcommand that runs
them, so that ``elastichash model inspect`` never imports aiohttp or aio-pika.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from elastichash.settings import IndexSettings, RemoteIndexSettings

Handler = Callable[[argparse.Namespace], int]


def _service(module: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        import importlib

        mod = importlib.import_module(module)
        rc: int | None = mod.main(list(args.rest))
        return rc or 0

    return run


def _serve(args: argparse.Namespace) -> int:
    """Standalone mode: the gateway app over an in-process pipeline and embedded index."""
    import asyncio
    import contextlib
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from elastichash import datalock
    from elastichash.cli.standalone import (
        data_dir,
        index_settings,
        model_settings,
        open_local,
    )
    from elastichash.folder import ingest_folder
    from elastichash.roles import EXIT_UNAVAILABLE
    from elastichash.serving.server import PortInUse
    from elastichash.serving.server import run as run_server
    from gateway.app import create_app
    from gateway.config import GatewaySettings
    from gateway.state import Components

    if args.images is not None and not args.images.is_dir():
        print(f"error: --images {args.images} is not a folder", file=sys.stderr)
        return 2
    settings = GatewaySettings(mode="standalone", host=args.host, port=args.port)
    if args.api_keys:
        settings.api_keys = list(args.api_keys)
    settings.model = model_settings(args, settings.model)
    settings.index = RemoteIndexSettings.model_validate(
        index_settings(args, IndexSettings(strategy=settings.index.strategy)).model_dump())
    spool = data_dir(args) / "spool"
    log = logging.getLogger("elastichash.serve")

    @asynccontextmanager
    async def components(cfg: GatewaySettings) -> AsyncIterator[Components]:
        async with open_local(cfg.model, cfg.limits, cfg.index, spool, cfg.spool,
                              cfg.preview_px) as local:
            task = None
            if args.images is not None:

                async def index_folder() -> None:
                    try:
                        report = await ingest_folder(local.pipeline, local.index, args.images,
                                                     limits=cfg.limits)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("indexing folder %s stopped", args.images)
                    else:
                        for line in report.failure_lines():
                            log.warning("folder %s: %s", args.images, line)
                        log.info("folder %s: %s", args.images, report.summary())

                task = asyncio.create_task(index_folder())
            try:
                yield Components(local.pipeline, local.index, "embedded")
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    app = create_app(settings, components)

    def announce(url: str) -> None:
        print(f"elastichash: serving {url} (data in {data_dir(args)})", file=sys.stderr,
              flush=True)

    shown = f"[{args.host}]" if ":" in args.host else args.host
    try:
        with datalock.hold(data_dir(args), "serve", f"http://{shown}:{args.port}/"):
            run_server(app, args.host, args.port, settings.server,
                       shutdown_timeout=settings.shutdown_timeout_s, announce=announce)
    except datalock.DataDirBusy as exc:
        print(f"error: {exc}; one server per data directory (choose another with --data)",
              file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    except PortInUse as exc:
        print(f"error: {exc}{port_hint(args.port)}", file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    return 0


def port_hint(port: int) -> str:
    other = 9000 if port != 9000 else 9001
    if os.environ.get("MAKELEVEL"):  # started by `make run`
        return f"; try `make run PORT={other}`"
    return f"; try `--port {other}`"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elastichash",
        description="Semantic image similarity search over binary hash codes.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging: -v progress (INFO), -vv debugging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from elastichash.cli import model as model_commands

    model_commands.register(sub)

    from elastichash.cli import import_codes as index_commands

    index_commands.register(sub)

    from elastichash.cli import reindex

    reindex.register(sub)

    from elastichash.cli import standalone as standalone_commands

    standalone_commands.register(sub, serve=_serve)

    for name, (module, help_text) in ROLES.items():
        # The role parses its own arguments (main() hands it everything after its name), so
        # that `elastichash gateway --help` is the role's help and its service is imported
        # only when it runs.
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.set_defaults(func=_service(module), rest=[])
    return parser


# command -> (module with main(argv) and ROLE, one-line help)
ROLES = {
    "gateway": ("gateway.app", "run the REST gateway (distributed mode)"),
    "encoder-worker": ("encoder_worker.worker", "run an encoder worker"),
    "indexer-worker": ("indexer_worker.worker", "run an indexer worker"),
    "search-service": ("search_service.app", "run the search service"),
}


def configure_logging(verbose: int, *, service: bool) -> None:
    """Commands a person runs are quiet by default: warnings and errors, plus the summary
    lines written for them (logger ``elastichash.serve``); ``-v`` shows INFO, ``-vv`` DEBUG.
    The roles are services and log INFO, as operators expect of them."""
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1 or service:
        level = logging.INFO
    else:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("elastichash.serve").setLevel(min(level, logging.INFO))
    if verbose < 2:
        # faiss's loader logs each instruction set it probes, failures included
        # ("ModuleNotFoundError"), at INFO: lines that read like errors and are not.
        logging.getLogger("faiss").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if args.command in ROLES:
        # Not argparse.REMAINDER: it refuses a first argument that looks like an option
        # ("unrecognized arguments: --help").
        args.rest = argv[argv.index(args.command) + 1 :]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.verbose, service=args.command in ROLES)
    func: Handler = args.func
    from elastichash.errors import ModelContractError, ModelMismatch

    try:
        return func(args)
    except (ModelMismatch, ModelContractError) as exc:
        # a refusal the user acts on (another model, reindex): the message, not a traceback
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
