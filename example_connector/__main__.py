"""Command line: ``python -m example_connector [--offline DIR] [--feed F] [--batch-size N]``.

Without ``--offline`` the connector registers with OpenCTI and runs on pycti's
scheduler every ``CONNECTOR_DURATION_PERIOD``.  With ``--offline DIR`` it runs
once through a ``LocalWorkManager(DIR)`` (bundle files + ``state.db``), prints a
summary table and exits.  ``URLHAUS_IMPORT_OFFLINE=true`` (a deployment without
a platform) runs offline into ``URLHAUS_OFFLINE_DIRECTORY`` on the same schedule.
SIGTERM / Ctrl-C stop reading, flush the current batch, save the cursor, close
the works and exit 0.

Dead letters are always on: offline in ``DIR/dead_letters.db``, online in
``URLHAUS_DEAD_LETTER_PATH``.  Log records are scrubbed of the token and of
the secret parts of the feed and platform URLs (:mod:`example_connector.redaction`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

from example_connector import redaction
from example_connector.client import FeedError
from example_connector.connector import URLhausConnector
from example_connector.settings import Settings, SettingsError, load_settings

#: File name of the dead-letter store inside an offline directory.
DEAD_LETTERS_FILE = "dead_letters.db"

log = logging.getLogger("example_connector")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}


class ProgressBar:
    """A one-line progress bar on a terminal stream, redrawn at most 10 times a second."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        filled = int(self.width * done / total) if total else self.width
        rate = done / (now - self.started) if now > self.started else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{total} rows  {rate:,.0f} rows/s")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


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
    parser.add_argument("--feed", metavar="PATH_OR_URL", help="feed to read (URLHAUS_FEED_URL)")
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


def _with_overrides(settings: Settings, feed: str | None, batch_size: int | None) -> Settings:
    updates: dict[str, object] = {}
    if feed:
        updates["feed_url"] = feed
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
            log.warning(
                "%s received: stopping after the current batch",
                signal.Signals(signum).name,
            )

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
    from connector_batching.local import LocalWorkManager

    with LocalWorkManager(directory) as manager:  # closes works a killed run left open
        if manager.interrupted_works_closed:
            log.warning(
                "closed %d works an interrupted run left in progress (status error, "
                "'interrupted'); their rows are sent again",
                manager.interrupted_works_closed,
            )
        connector = URLhausConnector(
            settings,
            work_manager=manager,
            logger=log,
            dead_letter_path=manager.directory / DEAD_LETTERS_FILE,
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
    connector = URLhausConnector(settings, helper=helper, logger=log)
    _install_stop_handlers(connector, exit_when_idle=True)
    helper.schedule_iso(connector.process, settings.connector.duration_period)
    return 1 if connector.failed else 0


def _check_dead_letter_path(path: str) -> None:
    """Fail at start, not at the first failed batch, when the store cannot be written."""
    import sqlite3

    from connector_batching.dead_letters import DeadLetterStore

    try:
        DeadLetterStore(path).close()
    except (OSError, sqlite3.Error) as exc:
        raise SettingsError(
            "invalid connector configuration:\n  URLHAUS_DEAD_LETTER_PATH "
            f"(urlhaus.dead_letter_path): cannot open {path!r} ({exc})"
        ) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = _with_overrides(load_settings(args.config), args.feed, args.batch_size)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    directory, period = args.offline, 0
    if directory is None and settings.urlhaus.import_offline:
        # deployed offline (URLHAUS_IMPORT_OFFLINE): on the connector's schedule
        directory = settings.urlhaus.offline_directory
        period = settings.connector.duration_seconds
    level_name = args.log_level or ("warning" if directory else settings.connector.log_level)
    logging.basicConfig(
        level=_LEVELS.get(level_name, getattr(logging, level_name.upper(), logging.INFO)),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    redaction.install(redaction.settings_secrets(settings))
    if directory is not None:
        return run_offline(settings, directory, period=period)
    try:
        return run_online(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
