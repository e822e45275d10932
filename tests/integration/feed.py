"""Test data: a TLP:RED author and indicator + URL + ``based-on`` groups with pycti ids."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import stix2
from pycti import Identity, Indicator, StixCoreRelationship

TLP_RED = stix2.TLP_RED
BASE_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

AUTHOR = stix2.Identity(
    id=Identity.generate_id("Connector Batching Test Feed", "organization"),
    name="Connector Batching Test Feed",
    identity_class="organization",
    created=BASE_DATE,
    modified=BASE_DATE,
    object_marking_refs=[TLP_RED.id],
)


@dataclass
class FeedRow:
    """One feed row; ``to_stix()`` gives its group (kept in one batch)."""

    number: int

    @property
    def url(self) -> str:
        return f"http://malicious-{self.number}.example.com/payload.bin"

    @property
    def modified(self) -> dt.datetime:
        return BASE_DATE + dt.timedelta(minutes=self.number)

    def to_stix(self) -> list[Any]:
        url = self.url
        pattern = f"[url:value = '{url}']"
        modified = self.modified
        indicator = stix2.Indicator(
            id=Indicator.generate_id(pattern),
            name=url,
            pattern=pattern,
            pattern_type="stix",
            valid_from=modified,
            created=modified,
            modified=modified,
            created_by_ref=AUTHOR.id,
            object_marking_refs=[TLP_RED.id],
            allow_custom=True,
            x_opencti_main_observable_type="Url",
        )
        observable = stix2.URL(
            value=url,
            object_marking_refs=[TLP_RED.id],
            allow_custom=True,
            x_opencti_created_by_ref=AUTHOR.id,
        )
        relationship = stix2.Relationship(
            id=StixCoreRelationship.generate_id("based-on", indicator.id, observable.id),
            relationship_type="based-on",
            source_ref=indicator.id,
            target_ref=observable.id,
            created=modified,
            modified=modified,
            created_by_ref=AUTHOR.id,
            object_marking_refs=[TLP_RED.id],
        )
        return [indicator, observable, relationship]


def rows(count: int, start: int = 0) -> list[FeedRow]:
    """``count`` rows numbered from ``start``."""
    return [FeedRow(n) for n in range(start, start + count)]


def modified_of(obj: Any) -> Any:
    """The date extraction function the tests use (observables have none)."""
    return obj.get("modified")
