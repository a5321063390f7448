"""Core benchmarks: import cost, envelope codec, worker-path overhead, in-memory throughput.

Figures are written to ``bench/results/core.json``. The machine is shared and noisy, so
every timing is the median of several runs and is reported next to a baseline measured in the
same run (bare interpreter start, calling the handler directly), as a ratio.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

RESULTS = Path(__file__).parent / "results" / "core.json"
SUMMARY = Path(__file__).parent / "results.md"
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


def main() -> None:
    figures: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": versions(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for name, bench in [
        ("imports", bench_imports),
        ("envelope", bench_envelope),
        ("worker", bench_worker),
        ("memory", bench_memory_end_to_end),
    ]:
        figures[name] = {k: round(v, 3) for k, v in bench().items()}
        print(name, json.dumps(figures[name]))
    from bench import aws, cost, edge, lambda_cold, rss, worker_cpu

    figures["lambda_worker_init"] = {k: round(v, 3) for k, v in lambda_cold.cold_starts().items()}
    print("lambda_worker_init", json.dumps(figures["lambda_worker_init"]))
    figures["worker_rss"] = {k: round(v, 3) for k, v in rss.run().items()}
    print("worker_rss", json.dumps(figures["worker_rss"]))
    figures["cost"] = cost.run()
    print("cost", json.dumps(figures["cost"]))
    figures["worker_cpu"] = {k: round(v, 3) for k, v in worker_cpu.run().items()}
    print("worker_cpu", json.dumps(figures["worker_cpu"]))
    figures["edge_producers"] = {k: round(v, 3) for k, v in edge.run().items()}
    print("edge_producers", json.dumps(figures["edge_producers"]))
    for name, values in aws.run().items():
        figures[name] = {k: round(v, 3) for k, v in values.items()}
        print(name, json.dumps(figures[name]))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    SUMMARY.write_text(summary(figures))
    print(f"written to {RESULTS} and {SUMMARY}")


GOALS = {
    "dispatch_over_raw_send": ">= 0.95",
    "dispatch_many_over_raw_batch": ">= 0.95",
    "static_producer_over_raw": "<= 1.05",
    "taskhop_over_boto3_ms": "<= 50",
    "worker_cpu.taskhop_over_powertools": "<= 0.85",
    "lambda_worker_init.taskhop_over_powertools": "well under 1",
    "static_http_over_bare_httpx": "<= 1.1",
    "static_sqs_http_over_raw_boto3": "<= 0.45",
    "dispatch_over_celery_send_task": ">= 8",
    "dispatch_many_over_celery_send_task": ">= 8",
    "taskhop_init_over_boto3_two_clients_mb": "<= 15",
    "taskhop_growth_1k_to_10k_mb": "<= 2 (noise)",
}


def summary(figures: dict[str, Any]) -> str:
    """The figures as a Markdown page, one table per benchmark, goals beside ratios."""
    machine = figures["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {figures['when']} ({machine['platform']},"
        f" {machine['cpus']} CPUs, Python {machine['python']}). A shared, noisy machine: medians"
        " of interleaved rounds; compare ratios, not absolute numbers.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + ".",
    ]
    for name, values in figures.items():
        if name in ("machine", "when"):
            continue
        lines += ["", f"## {name}", "", "| figure | value | goal |", "|---|---|---|"]
        goals = [GOALS.get(f"{name}.{k}", GOALS.get(k, "")) for k in values]
        lines += [
            f"| {k} | {v} | {goal} |" for (k, v), goal in zip(values.items(), goals, strict=True)
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
