"""Feed row → STIX 2.1: URL observable, indicator, ``based-on`` relationship.

With a threat lookup (``URLHAUS_THREATS_FROM_LABELS``) a row's tags that name
threats on the platform add the relationships of
:func:`~example_connector.threats.threat_relationships`.
Objects are built as plain STIX 2.1 dicts (much faster than ``stix2`` objects)
with the deterministic ids OpenCTI itself computes (pycti ``generate_id``
helpers), so a row imported twice merges instead of duplicating.  Every object
references the author identity and the configured TLP marking.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pycti import Identity, Indicator, MarkingDefinition, StixCoreRelationship

from example_connector.rows import FeedRow
from example_connector.threats import threat_relationships

__all__ = [
    "TLP_LEVELS",
    "RowGroup",
    "URLhausConverter",
    "escape_pattern_value",
    "tlp_marking",
    "url_as_uri",
    "url_observable_id",
]

#: STIX 2.1 namespace for deterministic cyber-observable ids.
_SCO_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")
_MARKINGS_CREATED = "2017-01-20T00:00:00.000Z"
_AUTHOR_CREATED = "2019-01-01T00:00:00.000Z"

#: Accepted TLP levels → (OpenCTI definition, STIX ``tlp`` value or None for non-standard).
TLP_LEVELS: dict[str, tuple[str, str | None]] = {
    "clear": ("TLP:CLEAR", "white"),
    "white": ("TLP:CLEAR", "white"),
    "green": ("TLP:GREEN", "green"),
    "amber": ("TLP:AMBER", "amber"),
    "amber+strict": ("TLP:AMBER+STRICT", None),
    "red": ("TLP:RED", "red"),
}


def tlp_marking(level: str) -> dict[str, Any]:
    """The marking definition OpenCTI uses for ``level`` (e.g. ``clear``, ``TLP:RED``).

    TLP:CLEAR is the STIX 2.1 TLP:WHITE definition (OpenCTI stores both under
    one id and shows it as TLP:CLEAR); TLP:AMBER+STRICT, which STIX 2.1 lacks,
    is OpenCTI's statement marking with ``x_opencti_definition*``.
    """
    key = level.strip().lower().removeprefix("tlp:")
    if key not in TLP_LEVELS:
        raise ValueError(f"unknown TLP level {level!r}; use one of {', '.join(TLP_LEVELS)}")
    definition, stix_tlp = TLP_LEVELS[key]
    marking_id = MarkingDefinition.generate_id("TLP", definition)
    if stix_tlp is not None:
        return {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": marking_id,
            "created": _MARKINGS_CREATED,
            "definition_type": "tlp",
            "name": f"TLP:{stix_tlp.upper()}",
            "definition": {"tlp": stix_tlp},
        }
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": marking_id,
        "created": _MARKINGS_CREATED,
        "definition_type": "statement",
        "name": definition,
        "definition": {"statement": "custom"},
        "x_opencti_definition_type": "TLP",
        "x_opencti_definition": definition,
    }


def escape_pattern_value(value: str) -> str:
    """Escape ``value`` for a STIX pattern string literal (``\\`` and ``'``)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


_PCT_BAD = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH_SAFE = "/!$&'()*+,;=:@%~-._"
_QUERY_SAFE = _PATH_SAFE + "?"


def _idna_host(host: str) -> str:
    labels = []
    for label in host.split("."):
        try:
            labels.append(label.encode("idna").decode("ascii") if label else label)
        except UnicodeError:
            labels.append(quote(label, safe="!$&'()*+,;=~-._%"))
    return ".".join(labels)


def url_as_uri(url: str) -> str:
    """``url`` as a valid RFC 3986 URI (what STIX requires of a ``url`` observable).

    An ASCII URL that is already valid is returned unchanged; otherwise the
    host is IDNA-encoded and other characters outside the URI syntax (non-ASCII,
    backslash, space, a stray ``%``) are percent-encoded as UTF-8.
    """
    parts = urlsplit(_PCT_BAD.sub("%25", url))
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport, "", ""
        if not hostport.startswith("[") and hostport.count(":") == 1:
            host, colon, port = hostport.partition(":")
        if userinfo:
            userinfo = quote(userinfo, safe="!$&'()*+,;=:~-._%")
        netloc = f"{userinfo}{at}{_idna_host(host)}{colon}{port}"
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            quote(parts.path, safe=_PATH_SAFE),
            quote(parts.query, safe=_QUERY_SAFE),
            quote(parts.fragment, safe=_QUERY_SAFE),
        )
    )


def url_observable_id(value: str) -> str:
    """The deterministic STIX 2.1 id of the ``url`` observable ``value``.

    The id is UUIDv5 over the JSON canonical form (RFC 8785) of ``{"value": …}``;
    for a one-string object that form is exactly ``json.dumps`` without ASCII
    escaping, which is several times faster than the general canonicaliser.
    """
    canonical = '{"value":' + json.dumps(value, ensure_ascii=False) + "}"
    return f"url--{uuid.uuid5(_SCO_NAMESPACE, canonical)}"


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class RowGroup:
    """Feed rows' objects handed to the processor as one group (``to_stix()``).

    The engine never splits a group across batches.  The connector groups the
    rows sharing one ``dateadded``, so a batch boundary never falls between
    them and the cursor (the latest delivered ``dateadded``) never covers a
    row that is still to be sent.
    """

    __slots__ = ("_objects", "dateadded", "rows")

    def __init__(self, rows: Sequence[FeedRow], objects: list[dict[str, Any]]) -> None:
        if not rows:
            raise ValueError("a RowGroup needs at least one row")
        self.rows = tuple(rows)
        self.dateadded = max(row.dateadded for row in self.rows)
        self._objects = objects

    def to_stix(self) -> list[dict[str, Any]]:
        """The rows' objects (observable, indicator, relationship each; maybe author, marking)."""
        return self._objects

    def __len__(self) -> int:
        return len(self._objects)

    def __repr__(self) -> str:
        first = self.rows[0]
        return f"RowGroup(rows={len(self.rows)}, first_line={first.line_number}, id={first.id!r})"


class URLhausConverter:
    """Converts feed rows to STIX 2.1 dicts for one author and one TLP marking."""

    def __init__(
        self,
        *,
        tlp_level: str = "clear",
        score: int = 80,
        author_name: str = "URLhaus",
    ) -> None:
        if not 0 <= score <= 100:
            raise ValueError(f"score must be between 0 and 100, got {score}")
        self.marking = tlp_marking(tlp_level)
        self.score = score
        self.author: dict[str, Any] = {
            "type": "identity",
            "spec_version": "2.1",
            "id": Identity.generate_id(author_name, "organization"),
            "created": _AUTHOR_CREATED,
            "modified": _AUTHOR_CREATED,
            "name": author_name,
            "identity_class": "organization",
            "description": "abuse.ch URLhaus: a project sharing malicious URLs used for "
            "malware distribution.",
            "contact_information": "https://urlhaus.abuse.ch/",
        }

    @property
    def shared_objects(self) -> list[dict[str, Any]]:
        """The objects every row references: the author and the marking."""
        return [self.author, self.marking]

    def convert(self, row: FeedRow) -> list[dict[str, Any]]:
        """The observable, indicator and ``based-on`` relationship for ``row``."""
        author_id = self.author["id"]
        markings = [self.marking["id"]]
        stamp = _timestamp(row.dateadded)
        labels = list(row.tags)
        external = [
            {
                "source_name": "urlhaus",
                "url": row.urlhaus_link,
                "external_id": row.id,
            }
        ]
        description = f"URLhaus {row.threat or 'malicious'} URL"
        if row.url_status:
            description += f" (status: {row.url_status})"
        if row.reporter:
            description += f", reported by {row.reporter}"
        value = url_as_uri(row.url)
        observable: dict[str, Any] = {
            "type": "url",
            "spec_version": "2.1",
            "id": url_observable_id(value),
            "value": value,
            "object_marking_refs": markings,
            "x_opencti_score": self.score,
            "x_opencti_description": description,
            "x_opencti_created_by_ref": author_id,
        }
        if labels:
            observable["x_opencti_labels"] = labels
        pattern = f"[url:value = '{escape_pattern_value(row.url)}']"
        indicator: dict[str, Any] = {
            "type": "indicator",
            "spec_version": "2.1",
            "id": Indicator.generate_id(pattern),
            "created": stamp,
            "modified": stamp,
            "name": row.url,
            "description": description,
            "indicator_types": ["malicious-activity"],
            "pattern": pattern,
            "pattern_type": "stix",
            "valid_from": stamp,
            "created_by_ref": author_id,
            "object_marking_refs": markings,
            "external_references": external,
            "x_opencti_score": self.score,
            "x_opencti_main_observable_type": "Url",
        }
        if labels:
            indicator["labels"] = labels
        relationship: dict[str, Any] = {
            "type": "relationship",
            "spec_version": "2.1",
            "id": StixCoreRelationship.generate_id("based-on", indicator["id"], observable["id"]),
            "created": stamp,
            "modified": stamp,
            "relationship_type": "based-on",
            "source_ref": indicator["id"],
            "target_ref": observable["id"],
            "created_by_ref": author_id,
            "object_marking_refs": markings,
        }
        return [observable, indicator, relationship]

    def group(
        self,
        rows: Sequence[FeedRow],
        *,
        with_shared: bool = False,
        threats: Callable[[Sequence[str]], list[str]] | None = None,
    ) -> RowGroup:
        """The objects of ``rows`` as one group; ``with_shared`` prepends author and marking.

        ``threats(tags)`` gives the ids of the threats a row's tags name.
        """
        objects = [*self.shared_objects] if with_shared else []
        for row in rows:
            row_objects = self.convert(row)
            objects.extend(row_objects)
            if threats is not None and row.tags:
                threat_ids = threats(row.tags)
                if threat_ids:
                    objects.extend(
                        threat_relationships(
                            row.dateadded,
                            row_objects[1]["id"],
                            row_objects[0]["id"],
                            threat_ids,
                            author_id=self.author["id"],
                            markings=[self.marking["id"]],
                        )
                    )
        return RowGroup(rows, objects)
