"""The ledger on its own: every undelivered item in one place, the cursor floor from it."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from connector_batching import DeadLetterStore
from connector_batching.buffer import Buffer
from connector_batching.ledger import Ledger

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
LOG = logging.getLogger("test")


def at(hours: int) -> tuple[dt.datetime, dt.datetime]:
    return (T0 + dt.timedelta(hours=hours),) * 2


def item(n: int) -> dict[str, str]:
    return {"type": "x", "id": f"x--{n}"}


def ledger(store: DeadLetterStore | None = None) -> Ledger:
    return Ledger(Buffer(lambda: 0.0), store, "cursor", LOG)


def test_the_floor_is_the_earliest_of_pending_in_flight_and_failed() -> None:
    book = ledger()
    book.buffer.extend([item(1), item(2), item(3)], [at(5), at(3), at(4)])
    assert book.floor() == at(3)[0]
    first = book.buffer.cut(1, 2)  # items 1 and 2 leave for delivery
    book.sent(first)
    assert book.floor() == at(3)[0]  # item 2 is in flight
    book.failed_for_good(first, "down")
    assert book.floor() == at(3)[0] and len(book.failed) == 2
    book.clear_failed()
    assert book.floor() == at(4)[0]  # only item 3, pending
    last = book.buffer.cut(2, None)
    book.sent(last)
    book.delivered(last)
    assert book.floor() is None and not book.has_undelivered()


def test_dead_letters_travel_with_their_items_without_identity_keys(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dead.sqlite")
    book = ledger(store)
    book.buffer.extend([item(1), item(2)], [at(1), at(2)])
    batch = book.buffer.cut(1, None)
    book.sent(batch)
    book.failed_for_good(batch, "down")
    assert store.summary("cursor")[0] == 2

    restarted = ledger(store)  # a new process: the rows hold the floor
    assert restarted.floor() == at(1)[0]
    assert restarted.requeue() == 2
    again = restarted.buffer.cut(1, 1)
    assert again.rows != [None]
    restarted.sent(again)
    restarted.failed_for_good(again, "down again")  # counted again, not duplicated
    assert store.summary("cursor")[0] == 2
    rest = restarted.buffer.cut(2, None)
    restarted.sent(rest)
    restarted.delivered(rest)
    assert store.summary("cursor")[0] == 1
    restarted.clear_failed()
    assert store.summary("cursor")[0] == 0 and restarted.floor() is None
