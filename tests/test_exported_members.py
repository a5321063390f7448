"""Each package's public door: ``__all__`` is sorted, complete and importable."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_MODULES = [
    "taskhop.static_contracts",
    "taskhop.static_contracts.limits",
    "taskhop.sdk",
    "taskhop.sdk.testing",
    "taskhop.sdk.memory",
    "taskhop.backends.sqs",
    "taskhop.backends.dynamodb",
    "taskhop.backends.s3",
    "taskhop.backends.http",
    "taskhop.backends.sqs_http",
    "taskhop.backends.api",
    "taskhop.lambda_worker",
    "taskhop.infra",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_names_every_public_member(name: str) -> None:
    """``__all__`` lists exactly the public names, sorted, and each one exists."""
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for member in exported:
        assert hasattr(module, member), member
    defined_here = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__.startswith(name)
    }
    assert defined_here <= set(exported)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_callables_have_docstrings(name: str) -> None:
    """Every exported class and function says why it exists."""
    module = importlib.import_module(name)
    for member in module.__all__:
        value = getattr(module, member)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{member} has no docstring"
