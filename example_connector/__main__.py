"""Command line: ``python -m example_connector [--offline DIR] [--feed F] [--batch-size N]``.

Without ``--offline`` the connector registers with OpenCTI and runs on pycti's
scheduler every ``CONNECTOR_DURATION_PERIOD``.  With ``--offline DIR`` it runs
once through a ``LocalWorkManager(DIR)`` (bundle files + ``state.db``), prints a
summary table and exits.  ``CONNECTOR_BATCHING_OUTPUT_DIRECTORY=DIR`` (a
deployment without a platform) writes bundle files to DIR on the same
schedule, and says so at WARNING: nothing goes to OpenCTI then.
SIGTERM / Ctrl-C stop reading, flush the current batch, save the cursor, close
the works and exit 0.

Dead letters are always on: offline in ``DIR/dead_letters.db``, online in
``URLHAUS_DEAD_LETTER_PATH``.  Log records are scrubbed of the token and of
the secret parts of the feed and platform URLs (the library's redaction,
:mod:`example_connector.logs`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from example_connector.client import FeedError
from example_connector.connector import URLhausConnector
from example_connector.logs import ConnectorLog, install_redaction
from example_connector.progress import ProgressBar
from example_connector.settings import Settings, SettingsError, load_settings
from example_connector.urls import secret_fragments

#: File name of the dead-letter store inside an offline directory.
DEAD_LETTERS_FILE = "dead_letters.db"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m example_connector",
        description="Import a URLhaus-format CSV feed into OpenCTI in safe batches, "
        "or offline into STIX 2.1 bundle files.",
    )
    parser.add_argument(
        "--offline",
        metavar="DIR",
        help="run once without OpenCTI, writing bundle files and state.db to DIR",
    )
    parser.add_argument("--feed", metavar="PATH_OR_URL", help="feed to read (URLHAUS_CSV_URL)")
    parser.add_argument(
        "--batch-size", type=_positive_int, metavar="N", help="rows per batch (URLHAUS_BATCH_SIZE)"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="configuration file (default: ./config.yml if present)"
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="log level on stderr (offline default: warning; online: CONNECTOR_LOG_LEVEL)",
    )
    return parser


def settings_secrets(settings: Settings) -> list[str]:
    """What must never be logged: the token and the secret parts of the URLs."""
    found: set[str] = set()
    if settings.opencti.token is not None and settings.opencti.token.get_secret_value():
        found.add(settings.opencti.token.get_secret_value())
    if settings.opencti.url:
        found.update(secret_fragments(settings.opencti.url))
    found.update(secret_fragments(settings.urlhaus.csv_url))
    return sorted(found, key=len, reverse=True)


def _with_overrides(settings: Settings, feed: str | None, batch_size: int | None) -> Settings:
    updates: dict[str, object] = {}
    if feed:
        updates["csv_url"] = feed
    if batch_size:
        updates["batch_size"] = batch_size
    if not updates:
        return settings
    return settings.model_copy(update={"urlhaus": settings.urlhaus.model_copy(update=updates)})


_Handler = Callable[[int, FrameType | None], Any] | int | None


def _install_stop_handlers(
    connector: URLhausConnector, *, exit_when_idle: bool
) -> dict[signal.Signals, _Handler]:
    """SIGTERM / SIGINT: stop the current run cleanly (or exit at once when idle).

    Returns the handlers replaced, for :func:`_restore_handlers`.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        first = not connector.stop_event.is_set()
        connector.stop_event.set()
        if exit_when_idle and not connector.running.is_set():
            raise SystemExit(1 if connector.failed else 0)
        if first:
            name = signal.Signals(signum).name
            connector.log.warning(f"{name} received: stopping after the current batch")

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, handle)
    return previous


def _restore_handlers(previous: dict[signal.Signals, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def run_offline(settings: Settings, directory: str, *, period: float = 0) -> int:
    """Run into ``LocalWorkManager(directory)`` and print a summary per run.

    ``period`` 0 runs once; otherwise runs repeat every ``period`` seconds
    until SIGTERM / Ctrl-C (a feed that cannot be read is retried next time).
    Returns 0 when the last run went well.
    """
    from connector_batching import LocalWorkManager

    with LocalWorkManager(directory) as manager:  # closes works a killed run left open
        connector = URLhausConnector(
            settings, work_manager=manager, dead_letter_path=manager.directory / DEAD_LETTERS_FILE
        )
        if manager.interrupted_works_closed:
            connector.log.warning(
                f"closed {manager.interrupted_works_closed} works an interrupted run left in "
                "progress (status error, 'interrupted'); their rows are sent again"
            )
        previous = _install_stop_handlers(connector, exit_when_idle=False)
        try:
            while True:
                code = _offline_run(connector, manager, directory)
                if period <= 0 or connector.stop_event.wait(period):
                    return code
        finally:
            _restore_handlers(previous)


def _offline_run(connector: URLhausConnector, manager: Any, directory: str) -> int:
    bundles_before = len(manager.bundle_paths())
    progress = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    try:
        summary = connector.run_once(progress=progress)
    except FeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if progress is not None:
            progress.close()
    summary.bundles_written = len(manager.bundle_paths()) - bundles_before
    print(f"URLhaus example connector, offline run into {directory}")
    print(summary.table(), flush=True)
    return 0 if summary.ok else 1


def run_online(settings: Settings) -> int:
    """Register with OpenCTI and run on pycti's scheduler (``CONNECTOR_DURATION_PERIOD``)."""
    settings.require_online()
    _check_dead_letter_path(settings.urlhaus.dead_letter_path)
    from pycti import OpenCTIConnectorHelper

    helper = OpenCTIConnectorHelper(settings.pycti_config())
    install_redaction()  # pycti's JSON logging replaced the root handlers
    connector = URLhausConnector(settings, helper=helper)
    for notice in settings.notices:
        connector.log.warning(notice)
    _install_stop_handlers(connector, exit_when_idle=True)
    helper.schedule_iso(connector.process, settings.connector.duration_period)
    return 1 if connector.failed else 0


def _check_dead_letter_path(path: str) -> None:
    """Fail at start, not at the first failed batch, when the store cannot be written."""
    import sqlite3

    from connector_batching import DeadLetterStore

    try:
        DeadLetterStore(path).close()
    except (OSError, sqlite3.Error) as exc:
        raise SettingsError(
            "invalid connector configuration:\n  URLHAUS_DEAD_LETTER_PATH "
            f"(urlhaus.dead_letter_path): cannot open {path!r} ({exc})"
        ) from None


def _warn_file_output(settings: Settings, directory: str) -> None:
    """A start without ``--offline`` that writes files says so: nothing reaches OpenCTI."""
    ignored = ", ".join(
        name
        for name, value in (
            ("OPENCTI_URL", settings.opencti.url),
            ("OPENCTI_TOKEN", settings.opencti.token),
            ("CONNECTOR_ID", settings.connector.id),
        )
        if value
    )
    ConnectorLog().warning(
        "File output configured (CONNECTOR_BATCHING_OUTPUT_DIRECTORY, "
        "connector.batching_output_directory): bundles are written to files, nothing is sent "
        "to OpenCTI" + (f"; {ignored} unused" if ignored else ""),
        {"directory": directory},
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = _with_overrides(load_settings(args.config), args.feed, args.batch_size)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    directory, period = args.offline, 0
    if directory is None and settings.output_directory is not None:
        directory = settings.output_directory
        period = settings.connector.duration_seconds
    level_name = args.log_level or ("warning" if args.offline else settings.connector.log_level)
    logging.basicConfig(
        level=_LEVELS.get(level_name, getattr(logging, level_name.upper(), logging.INFO)),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_redaction(settings_secrets(settings))
    if directory is not None:
        if args.offline is None:
            _warn_file_output(settings, directory)
        for notice in settings.notices:
            ConnectorLog().warning(notice)
        return run_offline(settings, directory, period=period)
    try:
        return run_online(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
