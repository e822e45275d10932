"""The reference cache and reference completion, on their own."""

from __future__ import annotations

from typing import Any

import stix2

from connector_batching.references import ReferenceCache, complete_references

AUTHOR = stix2.Identity(
    id="identity--d1b6ff6a-27a2-5f8a-9c52-cd5f5a0e7c11", name="Feed", identity_class="organization"
)


def obj(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "x-item", "id": f"x-item--{n:08d}-0000-4000-8000-000000000000", **extra}


def test_the_cache_is_bounded_by_two_generations_and_pins_markings_and_authors() -> None:
    cache = ReferenceCache(100)
    complete_references([AUTHOR, stix2.TLP_RED], cache)
    for start in range(0, 5000, 50):
        complete_references([obj(n) for n in range(start, start + 50)], cache)
        assert len(cache) <= 2 * 100 + 50 + 2  # two generations + a batch + the pinned two
    assert cache.get(AUTHOR.id) is AUTHOR
    assert cache.get(obj(0)["id"]) is None  # evicted long ago
    assert cache.get(obj(4999)["id"]) is not None


def test_completion_adds_what_members_reference_and_counts_the_unresolved() -> None:
    cache = ReferenceCache(100)
    complete_references([AUTHOR], cache)
    extra, unresolved = complete_references(
        [
            obj(
                1,
                created_by_ref=AUTHOR.id,
                object_marking_refs=[stix2.TLP_RED.id],
                target_ref="x--y",
            )
        ],
        cache,
    )
    assert {o["id"] for o in extra} == {AUTHOR.id, stix2.TLP_RED.id}
    assert unresolved == 1


def test_completion_tolerates_any_shape_add_item_accepts() -> None:
    cache = ReferenceCache(10)
    odd = [
        obj(1, granular_markings=["x", 3, None, {"marking_ref": stix2.TLP_RED.id}]),
        {**obj(2), 5: "v"},
    ]
    extra, _unresolved = complete_references(odd, cache)
    assert [o["id"] for o in extra] == [stix2.TLP_RED.id]
