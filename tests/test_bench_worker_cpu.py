"""The worker CPU benchmark compares like for like: what each side does, never how fast.

Speeds are the bench's to report (``make bench``); this checks that every runner processes
the whole event, and that the stateful sides really keep state: taskhop records each job,
Powertools' idempotency layer stores each envelope's job id and refuses a second run of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench import worker_cpu


def test_run_reports_both_pairs() -> None:
    figures = worker_cpu.run(n=20, rounds=1)
    assert set(figures) == {
        f"{pair}_{figure}"
        for pair in worker_cpu.PAIRS
        for figure in (
            "taskhop_us_per_message",
            "powertools_us_per_message",
            "taskhop_over_powertools",
        )
    }
    assert all(value > 0 for value in figures.values())


@pytest.mark.parametrize("stateful", [False, True])
@pytest.mark.parametrize("runner", [worker_cpu.taskhop_runner, worker_cpu.powertools_runner])
def test_every_runner_processes_the_whole_event(
    runner: Callable[..., Callable[[], float]], stateful: bool
) -> None:
    run = runner(5, stateful=stateful)
    assert run() > 0  # each run asserts its answer has no failures


def test_the_powertools_layer_keys_by_job_id_and_refuses_a_second_run() -> None:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
    )
    from taskhop.lambda_worker import LocalContext

    layer = worker_cpu.dict_persistence()
    config = IdempotencyConfig(event_key_jmespath="id", use_local_cache=False)
    context: Any = LocalContext(timeout=60)  # Lambda's context, as far as Powertools reads it
    config.register_lambda_context(context)
    runs: list[str] = []

    @idempotent_function(  # type: ignore[untyped-decorator]
        data_keyword_argument="envelope", config=config, persistence_store=layer
    )
    def once(envelope: dict[str, str]) -> str:
        runs.append(envelope["id"])
        if len(runs) == 1:  # while the first run is in progress, a second is refused
            with pytest.raises(IdempotencyAlreadyInProgressError):
                once(envelope=envelope)
        return "done"

    assert once(envelope={"id": "job-1"}) == "done"
    assert once(envelope={"id": "job-1"}) == "done"  # the stored result, no second run
    assert runs == ["job-1"]
    assert len(layer.items) == 1
