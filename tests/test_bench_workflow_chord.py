"""The chord bench runs and its figures add up (a five-member chord; no timing asserted)."""

from __future__ import annotations

from bench.workflow_chord import measure


def test_the_chord_bench_counts_requests_per_step() -> None:
    figures = measure(members=5, rounds=1)
    assert figures["members"] == 5
    assert figures["dynamodb_writes_per_step"] >= 3  # begin, complete, the document
    assert figures["dynamodb_reads_per_step"] >= 2  # the gate, the document
    assert figures["document_writes_lost"] >= 0
    assert figures["batches"] >= 2  # the members, then the callback
    assert figures["usd_per_million_chords"] > 0
