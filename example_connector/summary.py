"""What one run did: :class:`RunSummary`, its table (offline) and its log line (online)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RunSummary"]


@dataclass
class RunSummary:
    """What one run did."""

    feed: str
    #: The run's start (ISO 8601 UTC), also in its works' names.
    started_at: str = ""
    cursor_before: str | None = None
    #: The state key ``cursor_before`` was read from when it is not this connector's
    #: own (the upstream URLhaus connector's ``last_processed_entry``).
    cursor_source: str | None = None
    cursor_after: str | None = None
    rows_read: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rows_skipped: int = 0
    #: Rows whose url_status is "offline", left out by ``URLHAUS_IMPORT_OFFLINE=false``.
    rows_offline_skipped: int = 0
    rows_deferred: int = 0
    row_limit: int | None = None
    rows_queued: int = 0
    dead_letters_before: int = 0
    dead_letters_resent: int = 0
    dead_letters_remaining: int = 0
    rows_delivered: int = 0
    rows_failed: int = 0
    objects_produced: int = 0
    objects_sent: int = 0
    batches: int = 0
    failed_batches: int = 0
    #: Threat relationships made (``URLHAUS_THREATS_FROM_LABELS``); ``None`` when off.
    threat_links: int | None = None
    bundles_written: int | None = None
    elapsed: float = 0.0
    stopped: bool = False

    @property
    def rate(self) -> float:
        """Delivered rows per second."""
        return self.rows_delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when nothing failed for good."""
        return self.failed_batches == 0 and self.rows_failed == 0

    def message(self) -> str:
        """The run in one line (the online log line)."""
        return (
            f"URLhaus run done: {self.rows_delivered} rows delivered in {self.batches} "
            f"batches, {self.rows_rejected} rejected, {self.rows_skipped} skipped, "
            f"{self.rows_failed} failed; cursor {self.cursor_after or '-'}"
        )

    def meta(self) -> dict[str, Any]:
        """Every counter, for the metadata of the log line."""
        meta = asdict(self)
        meta["rate"] = round(self.rate, 1)
        meta["elapsed"] = round(self.elapsed, 3)
        return meta

    def table(self) -> str:
        """The summary as an aligned two-column table."""
        before = self.cursor_before or "-"
        if self.cursor_source:
            before += f" (from {self.cursor_source})"
        rejected = str(self.rows_rejected)
        if self.rejected_by_reason:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected_by_reason.items()))
            rejected += f"  ({reasons})"
        lines = [
            ("feed", self.feed),
            ("rows read", str(self.rows_read)),
            ("rows rejected", rejected),
            ("rows skipped (<= cursor)", str(self.rows_skipped)),
        ]
        if self.rows_offline_skipped:
            lines.append(("rows skipped (offline)", str(self.rows_offline_skipped)))
        if self.rows_deferred:
            lines.append(
                ("rows deferred (limit)", f"{self.rows_deferred}  (max {self.row_limit} per run)")
            )
        lines += [
            ("rows delivered", f"{self.rows_delivered} of {self.rows_queued}"),
            (
                "dead letters",
                f"{self.dead_letters_resent} re-sent, {self.dead_letters_remaining} remaining",
            ),
            ("rows failed", str(self.rows_failed)),
            ("objects (sent)", f"{self.objects_produced} ({self.objects_sent})"),
            ("batches (failed)", f"{self.batches} ({self.failed_batches})"),
        ]
        if self.threat_links is not None:
            lines.append(("threat relationships", str(self.threat_links)))
        if self.bundles_written is not None:
            lines.append(("bundles written", str(self.bundles_written)))
        lines += [
            ("cursor", f"{before} -> {self.cursor_after or '-'}"),
            ("run started", self.started_at or "-"),
            ("elapsed", f"{self.elapsed:.2f} s"),
            ("rate", f"{self.rate:,.0f} rows/s"),
        ]
        if self.stopped:
            lines.append(("stopped early", "yes (signal): rerun to continue"))
        width = max(len(name) for name, _ in lines)
        rule = "-" * min(72, width + 2 + max(len(value) for _, value in lines))
        body = "\n".join(f"{name.ljust(width)}  {value}" for name, value in lines)
        return f"{rule}\n{body}\n{rule}"
