"""Core benchmarks: import cost, envelope codec, worker-path overhead, in-memory throughput.

Figures are written to ``bench/results/core.json``. The machine is shared and noisy, so
every timing is the median of several runs and is reported next to a baseline measured in the
same run (bare interpreter start, calling the handler directly), as a ratio.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

RESULTS = Path(__file__).parent / "results" / "core.json"
SUMMARY = Path(__file__).parent / "results.md"
NOTES = "## What moved"
"""Where the hand-written closing notes of ``results.md`` start: kept across runs."""
# taskhop, its dependencies and the peers it is measured against: figures move with these.
PACKAGES = (
    "taskhop", "boto3", "botocore", "httpx", "attrs", "cattrs", "moto",
    "aws-lambda-powertools", "pydantic", "celery", "kombu",
)  # fmt: skip


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def median_seconds(fn: Callable[[], object], repeat: int = 7) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


class Greet(TypedDict):
    name: str


@dataclass
class Greeting:
    text: str


def greet(data: Greet, ctx: Any) -> Greeting:
    return Greeting(text=f"hi {data['name']}")


def bench_imports() -> dict[str, float]:
    """Fresh interpreters, interleaved: wall time and modules imported, over a bare start."""
    from bench._fresh import median_ms

    out = median_ms(
        {
            "python_startup": "pass",
            "import_static_contracts": "import taskhop.static_contracts",
            "import_sdk": "import taskhop.sdk",
            "import_attrs_cattrs": "import attrs, cattrs.preconf.json",
        },
        rounds=9,
        env=os.environ,
    )
    for name in ("import_static_contracts", "import_sdk", "import_attrs_cattrs"):
        out[f"{name}_over_startup_ms"] = out[f"{name}_ms"] - out["python_startup_ms"]
    return out


def bench_envelope(n: int = 20_000) -> dict[str, float]:
    from taskhop.static_contracts import Envelope

    envelope = Envelope(task="greet", input={"name": "ada", "tags": ["a", "b"], "n": 3})
    body = envelope.encode()
    encode = median_seconds(lambda: [envelope.encode() for _ in range(n)], 5) / n
    decode = median_seconds(lambda: [Envelope.decode(body) for _ in range(n)], 5) / n
    raw = median_seconds(lambda: [json.loads(body) for _ in range(n)], 5) / n
    return {
        "envelope_bytes": len(body),
        "encode_us": encode * 1e6,
        "decode_us": decode * 1e6,
        "json_loads_us": raw * 1e6,
        "decode_over_json_loads": decode / raw,
    }


def bench_worker(n: int = 5_000) -> dict[str, float]:
    from taskhop.sdk import JobContext, create_app, static_contract
    from taskhop.sdk.memory import MemoryQueue, MemoryStore
    from taskhop.static_contracts import Envelope

    contract = static_contract("greet", input=Greet, output=Greeting)
    app = create_app(queue=MemoryQueue(), store=MemoryStore())
    app.implement(contract, greet)
    worker = app.worker()
    ctx = JobContext(job_id="x", task="greet")
    direct = median_seconds(lambda: [greet({"name": "a"}, ctx) for _ in range(n)], 5) / n
    worker.process(Envelope(task="greet", input={"name": "warm-up"}).encode())

    samples: list[float] = []
    for _ in range(5):  # new job ids each round: an id the store has seen would be skipped
        bodies = [Envelope(task="greet", input={"name": f"n{i}"}).encode() for i in range(n)]
        started = time.perf_counter()
        for body in bodies:
            worker.process(body)
        samples.append(time.perf_counter() - started)
    per_job = statistics.median(samples) / n
    app.close()
    return {"handler_direct_us": direct * 1e6, "worker_process_us": per_job * 1e6}


def bench_memory_end_to_end(n: int = 2_000) -> dict[str, float]:
    from taskhop.sdk import create_app, static_contract

    contract = static_contract("greet", input=Greet, output=Greeting)
    with create_app() as app:
        bound = app.implement(contract, greet)
        started = time.perf_counter()
        handles = bound.dispatch_many([{"name": f"n{i}"} for i in range(n)])
        for handle in handles:
            handle.result(timeout=60)
        elapsed = time.perf_counter() - started
    return {"memory_jobs": n, "memory_jobs_per_s": n / elapsed}


def sections() -> list[tuple[str, Callable[[], Mapping[str, Any]]]]:
    """Every benchmark, in the order ``make bench`` runs them: one line each.

    Each is a name and a function returning its figures (name -> number); a function that
    returns several sections instead (name -> figures) gives each its own table, and its own
    name only selects it on the command line.
    """
    from bench import (
        aws,
        batch_latency,
        cost,
        edge,
        events,
        imports,
        lambda_cold,
        rss,
        worker_cpu,
        workflow_chord,
    )

    batch = functools.cache(batch_latency.measure)  # one run, read by two sections
    return [
        ("imports", bench_imports),
        ("envelope", bench_envelope),
        ("worker", bench_worker),
        ("memory", bench_memory_end_to_end),
        ("lambda_worker_init", lambda_cold.cold_starts),
        ("worker_rss", rss.run),
        ("batch_latency", lambda: batch_latency.figures(batch())),
        ("cost", lambda: cost.run(batch())),  # Lambda's duration from batch_latency
        ("worker_cpu", worker_cpu.run),
        ("edge_producers", edge.run),
        ("cold_starts", imports.run),  # static_contracts import, Lambda init, first jobs
        ("aws", aws.run),  # sqs_throughput, sqs_cold_start
        ("workflow_chord", workflow_chord.run),  # a 100-member chord on the local stack
        ("events", events.run),  # SNS to three filtered queues, taskhop vs hand-written glue
    ]


def rounded(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) for k, v in values.items()}


def main(argv: Sequence[str] = ()) -> None:
    """Run every benchmark, or only those named (``python -m bench batch_latency cost``).

    A partial run keeps the other sections' figures from the last results, and says which
    sections it ran and when.
    """
    known = sections()
    unknown = set(argv) - {name for name, _ in known}
    if unknown:
        raise SystemExit(f"no such benchmark: {', '.join(sorted(unknown))}")
    figures: dict[str, Any] = {"when": now()}
    if argv and RESULTS.exists():
        figures = json.loads(RESULTS.read_text())
        figures["rerun"] = {"when": now(), "sections": list(argv)}
    figures["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions(),
    }
    for name, bench in known:
        if argv and name not in argv:
            continue
        started = time.perf_counter()
        values = bench()
        several = all(isinstance(v, Mapping) for v in values.values())
        for section, figure in values.items() if several else [(name, values)]:
            figures[section] = rounded(figure)
            print(section, json.dumps(figures[section]))
        print(f"{name} took {time.perf_counter() - started:.0f} s")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    SUMMARY.write_text(summary(figures, notes(SUMMARY)))
    print(f"written to {RESULTS} and {SUMMARY}")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


GOALS = {
    "dispatch_over_raw_send": ">= 0.95",
    "dispatch_many_over_raw_batch": ">= 0.95",
    "static_producer_over_raw": "<= 1.05",
    "taskhop_over_boto3_ms": "<= 25",
    "runs_within_50_ms": ">= 9 of 10",
    "static_contracts_over_json_typing": "<= 1.15",
    "worker_cpu.stateless_taskhop_over_powertools": "<= 1.0",
    "worker_cpu.stateful_taskhop_over_powertools": "<= 0.3",
    "batch_latency.taskhop_over_powertools": "<= 0.3",
    "lambda_worker_init.taskhop_over_powertools": "well under 1",
    "static_http_over_bare_httpx": "<= 1.1",
    "static_sqs_http_over_raw_boto3": "<= 0.45",
    "dispatch_over_celery_send_task": ">= 8",
    "dispatch_many_over_celery_send_task": ">= 8",
    "taskhop_init_over_boto3_two_clients_mb": "<= 15",
    "taskhop_growth_1k_to_10k_mb": "<= 2 (noise)",
}


def notes(page: Path) -> str:
    """The hand-written notes at the end of the results page, if it has any."""
    text = page.read_text() if page.exists() else ""
    at = text.find("\n" + NOTES)
    return text[at + 1 :] if at >= 0 else ""


def summary(figures: dict[str, Any], notes: str = "") -> str:
    """The figures as a Markdown page, one table per benchmark, goals beside ratios."""
    machine = figures["machine"]
    rerun = figures.get("rerun")
    again = (
        f" Rerun on {rerun['when']}: {', '.join(rerun['sections'])} (the rest as first written)."
        if rerun
        else ""
    )
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {figures['when']} ({machine['platform']},"
        f" {machine['cpus']} CPUs, Python {machine['python']}).{again} A shared, noisy machine:"
        " medians of interleaved rounds; compare ratios, not absolute numbers.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + ".",
    ]
    for name, values in figures.items():
        if name in ("machine", "when", "rerun"):
            continue
        lines += ["", f"## {name}", "", "| figure | value | goal |", "|---|---|---|"]
        goals = [GOALS.get(f"{name}.{k}", GOALS.get(k, "")) for k in values]
        lines += [
            f"| {k} | {v} | {goal} |" for (k, v), goal in zip(values.items(), goals, strict=True)
        ]
    page = "\n".join(lines) + "\n"
    return page + "\n" + notes if notes else page


if __name__ == "__main__":
    main(sys.argv[1:])
