"""``taskhop dlq redrive --app``: the command line reads the app's store and reruns the job."""

from __future__ import annotations

import json
import sys
import types

import pytest
from taskhop.sdk import JobStatus
from taskhop.sdk._cli import main
from test_redrive import World, world  # noqa: F401  (the fixture, shared)


def test_dlq_redrive_with_app_reruns_the_job(
    world: World,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Dry run first (nothing moves), then the redrive: the job runs again and succeeds."""
    module = types.ModuleType("redrive_cli_app")
    setattr(module, "app", world.app)  # noqa: B010  # a module made at run time
    monkeypatch.setitem(sys.modules, "redrive_cli_app", module)
    job = world.failed_into_dlq()
    capsys.readouterr()
    argv = ["dlq", "redrive", "--app", "redrive_cli_app:app"]
    argv += ["--dlq-url", world.dlq, "--queue-url", world.queue]
    assert main([*argv, "--dry-run"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["job_id"] == job
    assert lines[0]["decision"] == "rerun"
    assert lines[-1]["would_redrive"] == 1
    assert world.letters() == 1
    assert world.queued() == 0
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["redriven"] == 1
    assert world.letters() == 0
    world.failing = False
    world.drain()
    record = world.store.get(job)
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert [entry.status for entry in record.restarts] == [JobStatus.FAILED]
