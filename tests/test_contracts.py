"""Contracts: declaration, the subscript form, immutability, (de)serialization, policies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from conftest import EmailSent, Resize, Resized, SendEmail, send_email
from taskhop.sdk import TaskContract, define_task
from taskhop.static_contracts import (
    ContractError,
    RetryPolicy,
    StaticContract,
    parse_duration,
    static_contract,
)


def test_static_contract_keeps_its_declaration() -> None:
    """A static contract holds name, types and defaults, and has no runtime schema."""
    contract = static_contract(
        "send-email",
        input=SendEmail,
        output=EmailSent,
        retry=5,
        timeout="30s",
        version=2,
        queue="mail",
    )
    assert contract.name == "send-email"
    assert contract.input is SendEmail
    assert contract.output is EmailSent
    assert contract.retry == RetryPolicy(attempts=5)
    assert contract.timeout == 30.0
    assert (contract.version, contract.queue) == (2, "mail")
    assert not contract.runtime_schema


def test_subscript_form_learns_its_types() -> None:
    """``StaticContract[I, O](name=...)`` records I and O at run time."""
    contract = StaticContract[SendEmail, EmailSent](name="send-email")
    assert contract.input is SendEmail
    assert contract.output is EmailSent
    assert contract == static_contract("send-email", input=SendEmail, output=EmailSent)


def test_a_contract_without_types_says_how_to_give_them() -> None:
    """Reading the type of an untyped contract raises a ContractError that explains."""
    contract: StaticContract[Any, Any] = StaticContract("bare")
    with pytest.raises(ContractError, match=r"bare: no input type; pass input="):
        _ = contract.input


def test_contracts_are_immutable_and_hashable() -> None:
    """Fields cannot be reassigned; ``replace`` makes a changed copy."""
    with pytest.raises(AttributeError, match="immutable"):
        send_email.name = "other"  # type: ignore[misc]
    changed = send_email.replace(timeout=5)
    assert changed.timeout == 5.0
    assert send_email.timeout is None
    assert len({send_email, send_email.replace(), changed}) == 2


def test_define_task_builds_a_runtime_schema_contract() -> None:
    """``define_task`` returns a TaskContract that the producer validates."""
    contract = define_task("resize", input=Resize, output=Resized, timeout=timedelta(minutes=1))
    assert isinstance(contract, TaskContract)
    assert contract.runtime_schema
    assert contract.timeout == 60.0
    assert contract != static_contract("resize", input=Resize, output=Resized, timeout=60)


def test_to_dict_round_trips_through_from_dict() -> None:
    """A contract serializes to JSON data with type references and comes back equal."""
    contract = static_contract("send-email", input=SendEmail, output=EmailSent, retry=4)
    data = contract.to_dict()
    assert data["input"] == "conftest:SendEmail"
    assert data["kind"] == "static"
    assert data["retry"]["attempts"] == 4
    assert StaticContract.from_dict(data) == contract
    assert TaskContract.from_dict(define_task("r", input=Resize, output=Resized).to_dict()) == (
        define_task("r", input=Resize, output=Resized)
    )


def test_from_dict_keeps_the_contract_kind() -> None:
    """Loading a define_task contract as a static one (or back) is refused, not downgraded."""
    with pytest.raises(ContractError, match=r"load it with taskhop\.sdk\.TaskContract\.from_dict"):
        StaticContract.from_dict(define_task("r", input=Resize, output=Resized).to_dict())
    with pytest.raises(ContractError, match=r"load it with StaticContract\.from_dict"):
        TaskContract.from_dict(send_email.to_dict())


def test_from_dict_takes_explicit_types_and_names_what_it_cannot_resolve() -> None:
    """Types can be supplied instead of imported; a missing one is a clear error."""
    data = {"name": "x", "input": "nowhere:Thing", "output": "builtins:int"}
    with pytest.raises(ContractError, match=r"x: cannot resolve input type 'nowhere:Thing'"):
        StaticContract.from_dict(data)
    contract = StaticContract.from_dict(data, types={"nowhere:Thing": dict})
    assert contract.input is dict
    with pytest.raises(ContractError, match="unknown key"):
        StaticContract.from_dict({**data, "colour": "red"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name: expected a non-empty string"),
        ({"version": 0}, "version must be an int >= 1"),
        ({"version": True}, "version must be an int >= 1"),
        ({"timeout": "soon"}, "timeout: 'soon' is not a duration"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": -1}, "must be a non-negative duration"),
        ({"retry": 0}, "retry.attempts: must be >= 1"),
        ({"retry": {"tries": 3}}, r"retry: unknown option\(s\) \['tries'\]"),
        ({"retry": {"backoff": "linear"}}, "retry.backoff: must be 'fixed' or 'exponential'"),
        ({"retry": "3"}, "retry: expected RetryPolicy, int or dict"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"input": "SendEmail"}, "input must be a type"),
    ],
)
def test_bad_declarations_name_the_offending_field(kwargs: dict[str, Any], message: str) -> None:
    """Every invalid argument raises ContractError naming the field."""
    fields: dict[str, Any] = {"name": "t", "input": SendEmail, "output": EmailSent, **kwargs}
    with pytest.raises(ContractError, match=message):
        static_contract(**fields)


def test_exponential_backoff_doubles_up_to_the_cap() -> None:
    """Exponential waits double per attempt and never exceed max_delay."""
    policy = RetryPolicy(attempts=10, delay=1, max_delay=5, jitter=False)
    assert [policy.delay_for(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert RetryPolicy(backoff="fixed", delay="2s", jitter=False).delay_for(4) == 2.0


def test_jitter_spreads_waits_between_half_and_full() -> None:
    """Equal jitter keeps each wait within [d/2, d]."""
    policy = RetryPolicy(delay=8, max_delay=100)
    waits = [policy.delay_for(2) for _ in range(200)]
    assert all(8 <= w <= 16 for w in waits)
    assert len(set(waits)) > 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("1d", 86400),
        (2, 2.0),
        (timedelta(seconds=3), 3.0),
        (" 2s ", 2.0),
    ],
)
def test_durations_parse_the_way_people_write_them(value: Any, seconds: float) -> None:
    """Durations accept numbers, timedeltas and unit strings."""
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5", "5x", "1h-3m", True, None, [1]])
def test_bad_durations_are_refused(value: Any) -> None:
    """Anything that is not a duration raises ValueError naming the field."""
    with pytest.raises(ValueError, match=r"^delay: "):
        parse_duration(value, field="delay")
