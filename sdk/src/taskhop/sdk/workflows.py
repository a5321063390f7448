"""Workflows: chains, groups, chords, maps, chunks and step graphs, from contracts only.

``from taskhop.sdk import workflows as wf`` and ``wf.map(...)`` / ``wf.chunk(...)`` (their
names shadow built-ins, so ``taskhop.sdk`` itself exports the rest only). See
``docs/workflows.md``.
"""

from ._errors import (
    NonDeterminismError,
    StepCancelled,
    WorkflowCancelled,
    WorkflowDefinitionError,
    WorkflowFailed,
)
from ._workflow_build import Flow, Plan, Signature, chain, chord, chunk, group, map
from ._workflow_engine import SweepReport, WorkflowEngine, engine_of
from ._workflow_handle import StepView, WorkflowHandle
from ._workflow_steps import Step, StepGraph
from ._workflow_store import StoredWorkflow, WorkflowStore
from ._workflow_sweeper import SWEEP_TASK, schedule_sweeper

__all__ = [
    "SWEEP_TASK",
    "Flow",
    "NonDeterminismError",
    "Plan",
    "Signature",
    "Step",
    "StepCancelled",
    "StepGraph",
    "StepView",
    "StoredWorkflow",
    "SweepReport",
    "WorkflowCancelled",
    "WorkflowDefinitionError",
    "WorkflowEngine",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowStore",
    "chain",
    "chord",
    "chunk",
    "engine_of",
    "group",
    "map",
    "schedule_sweeper",
]
