"""Static contracts: a task's name, input and output types, and defaults, with no runtime.

A contract is the shared surface between a producer and a worker. ``static_contract`` keeps
the input and output purely as types (TypedDict, dataclass or attrs class, referenced but never
imported here), so a producer pays for no validator; the worker derives one from the same
types. ``taskhop.sdk.define_task`` builds the runtime-schema kind on top of this class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar, get_args

from ._durations import Duration, parse_duration
from ._errors import ContractError
from ._policy import RetryPolicy, RetrySpec

__all__ = ["StaticContract", "static_contract", "type_ref"]

I = TypeVar("I")
O = TypeVar("O")

_FIELDS = ("name", "input", "output", "retry", "timeout", "version", "queue")


class StaticContract(Generic[I, O]):
    """A typed, serializable task declaration without runtime schemas.

    Build one with ``static_contract(name, input=..., output=...)`` or with the subscript form
    ``StaticContract[SendEmail, EmailSent](name="send-email")``. Contracts are immutable and
    compare equal when every declared field is equal.
    """

    runtime_schema: ClassVar[bool] = False
    """Whether the producer validates input before sending (``define_task`` contracts do)."""

    name: str
    retry: RetryPolicy
    timeout: float | None
    version: int
    queue: str | None
    _input: Any
    _output: Any

    def __init__(
        self,
        name: str,
        *,
        input: type[I] | None = None,
        output: type[O] | None = None,
        retry: RetrySpec = None,
        timeout: Duration | None = None,
        version: int = 1,
        queue: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise ContractError(f"name: expected a non-empty string of <= 256 chars, got {name!r}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ContractError(f"{name}: version must be an int >= 1, got {version!r}")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise ContractError(f"{name}: queue must be a non-empty string, got {queue!r}")
        try:
            seconds = None if timeout is None else parse_duration(timeout, field="timeout")
        except ValueError as exc:
            raise ContractError(f"{name}: {exc}") from None
        if seconds == 0:
            raise ContractError(f"{name}: timeout must be > 0 (use None for no timeout)")
        try:
            policy = RetryPolicy.of(retry)
        except ContractError as exc:
            raise ContractError(f"{name}: {exc}") from None
        sets = object.__setattr__
        sets(self, "name", name)
        sets(self, "_input", _check_type(name, "input", input))
        sets(self, "_output", _check_type(name, "output", output))
        sets(self, "retry", policy)
        sets(self, "timeout", seconds)
        sets(self, "version", version)
        sets(self, "queue", queue)

    def __setattr__(self, key: str, value: object) -> None:
        # typing sets __orig_class__ after __init__ for the subscript form; that is how
        # StaticContract[A, B](name=...) learns A and B at run time. Nothing else may change.
        if key != "__orig_class__":
            raise AttributeError(f"contracts are immutable; use .replace({key}=...)")
        object.__setattr__(self, key, value)
        args = get_args(value)
        if len(args) == 2:
            for slot, arg in zip(("_input", "_output"), args, strict=True):
                if getattr(self, slot) is None and not isinstance(arg, TypeVar):
                    object.__setattr__(self, slot, arg)

    @property
    def input(self) -> type[I]:
        """The input type the handler receives."""
        resolved: type[I] = self._resolved("input")
        return resolved

    @property
    def output(self) -> type[O]:
        """The output type the handler returns."""
        resolved: type[O] = self._resolved("output")
        return resolved

    def _resolved(self, which: str) -> Any:  # Any: the caller's declared type[I] / type[O]
        value = getattr(self, f"_{which}")
        if value is None:
            raise ContractError(
                f"{self.name}: no {which} type; pass {which}=... or use "
                f"{type(self).__name__}[Input, Output](name=...)"
            )
        return value

    def replace(self, **changes: Any) -> StaticContract[I, O]:
        """A copy with some fields changed (worker-side overrides use this)."""
        fields: dict[str, Any] = {f: getattr(self, f) for f in _FIELDS}
        fields.update(changes)
        name = fields.pop("name")
        return type(self)(name, **fields)

    def to_dict(self) -> dict[str, Any]:
        """The contract as JSON data; types become ``"module:QualName"`` references."""
        return {
            "name": self.name,
            "kind": "define_task" if self.runtime_schema else "static",
            "input": type_ref(self.input),
            "output": type_ref(self.output),
            "retry": self.retry.to_dict(),
            "timeout": self.timeout,
            "version": self.version,
            "queue": self.queue,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, types: Mapping[str, type[Any]] | None = None
    ) -> StaticContract[Any, Any]:
        """Rebuild a contract from ``to_dict()`` output.

        Type references are looked up in ``types`` first, then imported; a reference that
        cannot be resolved raises ``ContractError`` naming it.
        """
        unknown = set(data) - {*_FIELDS, "kind"}
        if unknown:
            raise ContractError(f"contract: unknown key(s) {sorted(unknown)}")
        if "name" not in data:
            raise ContractError("contract: 'name' is required")
        kind = data.get("kind", "define_task" if cls.runtime_schema else "static")
        if (kind == "define_task") != cls.runtime_schema:
            loader = "taskhop.sdk.TaskContract" if kind == "define_task" else "StaticContract"
            raise ContractError(
                f"{data['name']}: a {kind!r} contract; load it with {loader}.from_dict so"
                " producer-side validation stays as declared"
            )
        resolved = {
            k: _resolve(data["name"], k, data.get(k), types or {}) for k in ("input", "output")
        }
        return cls(
            data["name"],
            retry=data.get("retry"),
            timeout=data.get("timeout"),
            version=data.get("version", 1),
            queue=data.get("queue"),
            **resolved,
        )

    def _key(self) -> tuple[Any, ...]:
        return (
            type(self).runtime_schema,
            *(getattr(self, f"_{f}", None) for f in ("input", "output")),
            self.name,
            self.retry,
            self.timeout,
            self.version,
            self.queue,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StaticContract):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        def show(t: object) -> str:
            return getattr(t, "__qualname__", repr(t))

        kind = type(self).__name__
        return f"{kind}({self.name!r}, input={show(self._input)}, output={show(self._output)})"


def static_contract(
    name: str,
    *,
    input: type[I],
    output: type[O],
    retry: RetrySpec = None,
    timeout: Duration | None = None,
    version: int = 1,
    queue: str | None = None,
) -> StaticContract[I, O]:
    """Declare a task by name and types only: the producer ships no validator.

    Args:
        name: the task name jobs are routed by (unique per app).
        input: the input type (TypedDict, dataclass or attrs class).
        output: the output type.
        retry: a ``RetryPolicy``, a number of attempts, or a dict of its options.
        timeout: the handler's time budget (``"30s"``, seconds, or a ``timedelta``).
        version: the input schema version; raise it when the input shape changes and give
            the worker migrations for older jobs.
        queue: a logical queue name for transports that route by it.

    """
    return StaticContract(
        name,
        input=input,
        output=output,
        retry=retry,
        timeout=timeout,
        version=version,
        queue=queue,
    )


def type_ref(tp: object) -> str:
    """``"module:QualName"`` for a class, or its ``repr`` for other type expressions."""
    module, qualname = getattr(tp, "__module__", None), getattr(tp, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<locals>" not in qualname:
        return f"{module}:{qualname}"
    return repr(tp)


def _check_type(name: str, which: str, tp: object) -> object:
    if tp is not None and not isinstance(tp, type) and not get_args(tp) and tp is not Any:
        raise ContractError(f"{name}: {which} must be a type, got {tp!r}")
    return tp


def _resolve(name: str, which: str, ref: object, types: Mapping[str, type[Any]]) -> Any:
    if not isinstance(ref, str):
        raise ContractError(f"{name}: {which} must be a 'module:QualName' string, got {ref!r}")
    if ref in types:
        return types[ref]
    module_name, _, qualname = ref.partition(":")
    import importlib

    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ContractError(f"{name}: cannot resolve {which} type {ref!r}: {exc}") from None
    return obj
