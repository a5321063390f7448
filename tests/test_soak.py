"""The reliability soak at 1,000 jobs (``make soak`` runs 10,000): see ``tests/soak.py``."""

from __future__ import annotations

import pytest
from soak import run_soak


@pytest.mark.timeout(900)
def test_soak_accounts_for_every_job_exactly() -> None:
    account = run_soak(1_000, seed=11)
    print(account.table())
    assert account.problems == []
    assert account.figures["workers killed (pid, job in flight)"]
    assert sum(account.figures["throttles injected"].values()) > 0
    kinds = {row[0]: row for row in account.rows}
    assert set(kinds) >= {"ok", "recovers", "exhausts", "permanent", "invalid", "charge", "poison"}
