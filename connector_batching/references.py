"""Reference completion: every bundle carries the objects its members point at.

pycti's splitter (with ``cleanup_inconsistent_bundle``) drops markings,
authors and relationships whose targets are not in the same bundle, and the
platform's workers may import bundles in any order.  A bounded cache of the
objects already seen lets each batch carry its own references.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connector_batching.stix import STANDARD_MARKINGS, object_id, object_type, referenced_ids

#: Types kept in their own cache so a flood of indicators never evicts them.
PINNED_TYPES = frozenset({"marking-definition", "identity", "extension-definition"})
PINNED_CACHE_SIZE = 2_048
_MAX_DEPTH = 4  # references of references (an identity's marking, …)


class ReferenceCache:
    """Bounded, insertion-ordered caches of STIX objects by id."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pinned: dict[str, Any] = {}
        self._recent: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._pinned) + len(self._recent)

    def remember(self, objects: Iterable[Any]) -> None:
        """Keep ``objects`` (the newest version of each id wins)."""
        pinned, recent, size = self._pinned, self._recent, self._size
        for obj in objects:
            try:
                oid = object_id(obj)
                kind = object_type(obj)
            except (KeyError, AttributeError, TypeError):
                continue
            target = pinned if kind in PINNED_TYPES else recent
            limit = PINNED_CACHE_SIZE if target is pinned else size
            if limit == 0:
                continue
            target.pop(oid, None)
            target[oid] = obj
            if len(target) > limit:
                del target[next(iter(target))]

    def get(self, oid: str) -> Any | None:
        """The cached object with id ``oid`` (or a standard TLP marking), else None."""
        found = self._pinned.get(oid)
        if found is None:
            found = self._recent.get(oid)
        if found is None:
            found = STANDARD_MARKINGS.get(oid)
        return found


def complete_references(objects: list[Any], cache: ReferenceCache) -> tuple[list[Any], int]:
    """Return (referenced objects missing from ``objects`` found in ``cache``, unresolved count).

    References of the added objects are followed too, a few levels deep.
    """
    present: set[str] = set()
    for obj in objects:
        try:
            present.add(object_id(obj))
        except (KeyError, AttributeError, TypeError):
            continue
    added: list[Any] = []
    unresolved: set[str] = set()
    frontier = objects
    for _ in range(_MAX_DEPTH):
        wanted: list[str] = []
        for obj in frontier:
            try:
                refs = list(referenced_ids(obj))
            except (AttributeError, TypeError):
                continue
            for ref in refs:
                if ref not in present:
                    present.add(ref)
                    wanted.append(ref)
        if not wanted:
            break
        frontier = []
        for ref in wanted:
            found = cache.get(ref)
            if found is None:
                unresolved.add(ref)
            else:
                frontier.append(found)
        added.extend(frontier)
    return added, len(unresolved)
