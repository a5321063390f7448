"""The WorkflowStore contract, run against ``MemoryStore`` and ``DynamoStore`` on moto.

Both must answer alike: create once, conditional saves that never lose an update, and the
index of open workflows the sweeper reads. The one difference is a size limit: DynamoDB
refuses a document over its item limit, memory has none.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from taskhop.sdk import StoreError, WorkflowStore
from taskhop.sdk.memory import MemoryStore

STORES = ["memory", "dynamodb"]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Any:
    """A fresh, empty workflow store of each kind (DynamoDB on moto, in process)."""
    if request.param == "memory":
        return MemoryStore()
    request.getfixturevalue("mocked_aws")
    from taskhop.backends.dynamodb import DynamoStore

    dynamo = DynamoStore("taskhop-jobs")
    dynamo.create_table()
    return dynamo


def workflow(wf_id: str, *, status: str = "running", due: float | None = None) -> dict[str, Any]:
    return {"id": wf_id, "status": status, "due": due, "steps": {}, "count": 0}


def test_store_implements_the_protocol(store: Any) -> None:
    assert isinstance(store, WorkflowStore)


def test_create_stores_once_then_answers_the_existing_document(store: Any) -> None:
    assert store.create_workflow(workflow("w1")) is None
    again = store.create_workflow({**workflow("w1"), "count": 99})
    assert again is not None
    assert (again.doc, again.rev) == (workflow("w1"), 1)


def test_load_of_a_missing_workflow_is_none(store: Any) -> None:
    assert store.load_workflow("nope") is None


def test_save_over_the_read_revision_bumps_it(store: Any) -> None:
    store.create_workflow(workflow("w1"))
    assert store.save_workflow({**workflow("w1"), "count": 1}, 1) is True
    stored = store.load_workflow("w1")
    assert (stored.doc["count"], stored.rev) == (1, 2)


def test_save_over_a_stale_revision_fails_and_changes_nothing(store: Any) -> None:
    store.create_workflow(workflow("w1"))
    assert store.save_workflow({**workflow("w1"), "count": 1}, 1)
    assert store.save_workflow({**workflow("w1"), "count": 7}, 1) is False
    stored = store.load_workflow("w1")
    assert (stored.doc["count"], stored.rev) == (1, 2)


def test_save_of_a_missing_workflow_fails(store: Any) -> None:
    assert store.save_workflow(workflow("ghost"), 1) is False
    assert store.load_workflow("ghost") is None


def increments(store: Any, times: int) -> Iterator[None]:
    """A read-modify-write loop of ``times`` increments, pausing between its read and write."""
    done = 0
    while done < times:
        stored = store.load_workflow("w1")
        yield  # the other writer may read, or write, here
        if store.save_workflow({**stored.doc, "count": stored.doc["count"] + 1}, stored.rev):
            done += 1


def test_interleaved_read_modify_writes_lose_no_update(store: Any) -> None:
    """Two writers that read the same revision each round: one wins, the other redoes it."""
    store.create_workflow(workflow("w1"))
    writers = [increments(store, 50), increments(store, 50)]
    while writers:
        for writer in list(writers):
            if next(writer, StopIteration) is StopIteration:
                writers.remove(writer)
    stored = store.load_workflow("w1")
    assert (stored.doc["count"], stored.rev) == (100, 101)


def test_threaded_read_modify_writes_lose_no_update() -> None:
    """The same with two real threads, on the memory store only.

    Each DynamoDB conditional write is atomic in the service (the interleaved test covers our
    side of it); moto in process is not thread-safe, so threads there would test moto.
    """
    store = MemoryStore()
    store.create_workflow(workflow("w1"))

    def bump() -> None:
        for _ in increments(store, 50):
            pass

    threads = [threading.Thread(target=bump) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stored = store.load_workflow("w1")
    assert stored is not None
    assert (stored.doc["count"], stored.rev) == (100, 101)


def test_due_workflows_lists_open_due_ones_soonest_first(store: Any) -> None:
    store.create_workflow(workflow("late", due=300.0))
    store.create_workflow(workflow("soon", due=100.0))
    store.create_workflow(workflow("mid", due=200.0))
    store.create_workflow(workflow("future", due=900.0))
    store.create_workflow(workflow("undue"))
    store.create_workflow(workflow("done", status="succeeded", due=50.0))
    assert list(store.due_workflows(500.0, 10)) == ["soon", "mid", "late"]
    assert list(store.due_workflows(500.0, 2)) == ["soon", "mid"]
    assert list(store.due_workflows(200.0, 10)) == ["soon", "mid"]  # at or before now
    assert list(store.due_workflows(50.0, 10)) == []


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_final_save_leaves_the_due_list(store: Any, status: str) -> None:
    store.create_workflow(workflow("w1", due=100.0))
    store.create_workflow(workflow("w2", due=150.0))
    assert store.save_workflow(workflow("w1", status=status, due=100.0), 1)
    assert list(store.due_workflows(500.0, 10)) == ["w2"]
    assert store.save_workflow(workflow("w2", due=None), 1)  # no due time: not listed
    assert list(store.due_workflows(500.0, 10)) == []
    assert store.save_workflow(workflow("w2", due=120.0), 2)  # due again: back in the list
    assert list(store.due_workflows(500.0, 10)) == ["w2"]


def test_many_due_workflows_across_shards_merge_in_order(store: Any) -> None:
    for n in range(40):
        store.create_workflow(workflow(f"wf-{n}", due=1000.0 - n))
    expected = [f"wf-{n}" for n in reversed(range(40))]
    assert list(store.due_workflows(2000.0, 100)) == expected
    assert list(store.due_workflows(2000.0, 5)) == expected[:5]


def test_documents_round_trip_exactly(store: Any) -> None:
    doc = {
        **workflow("wf-ünïcode-✓", due=1.25),
        "steps": {"a": {"state": "done", "deps": ["b", "c"], "n": [1, 2.5, -3e-7, None]}},
        "label": '日本語 \u2028 "quoted" \\ tab\t',
        "flags": [True, False, {}, []],
        "big": 2**53,
    }
    store.create_workflow(doc)
    assert store.load_workflow(doc["id"]).doc == doc
    changed = {**doc, "steps": {"a": {"state": "running", "x": 0.1 + 0.2}}}
    assert store.save_workflow(changed, 1)
    assert store.load_workflow(doc["id"]).doc == changed


def test_a_document_over_the_item_limit_is_refused_by_dynamodb_only(store: Any) -> None:
    from taskhop.backends.dynamodb import WORKFLOW_DOC_LIMIT

    huge = {**workflow("too-big"), "pad": "x" * (WORKFLOW_DOC_LIMIT + 1)}
    if isinstance(store, MemoryStore):  # memory has no limit: the same doc is kept
        assert store.create_workflow(huge) is None
        kept = store.load_workflow("too-big")
        assert kept is not None
        assert kept.doc == huge
        return
    with pytest.raises(StoreError, match=r"too-big.*\d+ bytes"):
        store.create_workflow(huge)
    assert store.load_workflow("too-big") is None
    store.create_workflow(workflow("too-big"))
    with pytest.raises(StoreError, match="too-big"):
        store.save_workflow(huge, 1)
    assert store.load_workflow("too-big").rev == 1


def test_a_table_made_before_workflows_gets_the_index(mocked_aws: None) -> None:
    from taskhop.backends.dynamodb import OPEN_WORKFLOWS_INDEX, DynamoStore

    dynamo = DynamoStore("old-table")
    dynamo.client.create_table(
        TableName="old-table",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamo.create_table()
    described = dynamo.client.describe_table(TableName="old-table")["Table"]
    assert [i["IndexName"] for i in described["GlobalSecondaryIndexes"]] == [OPEN_WORKFLOWS_INDEX]
    dynamo.create_workflow(workflow("w1", due=10.0))
    assert list(dynamo.due_workflows(20.0, 5)) == ["w1"]


def test_dynamodb_items_expire_retention_after_each_write(mocked_aws: None) -> None:
    from taskhop.backends.dynamodb import DynamoStore

    dynamo = DynamoStore("taskhop-jobs", retention="1d")
    dynamo.create_table()
    dynamo.create_workflow(workflow("w1", due=10.0))
    key = {"pk": {"S": "wf#w1"}}
    first = dynamo.client.get_item(TableName="taskhop-jobs", Key=key)["Item"]
    assert float(first["expires_at"]["N"]) - float(first["updated"]["N"]) == pytest.approx(86400)
    assert first["wf_open"]["S"].startswith("open#")
    dynamo.save_workflow(workflow("w1", status="failed"), 1)
    after = dynamo.client.get_item(TableName="taskhop-jobs", Key=key)["Item"]
    assert after["created"] == first["created"]
    assert float(after["expires_at"]["N"]) >= float(first["expires_at"]["N"])
    assert "wf_open" not in after
    assert "wf_due" not in after
