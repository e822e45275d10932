"""A work's expected count, kept exact: calls that raise, checked by reading the work back.

pycti's ``add_expectations`` and ``report_expectation`` log a failed API call
and go on; a work whose expected count is off by one stays "in progress" for
ever.  :class:`Expectations` makes the same two GraphQL mutations through the
helper's API client so that a failure raises, and, when a call failed in a way
that may still have reached the platform (a timeout, a cut connection), reads
the work's ``tracking`` back to know whether it was applied.  It keeps, per
open work, the expected count the platform holds (:meth:`expected`).

The placeholder: with the first expectations of a work (:meth:`add_batch`)
comes one of the manager's own, reported only after the work was marked
processed (:meth:`release`).  Under both of the platform's rule sets a work
cannot complete while it is held, so it never shows "complete" before its
close; a work in which nothing was sent expects nothing and completes as it
is marked processed.
"""

from __future__ import annotations

import threading
from typing import Any

from connector_batching.opencti.port import HelperPort

ADD = """
mutation addExpectations($id: ID!, $expectations: Int) {
    workEdit(id: $id) { addExpectations(expectations: $expectations) }
}"""

REPORT = """
mutation reportExpectation($id: ID!, $error: WorkErrorInput) {
    workEdit(id: $id) { reportExpectation(error: $error) }
}"""

TRACKING = """
query ConnectorBatchingWork($id: ID!) {
    work(id: $id) { id status tracking { import_expected_number import_processed_number } }
}"""


class ExpectationsUnknown(Exception):
    """The platform's expected count of a work is not the one this manager made."""


class Expectations:
    """The expected count of each open work, changed only through verified calls."""

    def __init__(self, port: HelperPort) -> None:
        self._port = port
        self._lock = threading.Lock()
        self._expected: dict[str, int] = {}
        self._held: set[str] = set()
        #: when ``False`` the count may also move by others (the API transport, whose
        #: worker adds the expectations of the bundles it splits): no read-back check
        self.exclusive = True

    def expected(self, work_id: str) -> int:
        """The expected count this manager made for ``work_id`` (0 for an unknown work)."""
        with self._lock:
            return self._expected.get(work_id, 0)

    def held(self, work_id: str) -> bool:
        """Whether ``work_id`` holds the placeholder."""
        with self._lock:
            return work_id in self._held

    def add_batch(self, work_id: str, n: int) -> None:
        """Add a batch's ``n`` expectations, and the placeholder with the work's first."""
        held = self.held(work_id)
        self.add(work_id, n if held else n + 1)
        with self._lock:
            self._held.add(work_id)

    def add(self, work_id: str, n: int) -> None:
        """Add ``n`` (may be negative) to the expected count; raise unless it is applied."""
        if n == 0:
            return
        before = self.expected(work_id)
        try:
            self._port.query(ADD, {"id": work_id, "expectations": n})
        except Exception as exc:
            if not self._applied_despite(exc, work_id, before + n, before):
                raise
        with self._lock:
            self._expected[work_id] = before + n

    def take_over(self, work_id: str, expected: int) -> None:
        """Count ``work_id`` (not opened by this manager) from its ``expected`` as read."""
        with self._lock:
            self._expected[work_id] = expected

    def adopt(self, work_id: str) -> int:
        """Read the platform's expected count of ``work_id`` and take it as the count."""
        expected, _processed, _status = self.tracking(work_id)
        with self._lock:
            self._expected[work_id] = expected
        return expected

    def release(self, work_id: str) -> None:
        """Report the placeholder, if held (after the work was marked processed); forget the work.

        When the answer is lost, the work is read back: complete means done;
        otherwise the error is raised and a retry reports again.
        """
        if not self.held(work_id):
            self.forget(work_id)
            return
        try:
            self._port.query(REPORT, {"id": work_id, "error": None})
        except Exception:
            try:
                status = self.tracking(work_id)[2]
            except Exception:
                status = None
            if status != "complete":
                raise
        self.forget(work_id)

    def forget(self, work_id: str) -> None:
        with self._lock:
            self._expected.pop(work_id, None)
            self._held.discard(work_id)

    def tracking(self, work_id: str) -> tuple[int, int, str | None]:
        """The work's (expected, processed, status) as the platform holds them."""
        answer: Any = self._port.query(TRACKING, {"id": work_id})
        work = ((answer or {}).get("data") or {}).get("work")
        if not work:
            raise ExpectationsUnknown(f"the platform does not know the work {work_id}")
        tracking = work.get("tracking") or {}
        return (
            int(tracking.get("import_expected_number") or 0),
            int(tracking.get("import_processed_number") or 0),
            work.get("status"),
        )

    def _applied_despite(self, exc: Exception, work_id: str, after: int, before: int) -> bool:
        """Whether a call that raised ``exc`` changed the count to ``after`` all the same."""
        if not self.exclusive:
            return False
        try:
            expected = self.tracking(work_id)[0]
        except Exception:
            return False
        if expected == after:
            self._port.log(
                "info",
                "Expectations applied although the call failed",
                {"work_id": work_id, "reason": self._port.reason(exc)},
            )
            return True
        if expected != before:
            raise ExpectationsUnknown(
                f"work {work_id}: the platform expects {expected}, this manager made {before} "
                f"(and tried {after})"
            ) from None
        return False
