"""STIX items: normalisation, references and fast JSON serialisation.

An *item* handed to the processor is one of:

* a ``stix2`` object;
* an object with ``to_stix()`` or ``to_stix2_object()`` returning one object or
  a list of objects (a *group*: its members always travel in the same batch);
* a ``list`` or ``tuple`` of such objects (a group, as a mapper's list);
* a ``dict`` with ``id`` and ``type``;
* any other object with string ``id`` and ``type`` attributes (passed through).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import stix2
from stix2.base import _STIXBase
from stix2.utils import format_datetime

StixObject = Any
"""A stix2 object, a STIX dict, or an object with ``id``/``type`` attributes."""

#: The TLP marking definitions of STIX 2.1, by id: referenced often, never added.
STANDARD_MARKINGS: dict[str, Any] = {
    m.id: m for m in (stix2.TLP_WHITE, stix2.TLP_GREEN, stix2.TLP_AMBER, stix2.TLP_RED)
}


class ItemRejected(ValueError):
    """An item the processor cannot accept; ``reason`` is a short stable key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _is_stix_like(obj: object) -> bool:
    if type(obj) is dict:
        return isinstance(obj.get("id"), str) and isinstance(obj.get("type"), str)
    if isinstance(obj, _STIXBase):
        return True
    return isinstance(getattr(obj, "id", None), str) and isinstance(getattr(obj, "type", None), str)


def normalize_item(item: object) -> Any:
    """Return the STIX payload of ``item``: one object, or a list (a group).

    Raises :class:`ItemRejected` when the item is not STIX-shaped or its
    conversion fails.
    """
    if type(item) is dict:
        if isinstance(item.get("id"), str) and isinstance(item.get("type"), str):
            return item
        raise ItemRejected("not_stix", "dict item lacks a string 'id' and 'type'")
    if isinstance(item, _STIXBase):
        return item
    if type(item) is list or (type(item) is tuple and not hasattr(item, "_fields")):
        return _check_converted(item, item)  # a group given as it is: kept together
    convert = getattr(item, "to_stix", None) or getattr(item, "to_stix2_object", None)
    if callable(convert):
        try:
            result = convert()
        except Exception as exc:
            raise ItemRejected(
                "conversion_failed", f"{type(item).__name__} conversion raised {exc!r}"
            ) from exc
        return _check_converted(item, result)
    if _is_stix_like(item):
        try:  # its fields must be readable, or it can be neither sent nor kept
            fields_of(item)
        except TypeError as exc:
            raise ItemRejected("not_stix", str(exc)) from exc
        return item
    raise ItemRejected(
        "not_stix",
        f"{type(item).__name__} is not a STIX object, a mapper with to_stix(), "
        "or a dict with 'id' and 'type'",
    )


def _check_converted(item: object, result: object) -> Any:
    if isinstance(result, list | tuple):
        members = list(result)
        reason = "not_stix" if result is item else "conversion_failed"
        if not members:
            raise ItemRejected(reason, f"{type(item).__name__} holds no STIX object")
        for member in members:
            if not _is_stix_like(member):
                raise ItemRejected(
                    reason, f"{type(item).__name__} holds a non-STIX {type(member).__name__}"
                )
        return members if len(members) > 1 else members[0]
    if not _is_stix_like(result):
        raise ItemRejected(
            "conversion_failed",
            f"{type(item).__name__} converted to a non-STIX {type(result).__name__}",
        )
    return result


def iter_members(payload: Any) -> Iterator[Any]:
    """Yield the STIX objects of a normalised payload (one object or a group)."""
    if type(payload) is list:
        yield from payload
    else:
        yield payload


def object_id(obj: Any) -> str:
    """The STIX id of a stix2 object, dict or id-bearing object."""
    if type(obj) is dict:
        return str(obj["id"])
    if isinstance(obj, _STIXBase):
        return str(obj["id"])
    return str(obj.id)


def object_type(obj: Any) -> str:
    """The STIX type of a stix2 object, dict or id-bearing object."""
    if type(obj) is dict:
        return str(obj["type"])
    if isinstance(obj, _STIXBase):
        return str(obj["type"])
    return str(obj.type)


def fields_of(obj: Any) -> Mapping[str, Any]:
    """The properties of a STIX dict, stix2 object or plain object.

    Plain objects may be ordinary instances, ``__slots__`` classes (slotted
    dataclasses included) or named tuples.  Raises ``TypeError`` for an
    object whose fields cannot be read.
    """
    if type(obj) is dict:
        return obj
    if isinstance(obj, _STIXBase):
        return obj._inner  # type: ignore[no-any-return]
    if isinstance(obj, Mapping):
        return obj
    as_dict = getattr(obj, "_asdict", None)  # a named tuple
    if callable(as_dict) and isinstance(obj, tuple):
        return dict(as_dict())
    fields: dict[str, Any] = {}
    for klass in reversed(type(obj).__mro__):
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if not name.startswith("_") and hasattr(obj, name):
                fields[name] = getattr(obj, name)
    try:
        fields.update((k, v) for k, v in vars(obj).items() if not k.startswith("_"))
    except TypeError:
        if not fields:
            raise TypeError(f"{type(obj).__name__} exposes no readable fields") from None
    return fields


def _plain(value: Any) -> Any:
    if isinstance(value, _STIXBase):
        skip = value._defaulted_optional_properties
        return {k: _plain(v) for k, v in value._inner.items() if k not in skip}
    if type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return format_datetime(value)
    return value


def to_stix_dict(obj: Any) -> dict[str, Any]:
    """Return ``obj`` as a plain JSON-ready STIX dict.

    Equivalent to ``json.loads(obj.serialize())`` for stix2 objects, without
    the JSON round trip.  Dicts are returned as they are when already plain.
    """
    if type(obj) is dict:
        return obj
    if isinstance(obj, _STIXBase):
        return _plain(obj)  # type: ignore[no-any-return]
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return _plain(to_dict())  # type: ignore[no-any-return]
    return _plain(dict(fields_of(obj)))  # type: ignore[no-any-return]


def _modified(obj: Mapping[str, Any]) -> str:
    value = obj.get("modified") or obj.get("created") or ""
    return value if isinstance(value, str) else str(value)


def deduplicate(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeated ids, keeping the version with the latest ``modified``.

    The first position of an id is kept so references stay before use.
    """
    by_id: dict[str, dict[str, Any]] = {}
    for obj in objects:
        key = obj["id"]
        seen = by_id.get(key)
        if seen is None or _modified(obj) >= _modified(seen):
            by_id[key] = obj
    return list(by_id.values())


def bundle_dict(objects: Sequence[Any]) -> dict[str, Any]:
    """A STIX 2.1 bundle dict holding ``objects`` (deduplicated by id)."""
    return {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid4()}",
        "objects": deduplicate(to_stix_dict(o) for o in objects),
    }


def bundle_json(objects: Sequence[Any]) -> str:
    """A STIX 2.1 bundle JSON string holding ``objects`` (deduplicated by id)."""
    return json.dumps(bundle_dict(objects), ensure_ascii=False, separators=(",", ":"))
