"""Reference completion: every bundle carries the objects its members point at.

pycti's splitter (with ``cleanup_inconsistent_bundle``) drops markings,
authors and relationships whose targets are not in the same bundle, and the
platform's workers may import bundles in any order.  A bounded cache of the
objects already seen lets each batch carry its own references.
"""

from __future__ import annotations

from itertools import filterfalse
from typing import Any

from connector_batching.stix import STANDARD_MARKINGS, fields_of, object_id, object_type

#: Types kept in their own cache so a flood of indicators never evicts them.
PINNED_TYPES = frozenset({"marking-definition", "identity", "extension-definition"})
PINNED_CACHE_SIZE = 2_048
_MAX_DEPTH = 4  # references of references (an identity's marking, …)

# key -> 0 (not a reference), 1 (`*_ref`), 2 (`*_refs`), 3 (granular_markings)
_KEY_KINDS: dict[str, int] = {}
# keys known not to be references (bounded): most objects are skipped in one set test
_PLAIN_KEYS: set[str] = set()


def _key_kind(key: Any) -> int:
    kind = _KEY_KINDS.get(key)
    if kind is None:
        if type(key) is not str:
            return 0  # not a STIX property name, so not a reference
        if key.endswith("_ref"):
            kind = 1
        elif key.endswith("_refs"):
            kind = 2
        elif key == "granular_markings":
            kind = 3
        else:
            kind = 0
        if len(_KEY_KINDS) < 10_000:
            _KEY_KINDS[key] = kind
    return kind


def _collect(value: Any, kind: int, out: set[str]) -> None:
    if kind == 1:
        if isinstance(value, str):
            out.add(value)
    elif isinstance(value, list | tuple):
        for ref in value:
            if kind == 3:  # granular markings: {"marking_ref": ..., "selectors": [...]}
                if isinstance(ref, dict):
                    ref = ref.get("marking_ref")
                elif isinstance(ref, str):
                    continue  # malformed entry: not a reference
                else:
                    ref = getattr(ref, "marking_ref", None)
            elif not isinstance(ref, str):
                ref = getattr(ref, "id", None)  # stix2 accepts objects in *_refs
            if isinstance(ref, str):
                out.add(ref)


def add_references(obj: Any, out: set[str]) -> None:
    """Add the ids ``obj`` points at (``*_ref``, ``*_refs``, granular markings) to ``out``."""
    fields = obj if type(obj) is dict else fields_of(obj)
    kinds = _KEY_KINDS
    for key in fields:
        kind = kinds.get(key)
        if kind is None:
            kind = _key_kind(key)
        if kind:
            _collect(fields[key], kind, out)


class ReferenceCache:
    """Bounded cache of STIX objects by id.

    Markings, identities and extension definitions are pinned (their own
    bound); other objects live in two generations of about ``size`` entries
    each (rotated after each batch), so inserting is a plain dict write and
    memory stays within ``2 * size + batch``.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._pinned: dict[str, Any] = {}
        self._young: dict[str, Any] = {}
        self._old: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._pinned) + len(self._young) + len(self._old)

    def remember(self, oid: str, kind: str, obj: Any) -> None:
        """Keep ``obj`` (the newest version of an id wins)."""
        if kind in PINNED_TYPES:
            pinned = self._pinned
            pinned.pop(oid, None)
            pinned[oid] = obj
            if len(pinned) > PINNED_CACHE_SIZE:
                del pinned[next(iter(pinned))]
        elif self._size:
            self._young[oid] = obj  # callers rotate() after each batch

    def rotate(self) -> None:
        """Start a new generation once the young one is full."""
        if len(self._young) >= self._size:
            self._old, self._young = self._young, {}

    def get(self, oid: str) -> Any | None:
        """The cached object with id ``oid`` (or a standard TLP marking), else None."""
        found = self._pinned.get(oid)
        if found is None:
            found = self._young.get(oid)
            if found is None:
                found = self._old.get(oid)
                if found is None:
                    found = STANDARD_MARKINGS.get(oid)
        return found


def _dict_references(obj: Any, wanted: set[str]) -> None:
    """``add_references`` for a mapping, skipping objects made only of known plain keys."""
    keys = obj.keys()
    plain = _PLAIN_KEYS
    if keys <= plain:
        return
    for key in keys - plain:
        kind = _key_kind(key)
        if kind:
            _collect(obj[key], kind, wanted)
        elif len(plain) < 10_000 and type(key) is str:
            plain.add(key)


def complete_references(members: list[Any], cache: ReferenceCache) -> tuple[list[Any], int]:
    """Remember ``members`` and return the referenced objects they lack.

    Returns (objects found in ``cache`` that ``members`` reference but do not
    contain, followed a few levels deep; the number of references not found).
    """
    try:  # STIX dicts and stix2 objects: bulk operations
        ids = [obj["id"] for obj in members]
        kinds = [obj["type"] for obj in members]
    except (KeyError, TypeError, AttributeError):
        return _complete_one_by_one(members, cache)
    present = set(ids)
    if cache._size:
        cache._young.update(zip(ids, members, strict=True))
    if not PINNED_TYPES.isdisjoint(kinds):
        for oid, kind, obj in zip(ids, kinds, members, strict=True):
            if kind in PINNED_TYPES:
                cache.remember(oid, kind, obj)
    wanted: set[str] = set()
    for obj in filterfalse(_PLAIN_KEYS.issuperset, members):  # objects with unknown keys
        _dict_references(obj, wanted)
    if cache._size:
        cache.rotate()
    return _follow(wanted - present, present, cache)


def _complete_one_by_one(members: list[Any], cache: ReferenceCache) -> tuple[list[Any], int]:
    present: set[str] = set()
    wanted: set[str] = set()
    for obj in members:
        try:
            oid, kind = object_id(obj), object_type(obj)
        except (KeyError, AttributeError, TypeError):
            continue
        present.add(oid)
        cache.remember(oid, kind, obj)
        add_references(obj, wanted)
    if cache._size:
        cache.rotate()
    return _follow(wanted - present, present, cache)


def _follow(wanted: set[str], present: set[str], cache: ReferenceCache) -> tuple[list[Any], int]:
    """Look ``wanted`` ids up, then the references of what was found, a few levels deep."""
    added: list[Any] = []
    unresolved = 0
    depth = 0
    while wanted and depth < _MAX_DEPTH:
        depth += 1
        present |= wanted
        found: list[Any] = []
        for ref in sorted(wanted):
            obj = cache.get(ref)
            if obj is None:
                unresolved += 1
            else:
                found.append(obj)
        added.extend(found)
        wanted = set()
        for obj in found:
            add_references(obj, wanted)
        wanted -= present
    return added, unresolved


def bundle_members(processed: list[Any], flatten: bool) -> list[Any]:
    """The STIX objects of a batch's payloads (groups flattened when ``flatten``)."""
    if not flatten:
        return list(processed)
    return [m for p in processed for m in (p if type(p) is list else (p,))]
