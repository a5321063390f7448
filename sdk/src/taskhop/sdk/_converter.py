"""The cattrs converter taskhop owns, and the translation of its errors into field paths.

One explicit converter per app (``make_converter()``), never a hidden global, so users can
register hooks for their own types without affecting anyone else. It is strict where the wire
is: JSON has real types, so ``"5"`` is not an int and ``1`` is not a string, and unknown keys
are errors (a typo in a field name is caught, not dropped).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace
from typing import (
    Annotated,
    Any,
    Generic,
    NotRequired,
    Required,
    TypeVar,
    cast,
    get_args,
    get_origin,
)

import attrs
from cattrs import Converter
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.json import make_converter as make_json_converter
from cattrs.v import format_exception
from taskhop.static_contracts import JsonValue, PayloadError, to_json_value

from ._errors import FieldError, ValidationError

__all__ = [
    "configure_strict_scalars",
    "configure_typeddict_required_keys",
    "field_errors",
    "make_converter",
    "structure",
    "typeddict_required_keys",
    "unstructure",
]

T = TypeVar("T")


class _WrongType(TypeError):
    """A scalar of the wrong JSON type; its message is already the one users should see."""


def make_converter() -> Converter:
    """A new JSON converter: strict scalars, unknown keys forbidden, datetimes as RFC 3339."""
    converter = make_json_converter(forbid_extra_keys=True)
    configure_strict_scalars(converter)
    configure_all_validator_errors(converter)
    configure_typeddict_required_keys(converter)
    configure_decimal(converter)
    return converter


def configure_decimal(converter: Converter) -> None:
    """Let ``converter`` carry ``Decimal``: from a Decimal or its exact text, to text in JSON.

    A number attribute annotated ``Decimal`` decodes to one; as a job input it travels as a
    string, so no float rounding ever touches it.
    """

    def structure_decimal(value: object, _: object) -> Decimal:
        if isinstance(value, Decimal):
            return value
        if isinstance(value, str):
            try:
                number = Decimal(value)
            except InvalidOperation:
                pass
            else:
                if number.is_finite():
                    return number
        raise ValueError(f"expected a decimal number as a string, got {type(value).__name__}")

    converter.register_structure_hook(Decimal, structure_decimal)
    converter.register_unstructure_hook(Decimal, str)


def configure_strict_scalars(converter: Converter) -> None:
    """Make ``str``, ``int``, ``float`` and ``bool`` accept only their own JSON type."""

    def strict(expected: type[Any], *accepted: type[Any]) -> Any:
        def hook(value: object, _: object) -> Any:
            if isinstance(value, accepted) and not (
                expected is not bool and isinstance(value, bool)
            ):
                return expected(value)
            raise _WrongType(f"expected {_json_name(expected)}, got {_json_name(type(value))}")

        return hook

    converter.register_structure_hook(str, strict(str, str))
    converter.register_structure_hook(int, strict(int, int))
    converter.register_structure_hook(float, strict(float, int, float))
    converter.register_structure_hook(bool, strict(bool, bool))


def typeddict_required_keys(tp: type[Any]) -> frozenset[str]:
    """The keys a TypedDict requires, read from its resolved annotations.

    Under ``from __future__ import annotations`` the TypedDict metaclass sees strings, not
    ``Required[...]`` / ``NotRequired[...]``, so ``__required_keys__`` sorts every key by
    ``total=`` alone (CPython 3.11 to 3.13). The resolved hints still carry the wrappers: a
    wrapped key is what its wrapper says, any other key keeps the ``total=`` of the class
    that declared it (which the metaclass did get right).
    """
    required = set(tp.__required_keys__)
    for name, hint in typing.get_type_hints(tp, include_extras=True).items():
        wrapper = _required_wrapper(hint)[1]
        if wrapper is Required:
            required.add(name)
        elif wrapper is NotRequired:
            required.discard(name)
    return frozenset(required)


def configure_typeddict_required_keys(converter: Converter) -> None:
    """Structure TypedDicts by their real required keys (see ``typeddict_required_keys``).

    cattrs reads ``__required_keys__``, wrong for ``NotRequired`` under postponed
    annotations. Only such TypedDicts get this hook: a stand-in TypedDict declared with
    resolved types, which cattrs compiles as usual, so validation costs what it did.
    """

    def misread(tp: Any) -> bool:
        cls = get_origin(tp) or tp
        return typing.is_typeddict(cls) and typeddict_required_keys(cls) != cls.__required_keys__

    def factory(tp: Any) -> Any:
        origin, args = get_origin(tp), get_args(tp)
        stand_in = _typeddict_stand_in(origin or tp)
        # cattrs' own TypedDict hook, as the converter builds it (typed with a bare dict).
        generate = cast("Callable[[Any], Any]", converter.gen_structure_typeddict)  # pyright: ignore[reportUnknownMemberType]
        return generate(stand_in[args] if origin else stand_in)

    converter.register_structure_hook_factory(misread, factory)


def _typeddict_stand_in(cls: type[Any]) -> Any:
    """A TypedDict like ``cls`` whose keys are each explicitly ``Required`` or ``NotRequired``."""
    required = typeddict_required_keys(cls)
    fields: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        bare = _required_wrapper(hint)[0]
        fields[name] = Required[bare] if name in required else NotRequired[bare]
    params: tuple[Any, ...] = getattr(cls, "__parameters__", ())
    generic: Any = Generic
    bases = (typing.TypedDict, generic[params]) if params else (typing.TypedDict,)
    namespace = {"__annotations__": fields, "__module__": cls.__module__}
    stand_in = types.new_class(cls.__name__, bases, {}, lambda ns: ns.update(namespace))
    stand_in.__qualname__ = cls.__qualname__
    return stand_in


def _required_wrapper(hint: Any) -> tuple[Any, Any]:
    """``hint`` without its ``Required`` / ``NotRequired`` layer, and that layer (or None).

    The layer may sit under ``Annotated`` (or ``ReadOnly``, 3.13); ``Annotated`` is kept.
    """
    origin = get_origin(hint)
    if origin is Required or origin is NotRequired:
        return get_args(hint)[0], origin
    if origin is Annotated:
        bare, wrapper = _required_wrapper(get_args(hint)[0])
        if wrapper is not None:
            return Annotated[(bare, *hint.__metadata__)], wrapper
    elif origin is not None and origin is getattr(typing, "ReadOnly", object()):
        return _required_wrapper(get_args(hint)[0])
    return hint, None


def configure_all_validator_errors(converter: Converter) -> None:
    """Report every failing attrs validator of a class, not only the first one.

    attrs runs validators inside ``__init__`` and stops at the first failure, and never gets
    there when another field fails to structure. On failure (only then, so valid input pays
    nothing), this runs each field's validator on its own and adds every error to the group.
    """

    def factory(cl: type[Any]) -> Any:
        base = make_dict_structure_fn(cl, converter)
        fields = attrs.fields(cl)

        def hook(data: Any, tp: Any) -> Any:
            try:
                return base(data, tp)
            except ClassValidationError as exc:
                raise _with_all_validator_errors(converter, cl, fields, data, exc) from None

        return hook

    converter.register_structure_hook_factory(attrs.has, factory)


def _with_all_validator_errors(
    converter: Converter,
    cl: type[Any],
    fields: tuple[attrs.Attribute[Any], ...],
    data: Any,
    exc: ClassValidationError,
) -> ClassValidationError:
    if not isinstance(data, dict):
        return exc
    with_notes, without = exc.group_exceptions()
    failed = {note.name for _, note in with_notes if isinstance(note, AttributeValidationNote)}
    values: dict[str, Any] = {}
    for field in fields:
        key = field.alias or field.name
        if field.name in failed or key not in data:
            continue
        try:
            values[field.name] = converter.structure(data[key], field.type or Any)
        except Exception:  # reported by the group already, or by the field's own class
            failed.add(field.name)
    partial = SimpleNamespace(**values)  # what a method validator sees as ``self``
    found: list[Exception] = []
    for field in fields:
        if field.validator is None or field.name not in values:
            continue
        try:
            field.validator(partial, field, values[field.name])
        except Exception as error:
            error.__notes__ = [AttributeValidationNote(str(error), field.name, field.type)]
            found.append(error)
    if not found:
        return exc
    # Keep structural errors and unknown keys; drop attrs' own copy of its first failure.
    messages = {str(e) for e in found}
    kept = [e for e, _ in with_notes] + [e for e in without if str(e) not in messages]
    # cattrs takes (message, exceptions, class); typeshed only knows ExceptionGroup's two.
    return ClassValidationError(exc.message, [*kept, *found], cl)  # pyright: ignore[reportCallIssue]


def structure(
    converter: Converter, data: object, tp: type[T], *, task: str, what: str = "input"
) -> T:
    """Structure JSON data into ``tp`` or raise ``ValidationError`` listing every bad field."""
    try:
        return converter.structure(data, tp)
    except Exception as exc:  # cattrs raises groups, attrs validators raise anything
        raise ValidationError(task, field_errors(exc, what), what=what) from exc


def unstructure(converter: Converter, value: object, tp: object, *, path: str) -> JsonValue:
    """Turn a typed value into JSON data, naming the path of anything JSON cannot carry."""
    try:
        raw = converter.unstructure(value, unstructure_as=tp)
    except Exception as exc:
        raise PayloadError(f"cannot unstructure {type(value).__name__}: {exc}", path=path) from exc
    return to_json_value(raw, path)


def field_errors(exc: BaseException, path: str) -> list[FieldError]:
    """Flatten a cattrs error tree into ``FieldError`` lines (paths like ``input.items[2].sku``)."""
    if isinstance(exc, ValidationError):  # a hook that structured a part itself: paths made
        return list(exc.errors)
    if isinstance(exc, ClassValidationError | IterableValidationError):
        errors: list[FieldError] = []
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            if isinstance(note, IterableValidationNote):
                errors.extend(field_errors(inner, f"{path}[{note.index!r}]"))
            elif isinstance(inner, ClassValidationError | IterableValidationError):
                errors.extend(field_errors(inner, f"{path}.{note.name}"))
            else:
                errors.append(_leaf(inner, f"{path}.{note.name}", named=True))
        names = _attrs_names(exc.cl) if isinstance(exc, ClassValidationError) else frozenset[str]()
        for inner in without:
            errors.extend(field_errors(inner, _validator_path(inner, path, names)))
        return errors
    return [_leaf(exc, path)]


def _leaf(exc: BaseException, path: str, *, named: bool = False) -> FieldError:
    args = exc.args
    # attrs validators raise (message, Attribute, ...): the attribute names the field.
    if len(args) >= 2 and isinstance(args[1], attrs.Attribute):
        where = path if named else f"{path}.{args[1].name}"
        return FieldError(where, str(args[0]))
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(sorted(exc.extra_fields))
        return FieldError(path, f"unknown field(s): {keys}")
    if isinstance(exc, KeyError):
        return FieldError(path, "required field missing")
    if isinstance(exc, _WrongType) or (isinstance(exc, ValueError) and str(exc)):
        return FieldError(path, str(exc))
    return FieldError(path, format_exception(exc, None))


def _attrs_names(cls: type[Any]) -> frozenset[str]:
    fields = getattr(cls, "__attrs_attrs__", ())
    return frozenset(a.name for a in fields)


def _validator_path(exc: BaseException, path: str, names: frozenset[str]) -> str:
    # attrs' bound validators (gt, min_len, ...) raise a bare message that quotes the field:
    # "'width' must be > 0: -3". Point the path at that field when it is one of the class's.
    match = _QUOTED.search(str(exc.args[0]) if exc.args else "")
    if (
        match
        and match.group(1) in names
        and not (len(exc.args) >= 2 and isinstance(exc.args[1], attrs.Attribute))
    ):
        return f"{path}.{match.group(1)}"
    return path


_QUOTED = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)'")


def _json_name(tp: type[Any]) -> str:
    names = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        type(None): "null",
        dict: "object",
        list: "array",
    }
    return names.get(tp, tp.__name__)
