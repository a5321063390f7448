"""What a cold start imports: structure only (the timings live in ``bench/imports.py``).

A producer's ``import taskhop.static_contracts`` must not load what most producers never use
(``dataclasses`` and the ``inspect`` it imports, ``hashlib``/``hmac`` for signing, ``random``
for retry jitter, ``threading``), and a Lambda worker's init must not load the HTTP endpoint
or the local event source mapping. Each check runs a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def loaded_by(code: str) -> set[str]:
    """The modules ``code`` adds to a fresh interpreter's ``sys.modules``."""
    script = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        f"{code}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "module", ["dataclasses", "inspect", "hashlib", "hmac", "random", "threading", "importlib"]
)
def test_static_contracts_import_leaves_unused_helpers_unloaded(module: str) -> None:
    """``import taskhop.static_contracts`` loads none of the helpers a producer may never use."""
    assert module not in loaded_by("import taskhop.static_contracts")


def test_static_contracts_import_loads_no_signing_or_producer_module() -> None:
    """Signing and the producer side are loaded by their first lookup, not by the import."""
    loaded = loaded_by("import taskhop.static_contracts")
    assert (
        not {
            "taskhop.static_contracts._signing",
            "taskhop.static_contracts._producer",
            "taskhop.static_contracts._transport",
        }
        & loaded
    )


def test_a_lazy_name_loads_its_module_on_first_lookup() -> None:
    """``from taskhop.static_contracts import Verifier`` loads signing; hashlib waits for a sign."""
    loaded = loaded_by("from taskhop.static_contracts import Producer, Verifier")
    assert {"taskhop.static_contracts._signing", "taskhop.static_contracts._producer"} <= loaded
    assert "hashlib" not in loaded
    assert "hashlib" in loaded_by("from taskhop.static_contracts import sign\nsign('k', '1', b'')")


def test_using_an_envelope_and_a_policy_stays_off_dataclasses() -> None:
    """Building, encoding, decoding and retrying a job loads neither dataclasses nor random."""
    loaded = loaded_by(
        "from taskhop.static_contracts import Envelope, RetryPolicy, static_contract\n"
        "static_contract('t', input=dict, output=dict, retry={'attempts': 2, 'delay': '1s'})\n"
        "e = Envelope.decode(Envelope(task='t', input={'n': 1}).encode())\n"
        "assert e.retried(not_before=None).attempt == 2 and e == e.replace()\n"
        "RetryPolicy(jitter=False).delay_for(2)\n"
    )
    assert not {"dataclasses", "inspect", "random", "hashlib"} & loaded


def test_a_lambda_worker_init_does_not_load_the_http_endpoint_or_local_mapping() -> None:
    """``import taskhop.lambda_worker`` for ``make_handler`` leaves HTTP and local hosting out."""
    loaded = loaded_by("from taskhop.lambda_worker import make_handler")
    assert not {"taskhop.lambda_worker._http", "taskhop.lambda_worker._local"} & loaded
