"""Threats named by a row's tags (``URLHAUS_THREATS_FROM_LABELS``), as the upstream connector does.

For each tag, the platform is asked once per run for a threat of that name
(threat actor, intrusion set, malware, campaign, incident or tool).  A row
whose tags name threats gets, for each, an ``indicates`` relationship from its
indicator and a ``related-to`` relationship from its observable, dated by the
row's ``dateadded`` (stop three seconds later), with the ids the upstream
connector computes — so rows imported by either merge.  The threat itself is
on the platform already and is not sent.

Looking threats up needs the platform: without a helper (file output) there is
nothing to ask, and when the lookup fails the run goes on without threat
relationships, saying so once at WARNING.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pycti import StixCoreRelationship

from connector_batching import redact
from example_connector.logs import ConnectorLog

__all__ = ["THREAT_TYPES", "ThreatResolver", "threat_relationships"]

#: The entity types upstream searches by name.
THREAT_TYPES = ("Threat-Actor", "Intrusion-Set", "Malware", "Campaign", "Incident", "Tool")
_STOP_AFTER = dt.timedelta(seconds=3)


class ThreatResolver:
    """Standard ids of the threats on the platform named like tags; cached for one run."""

    def __init__(self, helper: Any, log: ConnectorLog) -> None:
        self.helper = helper
        self.log = log
        self._ids: dict[str, str | None] = {}
        #: True once a lookup failed: no more are tried this run.
        self.failed = False

    def __call__(self, labels: Sequence[str]) -> list[str]:
        """The ids of the threats named by ``labels`` (unknown names are left out)."""
        found: list[str] = []
        for label in labels:
            if label not in self._ids:
                self._ids[label] = self._lookup(label)
            threat_id = self._ids[label]
            if threat_id is not None and threat_id not in found:
                found.append(threat_id)
        return found

    @property
    def names_found(self) -> int:
        """How many tags named a threat."""
        return sum(1 for threat_id in self._ids.values() if threat_id)

    def _lookup(self, name: str) -> str | None:
        if self.failed:
            return None
        try:
            entities = self.helper.api.stix_domain_object.list(
                types=list(THREAT_TYPES),
                filters={
                    "mode": "and",
                    "filters": [{"key": "name", "values": [name]}],
                    "filterGroups": [],
                },
                customAttributes="id standard_id entity_type",
            )
        except Exception as exc:
            self.failed = True
            self.log.warning(
                "Cannot look threats up on the platform: this run makes no threat "
                "relationships (URLHAUS_THREATS_FROM_LABELS)",
                {"label": name, "reason": redact(f"{type(exc).__name__}: {exc}")[:300]},
            )
            return None
        for entity in entities or ():
            standard_id = entity.get("standard_id") if isinstance(entity, dict) else None
            if isinstance(standard_id, str) and standard_id:
                return standard_id
        return None


def _relationship(
    kind: str, source: str, target: str, moment: dt.datetime, author: str, markings: list[str]
) -> dict[str, Any]:
    naive = moment.astimezone(dt.UTC).replace(tzinfo=None)  # upstream's id input
    stamp = moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    stop = (moment + _STOP_AFTER).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {
        "type": "relationship",
        "spec_version": "2.1",
        "id": StixCoreRelationship.generate_id(kind, source, target, naive, naive),
        "created": stamp,
        "modified": stamp,
        "relationship_type": kind,
        "source_ref": source,
        "target_ref": target,
        "start_time": stamp,
        "stop_time": stop,
        "created_by_ref": author,
        "object_marking_refs": markings,
    }


def threat_relationships(
    moment: dt.datetime,
    indicator_id: str,
    observable_id: str,
    threat_ids: Sequence[str],
    *,
    author_id: str,
    markings: list[str],
) -> list[dict[str, Any]]:
    """``indicates`` (indicator → threat) and ``related-to`` (observable → threat) for each."""
    objects: list[dict[str, Any]] = []
    for threat_id in threat_ids:
        objects.append(
            _relationship("indicates", indicator_id, threat_id, moment, author_id, markings)
        )
        objects.append(
            _relationship("related-to", observable_id, threat_id, moment, author_id, markings)
        )
    return objects
