"""The five layers as a user installs them: built wheels, no checkout, nothing extra.

The wheels are built from the source folders (hatchling, no build isolation: no index is
needed). Then the lightest producer install is proven in a fresh virtual environment whose
only index is the wheel folder: ``taskhop-static-contracts`` plus ``taskhop-backends`` (the
layer holding the standard-library SQS transport) install nothing else, and a job dispatched
from there reaches a queue on the local moto server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest
from taskhop.static_contracts import Envelope

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {
    "static_contracts": "taskhop_static_contracts",
    "sdk": "taskhop_sdk",
    "backends": "taskhop_backends",
    "lambda_worker": "taskhop_lambda_worker",
    "infra": "taskhop_infra",
    ".": "taskhop",
}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every distribution's wheel, built into one folder."""
    out = tmp_path_factory.mktemp("wheels")
    for folder in LAYERS:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--wheel-dir",
                str(out),
                str(ROOT / folder),
            ],
            check=True,
            capture_output=True,
        )
    return out


def wheel_of(wheels: Path, dist: str) -> Path:
    (found,) = wheels.glob(f"{dist}-*.whl")
    return found


def test_every_layer_builds_one_wheel_in_the_namespace(wheels: Path) -> None:
    """Each wheel holds only ``taskhop/<layer>/`` (with py.typed), never taskhop/__init__.py."""
    for folder, dist in LAYERS.items():
        names = zipfile.ZipFile(wheel_of(wheels, dist)).namelist()
        code = [n for n in names if not n.split("/")[0].endswith(".dist-info")]
        assert "taskhop/__init__.py" not in names
        if folder == ".":
            assert code == [], code  # the meta-distribution only depends on the layers
            continue
        assert code, dist
        assert all(n.startswith(f"taskhop/{folder}/") for n in code), (dist, code[:5])
        assert f"taskhop/{folder}/py.typed" in names


def test_the_infra_wheel_ships_the_template_and_the_construct(wheels: Path) -> None:
    """A pip install can deploy: the SAM template and the CDK construct are in the wheel."""
    names = zipfile.ZipFile(wheel_of(wheels, "taskhop_infra")).namelist()
    assert {"taskhop/infra/template.yaml", "taskhop/infra/cdk.py"} <= set(names)


def test_the_cli_and_plugin_entry_points_name_the_new_modules(wheels: Path) -> None:
    """``taskhop`` and the pytest plugin come from the sdk wheel; ``worker`` from lambda_worker."""
    sdk = zipfile.ZipFile(wheel_of(wheels, "taskhop_sdk"))
    (entry,) = [n for n in sdk.namelist() if n.endswith("entry_points.txt")]
    text = sdk.read(entry).decode()
    assert "taskhop = taskhop.sdk._cli:main" in text
    assert "taskhop = taskhop.sdk.testing._plugin" in text
    worker = zipfile.ZipFile(wheel_of(wheels, "taskhop_lambda_worker"))
    (entry,) = [n for n in worker.namelist() if n.endswith("entry_points.txt")]
    assert "worker = taskhop.lambda_worker._cli:register" in worker.read(entry).decode()


def requirements(wheel: Path) -> list[str]:
    archive = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    lines = archive.read(metadata).decode().splitlines()
    return [line.split(": ", 1)[1] for line in lines if line.startswith("Requires-Dist: ")]


def test_static_contracts_requires_nothing(wheels: Path) -> None:
    """The zero-dependency layer declares no requirement at all in its metadata."""
    assert requirements(wheel_of(wheels, "taskhop_static_contracts")) == []


PRODUCER = textwrap.dedent(
    """
    import json, os, sys
    from typing import TypedDict
    from taskhop.backends.sqs_http import SqsHttpQueue
    from taskhop.static_contracts import Producer, static_contract

    class Greet(TypedDict):
        name: str

    greet = static_contract("greet", input=Greet, output=str)
    producer = Producer(SqsHttpQueue(sys.argv[1]))
    job_id = producer.register(greet).dispatch({"name": "Ada"})
    producer.close()
    print(json.dumps({"job_id": job_id, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
    """
)


def test_an_edge_producer_installs_two_wheels_and_dispatches(
    wheels: Path, tmp_path: Path, server_session: Any, moto_server: str
) -> None:
    """static_contracts + backends from the wheels alone: nothing else installed, a job sent."""
    env_dir = tmp_path / "edge"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--no-index"]
    install += ["--find-links", str(wheels), "taskhop-static-contracts", "taskhop-backends"]
    subprocess.run(install, check=True, capture_output=True)
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    installed = {p["name"] for p in json.loads(listed.stdout)}
    assert installed - {"pip", "setuptools"} == {"taskhop-backends", "taskhop-static-contracts"}

    sqs = server_session.client("sqs")
    url = sqs.create_queue(QueueName="edge-wheels")["QueueUrl"]
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_server,
    }
    done = subprocess.run(
        [str(python), "-I", "-c", PRODUCER, url],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the checkout: nothing may come from the source folders
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout.strip().splitlines()[-1])
    assert not set(sent["modules"]) & {"boto3", "botocore", "httpx", "attrs", "cattrs"}
    messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    envelope = Envelope.decode(messages[0]["Body"].encode())
    assert (envelope.id, envelope.task, envelope.input) == (
        sent["job_id"],
        "greet",
        {"name": "Ada"},
    )


SDK_ALONE = textwrap.dedent(
    """
    import importlib.abc, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"boto3", "botocore", "httpx", "moto"} or name.startswith(
                ("taskhop.backends", "taskhop.lambda_worker", "taskhop.infra")
            ):
                raise ImportError(f"{name} is not installed")
            return None

    sys.meta_path.insert(0, Refuse())
    from typing import TypedDict
    from taskhop.sdk import create_app, static_contract

    class Add(TypedDict):
        a: int
        b: int

    with create_app() as app:
        contract = static_contract("add", input=Add, output=int)
        app.implement(contract, lambda payload, ctx: payload["a"] + payload["b"])
        print(app.register(contract).dispatch({"a": 2, "b": 3}).result(timeout=10))
    """
)


def test_the_sdk_works_without_any_other_layer() -> None:
    """With backends, lambda_worker, infra, boto3 and httpx unimportable, the embedded app runs."""
    done = subprocess.run(
        [sys.executable, "-c", SDK_ALONE], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
