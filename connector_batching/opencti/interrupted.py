"""Works left in progress on the platform: by a killed process, or by a lost ``workAdd`` answer.

The platform completes a work only when the messages its workers imported equal
its expectations, and nothing closes a work its connector forgot.  Here the
manager lists this connector's works in progress (``works`` query), takes back
the expectations no message will meet, and closes them in error.
"""

from __future__ import annotations

from typing import Any

from connector_batching.opencti.expectations import Expectations
from connector_batching.opencti.metrics import MetricEvents
from connector_batching.opencti.port import HelperPort
from connector_batching.opencti.works import OpenWorks

OPEN_WORKS_QUERY = """
query ConnectorBatchingOpenWorks($count: Int, $after: ID, $filters: FilterGroup) {
  works(first: $count, after: $after, filters: $filters) {
    edges {
      node {
        id name status timestamp processed_time
        tracking { import_expected_number import_processed_number }
      }
    }
    pageInfo { endCursor hasNextPage }
  }
}
"""
_PAGE = 500
_MAX_PAGES = 40
_ORPHANED = "orphaned: the answer to its creation was lost; the batch went in another work"


class LeftoverWorks:
    """List and close this connector's works that no connector will close."""

    def __init__(
        self,
        port: HelperPort,
        events: MetricEvents,
        registry: OpenWorks,
        expectations: Expectations,
    ) -> None:
        self._port = port
        self._events = events
        self._registry = registry
        self._expectations = expectations

    def in_progress(self) -> list[dict[str, Any]]:
        """This connector's works the platform lists as in progress (``wait``/``progress``).

        Raises what the API raises (secrets removed).
        """
        filters = {
            "mode": "and",
            "filters": [
                {"key": "connector_id", "values": [self._port.connect_id]},
                {"key": "status", "values": ["wait", "progress"]},
            ],
            "filterGroups": [],
        }
        works: list[dict[str, Any]] = []
        after: str | None = None
        with self._port.failing(count=False):
            for _page in range(_MAX_PAGES):
                result = self._port.query(
                    OPEN_WORKS_QUERY, {"count": _PAGE, "after": after, "filters": filters}
                )
                connection = result["data"]["works"]
                works.extend(edge["node"] for edge in connection["edges"])
                info = connection.get("pageInfo") or {}
                after = info.get("endCursor")
                if not info.get("hasNextPage") or not after:
                    break
        return works

    def close_interrupted(self, message: str = "interrupted") -> int:
        """Close, in error with ``message``, the works a previous process left in progress.

        Works that no connector marked processed, none of them this manager's.
        Never raises; returns how many were closed.
        """
        try:
            works = self._closable(self.in_progress())
        except Exception as exc:
            self._port.log(
                "warning",
                "Cannot list the works left in progress; none closed",
                {"reason": self._port.reason(exc)},
            )
            return 0
        closed = self._close(works, message)
        self._events.emit("interrupted_works_closed", closed)
        if works:
            self._port.log(
                "info",
                "Closed the works an interrupted run left in progress",
                {"closed": closed, "found": len(works)},
            )
        return closed

    def close_orphans(self, work_name: str) -> None:
        """Close works named ``work_name`` that a lost ``workAdd`` answer left open."""
        try:
            works = [w for w in self._closable(self.in_progress()) if w.get("name") == work_name]
        except Exception as exc:
            self._port.log(
                "warning",
                "Cannot look for a work whose creation answer was lost",
                {"work_name": work_name, "reason": self._port.reason(exc)},
            )
            return
        closed = self._close(works, _ORPHANED)
        self._events.emit("orphan_works_closed", closed)
        if works:
            self._port.log(
                "warning",
                "Closed works whose creation answer was lost",
                {"work_name": work_name, "closed": closed},
            )

    def _closable(self, works: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Works no connector closed (``processed_time`` unset), none of them this run's."""
        mine = set(self._registry.ids())
        return [w for w in works if not w.get("processed_time") and w.get("id") not in mine]

    def _close(self, works: list[dict[str, Any]], message: str) -> int:
        """Close ``works`` in error; first take back expectations no message will meet
        (the platform completes a work only when imports equal expectations)."""
        closed = 0
        for work in works:
            tracking = work.get("tracking") or {}
            try:
                expected = int(tracking.get("import_expected_number") or 0)
                missing = expected - int(tracking.get("import_processed_number") or 0)
            except (TypeError, ValueError):
                expected, missing = 0, 0
            try:
                with self._port.failing(
                    "Cannot close a work left in progress",
                    {"work_id": work.get("id")},
                    level="warning",
                ):
                    if missing > 0:
                        self._expectations.take_over(str(work["id"]), expected)
                        try:
                            self._expectations.add(str(work["id"]), -missing)
                        finally:
                            self._expectations.forget(str(work["id"]))
                    self._port.close_work(str(work["id"]), message, True)
            except Exception:
                continue
            closed += 1
        return closed
