"""The connector's cursor, the upstream connector's state, and rows counted in engine payloads.

This connector's cursor is the latest delivered ``dateadded``, ISO 8601 UTC,
under :data:`STATE_KEY`.  The upstream URLhaus connector keeps
``last_processed_entry`` (epoch seconds of the latest ``dateadded`` it
processed) and ``last_run``; when this connector's own key is absent, its
first run continues from ``last_processed_entry`` instead of importing the
whole feed again.  The upstream keys are left as they are.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from connector_batching import parse_instant

__all__ = [
    "STATE_KEY",
    "UPSTREAM_STATE_KEY",
    "count_rows",
    "indicator_date",
    "row_ids",
    "upstream_cursor",
]

#: State key of the cursor (latest delivered ``dateadded``).
STATE_KEY = "urlhaus_last_dateadded"
#: The upstream URLhaus connector's cursor: epoch seconds of the latest ``dateadded``.
UPSTREAM_STATE_KEY = "last_processed_entry"


def upstream_cursor(value: Any) -> dt.datetime | None:
    """The upstream ``last_processed_entry`` as an aware UTC datetime (``None`` if unusable).

    Upstream stores a number of seconds since the epoch (its rows' naive
    ``dateadded``, which URLhaus gives in UTC); a platform read may hand it
    back as a number, a numeric string or an ISO 8601 string; 0 means never.
    """
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = None
    if seconds is not None:
        if seconds <= 0:
            return None
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    try:
        return parse_instant(value)
    except ValueError:
        return None


def indicator_date(obj: Any) -> Any:
    """Date extraction for the engine: an indicator's ``valid_from`` is its row's ``dateadded``.

    Other members of a row's group (observable, relationships, author, marking)
    carry no feed date.
    """
    if type(obj) is dict and obj.get("type") == "indicator":
        return obj.get("valid_from")
    return None


def count_rows(payloads: list[Any]) -> int:
    """Feed rows in normalised engine payloads: one indicator per row."""
    return sum(
        1
        for payload in payloads
        for obj in (payload if type(payload) is list else [payload])
        if type(obj) is dict and obj.get("type") == "indicator"
    )


def row_ids(payloads: Iterable[Any]) -> set[str]:
    """URLhaus ids (the indicators' ``external_id``) of the rows in ``payloads``."""
    ids: set[str] = set()
    for payload in payloads:
        for obj in payload if type(payload) is list else [payload]:
            if type(obj) is dict and obj.get("type") == "indicator":
                for ref in obj.get("external_references") or ():
                    if ref.get("source_name") == "urlhaus" and ref.get("external_id"):
                        ids.add(str(ref["external_id"]))
    return ids
