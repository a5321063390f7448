"""Cold starts: what importing taskhop costs a producer and a Lambda worker, in fresh interpreters.

(a) ``import taskhop.static_contracts`` against a bare ``python -S -c "import json, typing"``
    (the least any JSON producer with type hints pays); goal <= 1.15x. Like for like, both run
    with ``-S`` and the package comes from ``PYTHONPATH``, as a wheel in ``/var/task`` would;
    the same import through this virtualenv's ``site`` (editable installs, .pth hooks) is
    reported beside it.
(b) A Lambda worker's init (``bench.lambda_cold``'s handler module) against boto3 creating the
    same two clients; goal: median <= +25 ms, and within +50 ms in 9 runs of 10 (each round's
    two runs compared as a pair).
(c) What the init left for later: the first and the second job through that handler, in the
    same process (DynamoDB answered by a botocore hook, as in ``bench.rss``: no socket).

Every script's modules are compiled first (``bench._fresh.precompile``), rounds interleaved.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench._fresh import Script, precompile, samples_ms
from bench.lambda_cold import BOTO3, TASKHOP
from bench.rss import TASKHOP_JOBS

ROOT = Path(__file__).resolve().parent.parent
AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "x",
}
STATIC_CONTRACTS = {
    "json_typing": Script("import json, typing", flags=("-S",)),
    "static_contracts": Script(
        "import taskhop.static_contracts",
        flags=("-S",),
        env={"PYTHONPATH": str(ROOT / "static_contracts" / "src")},
    ),
    "static_contracts_site": Script("import taskhop.static_contracts"),
}
STUB_DYNAMODB = TASKHOP_JOBS  # DynamoDB answered in process, as in bench.rss
FIRST_JOBS = """
import time
from bench.worker_cpu import sqs_event
def timed(n):
    event = sqs_event([body(n)])
    started = time.perf_counter()
    answer = handler(event, None)
    assert answer == {"batchItemFailures": []}, answer
    return (time.perf_counter() - started) * 1000
first = timed(1)
second = timed(2)
print(json.dumps({"first_job_ms": first, "second_job_ms": second}))
"""


def static_contracts_import(rounds: int = 21) -> dict[str, float]:
    """(a): medians of each import, and the ratio the goal is about."""
    samples, modules = samples_ms(STATIC_CONTRACTS, rounds=rounds, env=os.environ)
    out = {f"{name}_ms": statistics.median(values) for name, values in samples.items()}
    out |= {f"{name}_modules": float(count) for name, count in modules.items()}
    out["static_contracts_over_json_typing"] = out["static_contracts_ms"] / out["json_typing_ms"]
    out["static_contracts_site_over_json_typing"] = (
        out["static_contracts_site_ms"] / out["json_typing_ms"]
    )
    return out


def lambda_init(rounds: int = 10) -> dict[str, float]:
    """(b): each init's median, the median difference, and the rounds within +50 ms."""
    env = {**os.environ, **AWS_ENV}
    scripts = {"boto3_two_clients": BOTO3, "taskhop_worker": TASKHOP}
    samples, modules = samples_ms(scripts, rounds=rounds, env=env)
    pairs = [
        t - b for t, b in zip(samples["taskhop_worker"], samples["boto3_two_clients"], strict=True)
    ]
    out = {f"{name}_ms": statistics.median(values) for name, values in samples.items()}
    out |= {f"{name}_modules": float(count) for name, count in modules.items()}
    out["taskhop_over_boto3_ms"] = statistics.median(pairs)
    out["taskhop_over_boto3_worst_ms"] = max(pairs)
    out["runs_within_50_ms"] = float(sum(p <= 50 for p in pairs))
    out["runs"] = float(rounds)
    return out


def first_jobs(rounds: int = 5) -> dict[str, float]:
    """(c): the first job's latency after init, and the second's, medians of fresh processes."""
    precompile()
    code = TASKHOP + STUB_DYNAMODB + FIRST_JOBS
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        done = subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            env={**os.environ, **AWS_ENV},
            cwd=ROOT,  # for bench.worker_cpu
            stdout=subprocess.PIPE,
            text=True,
        )
        for key, value in json.loads(done.stdout.splitlines()[-1]).items():
            samples.setdefault(key, []).append(value)
    return {key: statistics.median(values) for key, values in samples.items()}


def run() -> dict[str, dict[str, float]]:
    """Every figure above, as three sections (``bench/__main__`` gives each its own table)."""
    return {
        "import_static_contracts": static_contracts_import(),
        "lambda_init_over_boto3": lambda_init(),
        "lambda_first_jobs": first_jobs(),
    }


if __name__ == "__main__":
    for section, figures in run().items():
        for key, value in figures.items():
            print(f"{section}.{key:45s} {value:9.2f}")
