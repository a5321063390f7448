"""Worker memory: RSS after a Lambda init, and whether it grows over 10,000 jobs.

Lambda bills by configured memory and a 128 MB function must fit, so the bench asks two
things of each worker: how much the init costs on top of boto3 with its two clients (peak
RSS), and whether RSS keeps climbing as jobs go through one warm process (a leak shows up
there, invocation after invocation). Each script runs in a fresh interpreter: the init is
``bench.lambda_cold``'s, then 1,000 SQS events of 10 records each go through the handler,
with RSS taken after 1,000 and 10,000 jobs. No I/O: taskhop's DynamoDB client answers from
a botocore ``before-send`` hook (every conditional write succeeds), so the whole client path
runs except the socket; nothing needs the SQS client while every job succeeds.

Peak is ``VmHWM`` and current is ``VmRSS`` from ``/proc/self/status`` (Linux), not
``ru_maxrss``: Linux carries the parent's peak over into a child's ``ru_maxrss`` across the
fork and exec (a bare interpreter spawned by this 50 MB bench reads 50 MB), while ``VmHWM``
belongs to the new process's own address space. Each figure is the median of ``runs`` fresh
processes per script, interleaved.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench._fresh import precompile
from bench.lambda_cold import BOTO3, POWERTOOLS, TASKHOP

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json as _json, os as _os
_marks = {}
def mark(name):
    with open("/proc/self/status") as status:
        kb = {k: int(v.split()[0]) for k, v in (line.split(":") for line in status)
              if k in ("VmRSS", "VmHWM")}
    _marks[f"{name}_rss_mb"] = kb["VmRSS"] / 1024
    _marks[f"{name}_peak_mb"] = kb["VmHWM"] / 1024
"""
REPORT = "\nprint(_json.dumps(_marks))\n"

# 1,000 events of 10 records; stdout (one log line per job) goes to /dev/null meanwhile.
JOBS = """
import contextlib
from bench.worker_cpu import sqs_event
with open(_os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
    for batch in range(1000):
        answer = handler(sqs_event([body(batch * 10 + i) for i in range(10)]), None)
        assert answer == {"batchItemFailures": []}, answer
        if batch == 99:
            mark("jobs_1k")
mark("jobs_10k")
"""
TASKHOP_JOBS = """
import json
from botocore.awsrequest import AWSResponse
from taskhop.static_contracts import Envelope
class Stream:
    def __init__(self, data): self.data = data
    def stream(self, **kwargs): yield self.data
def dynamodb(request, **kwargs):
    sent = json.loads(request.body)
    answer = {}
    if sent.get("ReturnValues") == "ALL_NEW":  # begin(): the item as it now is
        values = sent["ExpressionAttributeValues"]
        answer["Attributes"] = {"pk": sent["Key"]["pk"], "task": values[":t"],
            "status": values[":run"], "attempt": {"N": "1"}, "lease": values[":l"]}
    return AWSResponse(request.url, 200, {}, Stream(json.dumps(answer).encode()))
app.store.client.meta.events.register("before-send.dynamodb", dynamodb)
def body(n):
    return Envelope(task="double", input={"n": n}).encode().decode()
"""
POWERTOOLS_JOBS = """
import json
from aws_lambda_powertools.utilities.batch import process_partial_response
from pydantic import Json
class Record(SqsRecordModel):
    body: Json[In]
processor = BatchProcessor(event_type=EventType.SQS, model=Record)
def double(record):
    return record.body.n * 2
def handler(event, context):
    return process_partial_response(
        event=event, record_handler=double, processor=processor, context=context
    )
def body(n):
    return json.dumps({"n": n})
"""
SCRIPTS = {
    "bare_python": "mark('init')",
    "boto3_two_clients": BOTO3 + "\nmark('init')",
    "taskhop_worker": TASKHOP + "\nmark('init')\n" + TASKHOP_JOBS + JOBS,
    "powertools_batch_parser": POWERTOOLS + "\nmark('init')\n" + POWERTOOLS_JOBS + JOBS,
}


def measure(code: str) -> dict[str, float]:
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE + code + REPORT],
        check=True,
        env=env,
        cwd=ROOT,  # for bench.worker_cpu
        stdout=subprocess.PIPE,
        text=True,
    )
    marks: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return marks


def run(runs: int = 3) -> dict[str, float]:
    precompile()
    samples: dict[str, list[float]] = {}
    for _ in range(runs):  # interleaved, so drift in the machine's load hits every script
        for name, code in SCRIPTS.items():
            marks = measure(code)
            for worker in ("taskhop", "powertools"):
                if name.startswith(worker):
                    marks["growth_1k_to_10k_mb"] = (
                        marks["jobs_10k_rss_mb"] - marks["jobs_1k_rss_mb"]
                    )
            for key, value in marks.items():
                samples.setdefault(f"{name}_{key}", []).append(value)
    out = {key: statistics.median(values) for key, values in samples.items()}
    boto3_mb = out["boto3_two_clients_init_peak_mb"]
    out["taskhop_init_over_boto3_two_clients_mb"] = out["taskhop_worker_init_peak_mb"] - boto3_mb
    powertools_mb = out["powertools_batch_parser_init_peak_mb"]
    out["powertools_init_over_boto3_two_clients_mb"] = powertools_mb - boto3_mb
    out["taskhop_growth_1k_to_10k_mb"] = out.pop("taskhop_worker_growth_1k_to_10k_mb")
    out["powertools_growth_1k_to_10k_mb"] = out.pop("powertools_batch_parser_growth_1k_to_10k_mb")
    return out
