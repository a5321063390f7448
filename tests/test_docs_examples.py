"""The documentation's code runs: the quick start program and the README's quick start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "docs" / "examples" / "quickstart.py"
README = ROOT / "README.md"


def run_python(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the interpreter of this test session from the repository root."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def readme_quick_start() -> str:
    """The first python code block after the README's ``## Quick start`` heading."""
    text = README.read_text(encoding="utf-8")
    _, heading, rest = text.partition("\n## Quick start\n")
    assert heading, "README.md has no '## Quick start' heading"
    block = re.search(r"```python\n(.*?)```", rest, re.DOTALL)
    assert block is not None, "no python code block after '## Quick start'"
    return block.group(1)


def test_quickstart_example_runs_and_narrates_each_step() -> None:
    """``docs/examples/quickstart.py`` (the in-process tour) exits 0 and shows every step."""
    done = run_python(["-W", "error", str(QUICKSTART)])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[worker] send-email attempt 2/3 to alice@example.com" in out
    assert "status: succeeded, after 2 attempts" in out
    assert "ValidationError: invalid input for task 'resize'" in out
    assert "    input.width: " in out
    assert "TaskRejected: ValidationError: invalid input for task 'send-email'" in out
    assert "    input.to: expected string, got integer" in out
    assert "second job duplicate_of first job: True" in out
    assert "Resized(key='thumbs/256/cat.png', width=256)" in out
    assert "Resized(key='thumbs/640/dog.png', width=640)" in out
    assert out.rstrip().endswith("done")


def test_readme_quick_start_runs() -> None:
    """The README's quick start code block runs as written and prints a typed result."""
    code = readme_quick_start()
    assert "dispatch(" in code
    assert ".result(" in code
    done = run_python(["-W", "error", "-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("EmailSent(message_id='msg-")


def test_make_demo_runs_the_real_flow_and_accounts_for_every_job() -> None:
    """``make demo``: dev stack, static-contract producer, summary, and nothing left running."""
    env = {**os.environ, "DEMO_JOBS": "40"}
    env.pop("AWS_ENDPOINT_URL", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every job accounted for: True" in done.stdout
    assert "dev stack stopped" in done.stdout
