"""The app: register, implement in every form, inline tasks, lookups and wiring errors."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import EmailSent, Resize, Resized, SendEmail, resize, send_email
from taskhop.sdk import (
    AlreadyImplementedError,
    App,
    ContractError,
    Implementation,
    ImplementOptions,
    JobContext,
    TaskContract,
    TaskhopError,
    UnknownTaskError,
    create_app,
    static_contract,
)
from taskhop.sdk.memory import MemoryQueue, MemoryStore


def handler(data: SendEmail, ctx: JobContext) -> EmailSent:
    return EmailSent(message_id=data["to"])


def test_register_is_idempotent_by_name(app: App) -> None:
    """Registering the same contract twice returns the same BoundTask."""
    first = app.register(send_email)
    again = app.register(
        static_contract("send-email", input=SendEmail, output=EmailSent, retry=send_email.retry)
    )
    assert first is again
    assert not first.implemented


def test_register_refuses_a_different_contract_under_the_same_name(app: App) -> None:
    """A duplicate name with different types is a ContractError showing both."""
    app.register(send_email)
    other = static_contract("send-email", input=Resize, output=Resized)
    with pytest.raises(ContractError, match="already registered with a different contract"):
        app.register(other)


def test_register_refuses_things_that_are_not_contracts(app: App) -> None:
    """Passing a name or a class instead of a contract fails loudly."""
    with pytest.raises(TypeError, match="register\\(\\) takes a contract, got str"):
        app.register("send-email")  # type: ignore[call-overload]


def test_implement_after_register_upgrades_the_same_bound_task(app: App) -> None:
    """Producer code holding the registered task keeps working once a handler arrives."""
    bound = app.register(send_email)
    assert app.implement(send_email, handler) is bound
    assert bound.implemented
    assert bound.handler is handler
    assert bound.dispatch({"to": "x", "subject": "s"}).result(5) == EmailSent("x")


def test_implement_accepts_options(app: App) -> None:
    """``implement(contract, handler, options)`` applies worker-side overrides."""
    app.implement(send_email, handler, ImplementOptions(retry=9, timeout="2s"))
    entry = app.implementation("send-email")
    assert entry is not None
    assert (entry.policy.attempts, entry.timeout) == (9, 2.0)


def test_implement_object_form(app: App) -> None:
    """``implement(contract, Implementation(handler, options))`` is the object form."""
    bound = app.implement(send_email, Implementation(handler, ImplementOptions(retry=2)))
    entry = app.implementation("send-email")
    assert entry is not None
    assert entry.policy.attempts == 2
    assert bound.handler is handler
    with pytest.raises(TypeError, match="inside the Implementation"):
        app.implement(resize, Implementation(handler), ImplementOptions())  # type: ignore[call-overload]


def test_implement_as_a_decorator(app: App) -> None:
    """``@app.implement(contract)`` registers the function and returns the BoundTask."""

    @app.implement(send_email, options=ImplementOptions(retry=4))
    def send(data: SendEmail, ctx: JobContext) -> EmailSent:
        return EmailSent(message_id="decorated")

    assert send is app.register(send_email)
    assert send.dispatch({"to": "x", "subject": "s"}).result(5) == EmailSent("decorated")


def test_implementing_twice_raises(app: App) -> None:
    """A task has one handler per app."""
    app.implement(send_email, handler)
    with pytest.raises(AlreadyImplementedError, match="'send-email' is already implemented"):
        app.implement(send_email, handler)


def test_implement_checks_its_arguments(app: App) -> None:
    """A non-callable handler and impossible migrations are refused at implement time."""
    with pytest.raises(TypeError, match="handler must be callable"):
        app.implement(send_email, "nope")  # type: ignore[call-overload]
    with pytest.raises(ContractError, match="2 migrations for version 2; at most 1"):
        app.implement(
            send_email.replace(version=2), handler, ImplementOptions(migrate=[dict, dict])
        )
    with pytest.raises(ContractError, match=r"options\.version must be an int >= 1"):
        app.implement(resize, lambda d, c: Resized("k"), ImplementOptions(version=0))


def test_inline_task_takes_types_from_annotations(app: App) -> None:
    """``@app.task(name)`` reads input and output from the handler's annotations."""

    @app.task("inline", retry=2)
    async def inline(data: Resize, ctx: JobContext) -> Resized:
        return Resized(key=f"{data.url}:{data.width}")

    assert isinstance(inline.contract, TaskContract)
    assert (inline.contract.input, inline.contract.output) == (Resize, Resized)
    assert inline.dispatch(Resize(url="https://a", width=2)).result(5) == Resized("https://a:2")


def test_inline_task_with_explicit_types(app: App) -> None:
    """``app.task(name, handler, input=..., output=...)`` is the call form."""
    bound = app.task("inline-call", handler, input=SendEmail, output=EmailSent, timeout="1s")
    assert bound.contract.timeout == 1.0
    assert bound.dispatch({"to": "z", "subject": "s"}).result(5) == EmailSent("z")


def test_inline_task_without_types_explains_what_is_missing(app: App) -> None:
    """A handler without annotations and no input=/output= is a ContractError."""

    def untyped(data, ctx):  # type: ignore[no-untyped-def]
        return data

    with pytest.raises(ContractError, match="pass input= and output=, or annotate"):
        app.task("untyped", untyped)


def test_get_finds_tasks_by_name_and_suggests_near_misses(app: App) -> None:
    """Unknown names raise UnknownTaskError with the closest known name."""
    app.register(send_email)
    assert app.get("send-email").contract is send_email
    with pytest.raises(UnknownTaskError, match="did you mean 'send-email'"):
        app.get("send-mail")
    with pytest.raises(UnknownTaskError, match=r"known: send-email"):
        app.get("zzz")
    assert list(app.tasks) == ["send-email"]
    assert [bound.name for bound in app] == ["send-email"]


def test_create_app_wiring_errors_are_explicit() -> None:
    """A store without a queue, or reading results without a store, says what to pass."""
    with pytest.raises(TaskhopError, match="pass queue= as well"):
        create_app(store=MemoryStore())
    producer = create_app(queue=MemoryQueue())
    handle = producer.register(send_email).dispatch({"to": "a", "subject": "b"})
    with pytest.raises(TaskhopError, match="no job store"):
        handle.result(0)
    producer.close()


def test_a_worker_without_a_store_keeps_no_state_and_loses_nothing() -> None:
    """No store: jobs run as delivered, nothing is recorded, and ends are dead-lettered."""
    from taskhop.sdk import Envelope, OutcomeKind

    stateless = create_app(queue=MemoryQueue())
    stateless.implement(send_email, handler)
    worker = stateless.worker()
    assert not worker.keeps_state
    body = Envelope(task="send-email", input={"to": "a", "subject": "s"}).encode()
    assert worker.process(body).result == {"message_id": "a"}
    assert worker.process(body).kind is OutcomeKind.SUCCEEDED  # a duplicate runs again
    rejected = worker.process(Envelope(task="send-email", input={"to": 1}).encode())
    assert (rejected.kind, rejected.dead_letter) == (OutcomeKind.REJECTED, True)
    stateless.close()


def test_app_works_as_a_context_manager() -> None:
    """``with create_app() as app`` closes the embedded worker at the end."""
    with create_app() as app:
        bound = app.implement(send_email, handler)
        assert bound.dispatch({"to": "q", "subject": "s"}).result(5) == EmailSent("q")
    queue: Any = app.transport
    assert queue._threads == []


def test_one_validator_per_task_migrates_then_structures() -> None:
    """An implemented task's validator brings old inputs forward and names what it refuses."""
    from taskhop.sdk import MigrationError, ValidationError

    app = create_app()
    v3 = send_email.replace(version=3)
    migrate = ImplementOptions(migrate=[lambda d: {**d, "subject": "s"}])  # 2 -> 3
    app.implement(v3, lambda d, c: EmailSent("x"), migrate)
    validator = app.get("send-email").validator
    assert validator is app.implementation("send-email").validator  # type: ignore[union-attr]
    assert validator.validate({"to": "a"}, 2) == {"to": "a", "subject": "s"}
    assert validator.validate({"to": "a", "subject": "t"}) == {"to": "a", "subject": "t"}
    with pytest.raises(MigrationError, match="no migration from version 1") as old:
        validator.validate({"to": "a"}, 1)
    assert not old.value.retryable
    assert old.value.info.type == "MigrationError"
    with pytest.raises(MigrationError, match="implements 3") as new:
        validator.validate({"to": "a"}, 4)
    assert (new.value.retryable, new.value.info.type) == (True, "VersionTooNew")
    with pytest.raises(ValidationError, match=r"input\.to"):
        validator.validate({"to": 1}, 2)
    app.close()


def test_a_registered_only_task_leaves_other_versions_to_its_worker() -> None:
    """Without the implementation, only inputs of the contract's version can be judged."""
    from taskhop.sdk import MigrationError, ValidationError

    app = create_app()
    validator = app.register(send_email.replace(version=2)).validator
    assert not validator.implemented
    with pytest.raises(ValidationError):
        validator.validate({"to": 1, "subject": "s"}, 2)
    with pytest.raises(MigrationError, match="its worker migrates it") as caught:
        validator.validate({"to": 1}, 1)
    assert caught.value.retryable
    app.close()


def test_app_envelope_builds_at_the_contract_version_through_middleware() -> None:
    """``app.envelope`` is dispatch's builder for JSON input; an unknown task still gets one."""
    from taskhop.sdk import Envelope, Middleware

    class Tag(Middleware):
        def before_dispatch(self, envelope: Envelope) -> Envelope | None:
            return envelope.replace(headers={"tag": "yes"})

    app = create_app(middleware=[Tag()])
    app.register(send_email.replace(version=4))
    built = app.envelope("send-email", {"to": 1}, idempotency_key="k")
    assert (built.version, built.input, built.idempotency_key) == (4, {"to": 1}, "k")
    assert built.headers == {"tag": "yes"}
    unknown = app.envelope("nope", {})
    assert (unknown.task, unknown.version) == ("nope", 1)
    app.close()


def test_load_app_is_public() -> None:
    """``taskhop.sdk.load_app`` is the one ``module:attribute`` loader every command uses."""
    from taskhop.sdk import load_app
    from taskhop.sdk._cli import load_app as cli_load_app

    assert cli_load_app is load_app
    with pytest.raises(SystemExit, match="expected 'module:attribute'"):
        load_app("nocolon")
