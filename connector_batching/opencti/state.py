"""The connector state: cursors kept under keys of it, pinged to the platform at once.

pycti keeps the state on the helper (``get_state`` / ``set_state``) and sends it
to the platform in its ping, every 40 s.  A cursor saved here is pinged at once,
so that its outcome is known; and when the platform answers another state (an
operator reset it), that state is adopted with the cursor added, instead of
being overwritten by the stale local copy.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Mapping
from typing import Any

from connector_batching.dates import InvalidDate, format_instant, parse_instant, utc_now
from connector_batching.opencti.metrics import MetricEvents
from connector_batching.opencti.port import HelperPort


def state_from(raw: object) -> dict[str, Any] | None:
    """The connector state in a platform answer (a JSON string); ``None`` when empty.

    Raises ``ValueError`` when it is not JSON.
    """
    value = json.loads(raw) if isinstance(raw, str) and raw.strip() else None
    return value if isinstance(value, dict) and value else None


def cursor_text(value: object) -> str | None:
    """A stored cursor as text: dates and epoch numbers as ISO 8601 UTC, "" as ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | dt.datetime) and not isinstance(value, bool):
        try:
            instant = parse_instant(value)
        except InvalidDate:
            return str(value)
        return format_instant(instant) if instant is not None else None
    return str(value)


class ConnectorState:
    """Read and write cursors in the connector state, in step with the platform."""

    def __init__(self, port: HelperPort, events: MetricEvents, *, refresh: bool) -> None:
        self._port = port
        self._events = events
        self._refresh = refresh
        self._lock = threading.Lock()
        self._written: set[str] = set()  # keys this manager wrote, to notice one vanishing

    def update(self, state_key: str, date_str: str) -> None:
        """Store ``date_str`` under ``state_key`` (other keys kept), then ping it.

        A failed ping raises (the local state keeps the cursor and pycti's ping
        thread sends it later).
        """
        with self._lock:
            current = self._port.get_state()
            state = dict(current) if isinstance(current, Mapping) else {}
            vanished = state_key in self._written and state_key not in state
            state[state_key] = date_str
            self._port.set_state(state)
            self._written.add(state_key)
            reset = self._ping(state, state_key, date_str)
        meta = {"state_key": state_key, "cursor": date_str}
        if vanished:
            self._port.log(
                "warning",
                "The cursor key vanished from the connector state since it was written: "
                "something replaced the whole state (a connector's set_state({...}) wipes "
                "keys it does not name; merge into get_state() instead). Written again",
                meta,
            )
        self._port.log("info", "Cursor saved", meta)
        if reset:
            self._port.log(
                "warning",
                "The connector state was reset on the platform during the run: the reset "
                "state is kept, with this cursor",
                meta,
            )
        try:
            instant = parse_instant(date_str)
        except InvalidDate:
            return
        if instant is not None:
            lag = (utc_now() - instant).total_seconds()
            self._events.emit("cursor_lag_seconds", lag, state_key=state_key)

    def _ping(self, state: dict[str, Any], state_key: str, date_str: str) -> bool:
        """Ping ``state`` to the platform; True when it answered a reset state instead."""
        if not self._port.can_ping:  # a helper without pycti's API client
            self._port.force_ping()
            return False
        with self._port.failing(
            "Cannot ping the cursor to the platform (kept locally; the helper's ping "
            "thread sends it later)",
            {"state_key": state_key, "cursor": date_str},
        ):
            answer = self._port.ping(state)
            remote = state_from(answer.get("connector_state") if answer else None)
            if remote == state:
                return False
            adopted = dict(remote or {})
            adopted[state_key] = date_str
            self._port.set_state(adopted)
            self._port.ping(adopted)
        self._events.emit("state_reset_seen")
        return True

    def sync(self) -> bool:
        """Adopt the state stored on the platform when it differs from the helper's copy.

        Returns whether the local state changed.  Never raises: when the platform
        cannot be read, the local state stays.
        """
        try:
            with self._port.failing(
                "Cannot read the connector state on the platform; using the local copy",
                level="warning",
                count=False,
            ):
                details = self._port.read_connector()
        except Exception:
            return False
        if not isinstance(details, Mapping) or "connector_state" not in details:
            return False
        try:
            remote = state_from(details["connector_state"])
        except ValueError:
            return False
        with self._lock:
            local = self._port.get_state()
            if (local or None) == remote:
                return False
            self._port.set_state(remote)
        self._events.emit("state_refreshed")
        self._port.log(
            "info",
            "Connector state changed on the platform (reset); using the platform's",
            {"keys": sorted(remote) if remote else []},
        )
        return True

    def get(self, state_key: str) -> str | None:
        """The cursor stored under ``state_key``, or ``None`` (the platform's copy first
        when refreshing is on)."""
        if self._refresh:
            self.sync()
        state = self._port.get_state()
        if not isinstance(state, Mapping):
            return None
        return cursor_text(state.get(state_key))
