"""Frozen, slotted records that act as dataclasses without importing ``dataclasses``.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``...): ~6 ms,
a third of a producer's bare ``import json, typing``. So the envelope and the retry policy
are written out by hand on ``Record``, which gives them what ``@dataclass(frozen=True,
slots=True)`` would: ``==`` and ``hash`` field by field, a ``repr`` of every field,
``FrozenInstanceError`` on assignment, and pickling. The ``record`` decorator then lends the
class the dataclass metadata (``__dataclass_fields__``, ``__dataclass_params__``), built on
first access: ``dataclasses.replace``, ``fields``, ``asdict``, ``is_dataclass`` and dataclass
subclasses work as before, and whatever asks has imported ``dataclasses`` already.

A record's fields are its ``__slots__``, in order; its hand-written ``__init__`` takes them in
that order (the decorator checks), and its defaults are the dataclass defaults. A ``Factory``
default stands for a ``default_factory``. Type checkers see ``record`` as
``dataclasses.dataclass``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

__all__ = ["Factory", "Record", "record", "slot_setters"]


class Factory:
    """A default made afresh for each record, as a dataclass ``default_factory`` is."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], object]) -> None:
        self.make = make


class Record:
    """The methods ``@dataclass(frozen=True, slots=True)`` writes, driven by ``__slots__``."""

    __slots__: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__slots__])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record) and other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join([f"{name}={getattr(self, name)!r}" for name in self.__slots__])
        return f"{self.__class__.__qualname__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise _frozen(f"cannot delete field {name!r}")

    def __getstate__(self) -> list[Any]:
        return list(self._values())

    def __setstate__(self, state: list[Any]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            object.__setattr__(self, name, value)


def slot_setters(cls: type[Record]) -> tuple[Callable[[Any, Any], None], ...]:
    """Each field's slot setter, in field order, for the record's own constructors.

    Writing through one is what ``object.__setattr__`` does for a slot, minus the attribute
    lookup: half the cost (~40 ns), which counts in a constructor that writes 14 of them.
    """
    return tuple(cls.__dict__[name].__set__ for name in cls.__slots__)


def _frozen(message: str) -> Exception:
    from dataclasses import FrozenInstanceError  # a bug's path: the import may cost here

    return FrozenInstanceError(message)


class _DataclassMetadata:
    """One of a record class's two dataclass attributes, built when first read."""

    def __init__(self, cls: type[Record], name: str) -> None:
        self.cls = cls
        self.name = name

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        _lend_dataclass_metadata(self.cls)
        return self.cls.__dict__[self.name]


def _lend_dataclass_metadata(cls: type[Record]) -> None:
    """Give ``cls`` the metadata of the dataclass it would be (replacing the descriptors)."""
    import dataclasses

    defaults = _init_defaults(cls)

    def spec(name: str) -> Any:
        if name not in defaults:
            return dataclasses.field()
        default = defaults[name]
        if isinstance(default, Factory):
            return dataclasses.field(default_factory=default.make)
        return dataclasses.field(default=default)

    annotations: dict[str, Any] = cls.__annotations__
    shadow: Any = dataclasses.make_dataclass(
        cls.__name__,
        [(name, annotations[name], spec(name)) for name in cls.__slots__],
        frozen=True,
    )
    type.__setattr__(cls, "__dataclass_fields__", shadow.__dataclass_fields__)
    type.__setattr__(cls, "__dataclass_params__", shadow.__dataclass_params__)


def _init_params(cls: type[Record]) -> tuple[str, ...]:
    init: Any = cls.__init__
    code = init.__code__
    names: tuple[str, ...] = code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount]
    return names


def _init_defaults(cls: type[Record]) -> dict[str, object]:
    init: Any = cls.__init__
    names = _init_params(cls)
    positional = names[: init.__code__.co_argcount - 1]
    given: tuple[object, ...] = init.__defaults__ or ()
    defaults = dict(zip(positional[len(positional) - len(given) :], given, strict=True))
    return defaults | (init.__kwdefaults__ or {})


def _record(cls: type[Record]) -> type[Record]:
    if _init_params(cls) != cls.__slots__:
        raise TypeError(f"{cls.__name__}.__init__ must take the fields in __slots__ order")
    for name in ("__dataclass_fields__", "__dataclass_params__"):
        type.__setattr__(cls, name, _DataclassMetadata(cls, name))
    type.__setattr__(cls, "__match_args__", cls.__slots__)
    return cls


if TYPE_CHECKING:
    from dataclasses import dataclass as record
else:

    def record(*, frozen: bool) -> Callable[[type[Record]], type[Record]]:
        """``dataclass(frozen=True)`` for a ``Record`` subclass (see the module docstring)."""
        if not frozen:
            raise TypeError("records are frozen")
        return _record
