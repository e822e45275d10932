"""GenericBatchProcessorConfig: defaults, derived values, validation naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from connector_batching import GenericBatchProcessorConfig
from connector_batching.config import singularize

BASE: dict[str, Any] = {
    "batch_size": 10,
    "work_name_template": "Batch #{batch_num}",
    "state_key": "cursor",
    "entity_type": "indicators",
    "display_name": "threat indicators",
}


def make(**overrides: Any) -> GenericBatchProcessorConfig:
    return GenericBatchProcessorConfig(**{**BASE, **overrides})


def test_defaults_match_the_seed_table() -> None:
    config = make()
    assert config.exception_class is Exception
    assert config.display_name_singular == "threat indicator"
    assert config.auto_process is True
    assert config.date_extraction_function is None
    assert config.preprocessing_function is None
    assert config.postprocessing_function is None
    assert config.validation_function is None
    assert config.empty_batch_behavior == "update_state"
    assert config.max_retries == 0
    assert config.retry_delay == 1.0
    assert config.work_timeout is None
    assert config.retry_max_delay == 60.0
    assert config.retry_jitter is False
    assert config.max_batch_age is None


@pytest.mark.parametrize(
    ("plural", "singular"),
    [
        ("threat indicators", "threat indicator"),
        ("entities", "entity"),
        ("reports", "report"),
        ("STIX objects", "STIX object"),
        ("IOCs", "IOC"),
        ("addresses", "address"),
        ("malware", "malware"),
        ("analyses", "analysis"),
        ("boxes", "box"),
        ("status", "status"),
    ],
)
def test_singular_is_derived(plural: str, singular: str) -> None:
    assert singularize(plural) == singular
    assert make(display_name=plural).display_name_singular == singular


def test_explicit_singular_is_kept() -> None:
    assert make(display_name_singular="IoC").display_name_singular == "IoC"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("batch_size", -5),
        ("batch_size", 2.5),
        ("batch_size", True),
        ("empty_batch_behavior", "ignore"),
        ("max_retries", -1),
        ("retry_delay", -0.1),
        ("retry_max_delay", -1),
        ("work_timeout", -3),
        ("work_timeout", 0),
        ("max_batch_age", -1),
        ("state_key", ""),
        ("entity_type", ""),
        ("display_name", ""),
        ("exception_class", "ValueError"),
        ("validation_function", "yes"),
        ("reference_cache_size", -1),
    ],
)
def test_invalid_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        make(**{field: value})


@pytest.mark.parametrize(
    "template",
    [
        "Batch {batch_num.__class__}",
        "Batch {batch_num[0]}",
        "Batch {unknown}",
        "Batch {0}",
        "Batch {}",
        "Batch {batch_num",
        "Batch {batch_num:{display_name}}",
        "Batch {batch_num:zz}",
    ],
)
def test_templates_that_do_not_format_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="work_name_template"):
        make(work_name_template=template)


def test_template_fields() -> None:
    config = make(work_name_template="{display_name} ({entity_type}) #{batch_num:03d}")
    assert config.format_work_name(7) == "threat indicators (indicators) #007"


def test_backoff_doubles_and_is_capped() -> None:
    config = make(retry_delay=1.5, retry_max_delay=10.0)
    assert [config.backoff_delay(n) for n in range(1, 6)] == [1.5, 3.0, 6.0, 10.0, 10.0]
    assert make(retry_delay=0).backoff_delay(3) == 0


def test_jitter_stays_within_half_and_full_delay() -> None:
    config = make(retry_delay=4.0, retry_jitter=True)
    assert config.backoff_delay(2, 0.0) == 4.0
    assert config.backoff_delay(2, 1.0) == 8.0
    assert 4.0 < config.backoff_delay(2, 0.5) < 8.0
