"""Timing scripts in fresh interpreters, interleaved: how every cold-start bench measures."""

from __future__ import annotations

import compileall
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Script", "median_ms", "precompile", "samples_ms"]

# Appended to every script: how many modules its cold start loaded (``sys`` is always loaded,
# so importing it again adds none). The count goes to stdout's last line.
COUNT_MODULES = "\nimport sys as _sys\nprint(len(_sys.modules))\n"


@dataclass(frozen=True)
class Script:
    """A script with its interpreter flags (``-S``) and extra environment (``PYTHONPATH``)."""

    code: str
    flags: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict[str, str])


def precompile() -> None:
    """Write .pyc files for taskhop's packages, as installing the wheel would.

    boto3 and Powertools come from site-packages, where pip compiled them at install time; an
    editable install of taskhop has no .pyc (and PYTHONDONTWRITEBYTECODE may keep it so),
    which would charge taskhop ~25 ms of compilation the others do not pay. On Lambda, ship
    compiled files too (``python -m compileall`` in the build): /var/task is read-only.
    """
    root = Path(__file__).resolve().parent.parent
    for package in ("static_contracts", "sdk", "backends", "lambda_worker", "infra"):
        compileall.compile_dir(root / package, quiet=1)


def samples_ms(
    scripts: Mapping[str, str | Script], *, rounds: int, env: Mapping[str, str]
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Every round's wall time of each script in a fresh interpreter, and its module count.

    Rounds are interleaved, so drift in the machine's load hits every script alike, and the
    i-th sample of two scripts can be compared as a pair.
    """
    precompile()
    samples: dict[str, list[float]] = {name: [] for name in scripts}
    modules: dict[str, int] = {}
    for _ in range(rounds):
        for name, given in scripts.items():
            script = given if isinstance(given, Script) else Script(given)
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, *script.flags, "-c", script.code + COUNT_MODULES],
                check=True,
                env={**env, **script.env},
                stdout=subprocess.PIPE,
                text=True,
            )
            samples[name].append((time.perf_counter() - started) * 1000)
            modules[name] = int(done.stdout.split()[-1])
    return samples, modules


def median_ms(
    scripts: Mapping[str, str | Script], *, rounds: int, env: Mapping[str, str]
) -> dict[str, float]:
    """``{name}_ms``: the median wall time of each script in a fresh interpreter.

    Also ``{name}_modules``: ``len(sys.modules)`` when the script ends (the same every round).
    """
    samples, modules = samples_ms(scripts, rounds=rounds, env=env)
    out = {f"{name}_ms": statistics.median(values) for name, values in samples.items()}
    return out | {f"{name}_modules": modules[name] for name in scripts}
