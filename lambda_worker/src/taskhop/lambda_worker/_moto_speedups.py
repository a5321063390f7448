"""Speed-ups for the moto server behind the dev stack and the tests: same answers, less work.

Stock moto 5.2.5 spends most of a local job's time on work whose answer does not change:

- SQS: every SendMessage and every message a ReceiveMessage hands out computes the queue's
  whole attribute set (``Queue.attributes``), which counts the messages by reading the clock
  two or three times per message: O(depth) with a large constant (about 4.5 ms a send at
  depth 0, 46 ms at depth 2,000). ``DeleteMessage`` and ``ChangeMessageVisibility`` build a
  list of receipt handles for every message on the queue to find one.
- DynamoDB: every UpdateItem parses its update expression twice and deep-copies the tree
  before validating it (taskhop's job writes are one SET/REMOVE expression of ~90 nodes), and
  each of the ten validation passes rebuilds its node-type table at every node. Its
  condition expression is parsed twice too, names and values substituted as it parses.

``apply()`` replaces those pieces with equivalents: the attributes are the same dict, counted
in one pass with one clock read; the retention check reads the one attribute it needs;
deletes and visibility changes find their message by its receipt handles in one pass; parsed
update expressions are kept by their text (the tree is never mutated: the validator copies
it, here by a pickle round trip instead of ``deepcopy``), and so are parsed conditions,
their names and values looked up per request. The changes are checked only
against the moto versions in ``CHECKED_ON``; on any other version ``apply()`` changes nothing
and logs a note, and moto runs as shipped (slower, never wrong).

Applied by ``taskhop dev`` to its moto server and by the test suite's moto server fixtures,
never on import: a process that uses moto for its own tests keeps stock moto.
"""

from __future__ import annotations

import functools
import json
import logging
import pickle
import threading
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import Any

__all__ = ["CHECKED_ON", "apply", "applied", "speedups"]

CHECKED_ON = frozenset({"5.2.5"})
"""moto versions these replacements were read against and tested on (``moto.__version__``)."""

_log = logging.getLogger("taskhop.dev")
_undo: list[Callable[[], None]] = []


def applied() -> bool:
    """Whether the speed-ups are in place in this process."""
    return bool(_undo)


def apply(version: str | None = None) -> bool:
    """Put the speed-ups in place (once per process); False, with a logged note, if not.

    Args:
        version: the moto version to check (default: the installed ``moto.__version__``);
            the replacements go in only when it is in ``CHECKED_ON``.

    """
    if _undo:
        return True
    import moto

    version = moto.__version__ if version is None else version
    if version not in CHECKED_ON:
        _log.warning(
            "moto %s: the dev stack's moto speed-ups were checked on %s only; running stock"
            " moto (correct, but SQS calls slow down as a queue grows)",
            version,
            ", ".join(sorted(CHECKED_ON)),
        )
        return False
    _patch_server()
    _patch_sqs()
    _patch_dynamodb()
    return True


def undo() -> None:
    """Put stock moto back (for tests of the pin)."""
    while _undo:
        _undo.pop()()


@contextmanager
def speedups(version: str | None = None) -> Generator[bool]:
    """``apply()`` for the duration of a block, then stock moto again if this block applied it."""
    ours = not _undo and apply(version)
    try:
        yield applied()
    finally:
        if ours:
            undo()


def _replace(owner: Any, name: str, value: Any) -> None:
    """Set ``owner.name``, remembering how to put back what was there (or inherited)."""
    if name in owner.__dict__:
        original = owner.__dict__[name]
        _undo.append(lambda: setattr(owner, name, original))
    else:
        _undo.append(lambda: delattr(owner, name))
    setattr(owner, name, value)


def _patch_server() -> None:
    import moto.backends as backends

    modules = tuple(backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        """The service folders of moto, listed once (stock lists them on every request)."""
        return modules

    _replace(backends, "list_of_moto_modules", list_of_moto_modules)


# -- SQS --------------------------------------------------------------------------------------


def _patch_sqs() -> None:
    import moto.sqs.models as sqs_models
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid

    models: Any = sqs_models  # untyped, and read at call time (its clock may be swapped)
    queue_cls, backend_cls = models.Queue, models.SQSBackend

    def now() -> float:
        # Looked up at each call: a server may swap the module's clock (tests/soak.py does).
        return float(models.unix_time_millis())

    fields = {
        group: [(name, camelcase_to_underscores(name)) for name in names]
        for group, names in (
            ("base", queue_cls.BASE_ATTRIBUTES),
            ("fifo", queue_cls.FIFO_ATTRIBUTES),
            ("kms", queue_cls.KMS_ATTRIBUTES),
        )
    }
    counters = {
        "approximate_number_of_messages",
        "approximate_number_of_messages_delayed",
        "approximate_number_of_messages_not_visible",
    }

    def counts(queue: Any) -> dict[str, int]:
        """The three message counts in one pass, all as of one instant."""
        instant = now()
        visible = delayed = hidden = 0
        for message in queue._messages:
            is_delayed = instant < message.delayed_until
            if instant > message.visible_at:
                visible += not is_delayed
            else:
                hidden += 1
            delayed += is_delayed
        return {
            "approximate_number_of_messages": visible,
            "approximate_number_of_messages_delayed": delayed,
            "approximate_number_of_messages_not_visible": hidden,
        }

    def attributes(self: Any) -> dict[str, Any]:
        """``Queue.attributes``, the same dict: names mapped once, messages counted once."""
        counted = counts(self)
        groups = ["base"] + ["fifo"] * bool(self.fifo_queue)
        groups += ["kms"] * bool(self.kms_master_key_id)
        result: dict[str, Any] = {}
        for group in groups:
            for name, attr in fields[group]:
                result[name] = counted[attr] if attr in counters else getattr(self, attr)
        if self.policy:
            result["Policy"] = self.policy
        if self.redrive_policy:
            result["RedrivePolicy"] = json.dumps(self.redrive_policy)
        for key, value in result.items():
            if isinstance(value, bool):
                result[key] = str(value).lower()
        return result

    def messages(self: Any) -> list[Any]:
        """Visible, undelayed messages, as of one clock read rather than two per message."""
        instant = now()
        return [
            m for m in self._messages if instant > m.visible_at and not instant < m.delayed_until
        ]

    def has_handle(message: Any, receipt_handle: str) -> bool:
        return bool(
            message.receipt_handle == receipt_handle
            or receipt_handle in message._old_receipt_handles
        )

    def delete_message(self: Any, receipt_handle: str) -> None:
        """``Queue.delete_message`` in one pass (no list of handles built per message)."""
        if receipt_handle in self.deleted_messages:
            return  # already deleted: SQS accepts a second delete
        kept: list[Any] = []
        found = False
        for message in self._messages:
            if has_handle(message, receipt_handle):
                found = True
                self.pending_messages.discard(message)
                self.deleted_messages.update(message.all_receipt_handles)
                continue
            kept.append(message)
        if not found:
            raise ReceiptHandleIsInvalid()
        self._messages = kept

    def change_message_visibility(
        self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        """``SQSBackend.change_message_visibility``, finding the message in one pass."""
        queue = self.get_queue(queue_name)
        message = next((m for m in queue._messages if has_handle(m, receipt_handle)), None)
        if message is None:
            raise ReceiptHandleIsInvalid
        until = now() + int(visibility_timeout) * 1000
        if until - message.sent_timestamp > 43200 * 1000:  # SQS: 12 hours in flight at most
            raise InvalidParameterValue(
                f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason:"
                " Total VisibilityTimeout for the message is beyond the limit [43200 seconds]"
            )
        message.change_visibility(visibility_timeout)
        if message.visible and message in queue.pending_messages:
            queue.pending_messages.remove(message)

    def pending_message_groups(self: Any) -> set[str]:
        """FIFO groups held back: those with a message still in flight (not yet visible again).

        Stock moto counts a message in flight until a receive walks past it, even after its
        visibility ended: one receive then skips a group's first message (the group looks
        held by later ones), releases those one by one and hands out the last alone, ahead of
        the rest. SQS gives a group's messages out oldest first, none behind one in flight.
        """
        instant = now()
        return {
            m.group_id
            for m in self.pending_messages
            if m.group_id is not None and not instant > m.visible_at
        }

    def retained(self: Any, queue_name: str, message: Any) -> bool:
        """The retention check, reading the one attribute it needs."""
        period = self.get_queue(queue_name).message_retention_period
        return bool(int(period) + message.sent_timestamp / 1000 > models.unix_time())

    stock_receive = backend_cls.receive_message

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        """A long poll as a loop of short receives, each one alone on its queue.

        Stock moto scans the queue with no lock while other server threads do the same, so
        two concurrent receives can both take a message between one's visibility check and
        its mark (two pollers would run it at once). Here each scan holds the queue's lock;
        between scans the poll waits for a send (or 0.1 s: messages also become visible
        again when their visibility runs out, which wakes nobody), and never spins on a
        queue whose messages are all held (in-flight FIFO groups).
        """
        queue = self.get_queue(queue_name)
        lock: threading.Lock = queue.__dict__.setdefault("_taskhop_receive", threading.Lock())
        until = time.monotonic() + wait_seconds_timeout
        while True:
            with lock:
                got: list[Any] = stock_receive(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            left = until - time.monotonic()
            if got or left <= 0:
                return got
            waited = time.monotonic()
            queue.wait_for_messages(min(0.1, left))
            if time.monotonic() - waited < 0.01:  # messages there, none to give
                time.sleep(min(0.02, max(0.0, left)))

    _replace(backend_cls, "receive_message", receive_message)
    _replace(queue_cls, "attributes", property(attributes))
    _replace(queue_cls, "messages", property(messages))
    _replace(queue_cls, "pending_message_groups", property(pending_message_groups))
    _replace(queue_cls, "delete_message", delete_message)
    _replace(backend_cls, "change_message_visibility", change_message_visibility)
    _replace(backend_cls, "is_message_valid_based_on_retention_period", retained)


# -- DynamoDB ---------------------------------------------------------------------------------


def _patch_dynamodb() -> None:
    import copy

    import moto.dynamodb.parsing.ast_nodes as ast_nodes
    import moto.dynamodb.parsing.expressions as expressions_module
    import moto.dynamodb.parsing.validators as validators_module

    nodes: Any = ast_nodes  # moto's parsing modules are untyped
    validators: Any = validators_module
    expressions: Any = expressions_module
    traverser_cls, node_cls, update_cls = (
        nodes.DepthFirstTraverser,
        nodes.Node,
        nodes.UpdateExpression,
    )
    parser_cls = expressions.UpdateExpressionParser

    stock_make = parser_cls.__dict__["make"].__func__

    kept: dict[int, tuple[Any, dict[tuple[type, ...], list[Any]]]] = {}

    @functools.lru_cache(maxsize=256)
    def parsed(expression: str) -> Any:
        tree = stock_make(parser_cls, expression)
        if len(kept) >= 512:  # trees the cache let go of: forget them all, now and then
            kept.clear()
        kept[id(tree)] = (tree, {})
        return tree

    searched = (nodes.Expression, nodes.UpdateExpressionFunction)

    searched_types: dict[type, bool] = {}

    def clauses(node: Any, clause_types: Any) -> list[Any]:
        """Stock ``Node.find_clauses`` (no node class has its own), recursing without it."""
        found: list[Any] = []
        children: list[Any] = node.children or []
        for child in children:
            kind: type = child.__class__
            if kind in clause_types:
                found.append(child)
                continue
            inside = searched_types.get(kind)
            if inside is None:  # ABCs: isinstance goes through __instancecheck__
                inside = searched_types[kind] = issubclass(kind, searched)
            if inside:
                found.extend(clauses(child, clause_types))
        return found

    def find_clauses(self: Any, clause_types: Any) -> list[Any]:
        """Stock's answer; once per kept tree (UpdateItem asks it twice a request)."""
        entry = kept.get(id(self))
        if entry is None or entry[0] is not self:
            return clauses(self, clause_types)
        key = tuple(clause_types)
        if key not in entry[1]:
            entry[1][key] = clauses(self, clause_types)
        return list(entry[1][key])

    def make(cls: Any, expression: str) -> Any:
        """The parsed tree, kept by its text: callers only read it (validators copy it)."""
        return parsed(expression)

    def clone(value: Any, memo: Any = None) -> Any:
        """A copy of an expression tree by pickle round trip (5-10x ``deepcopy``'s speed)."""
        if isinstance(value, node_cls):
            try:
                return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
            except Exception:  # something unpicklable in the tree: the stock way
                pass
        return copy.deepcopy(value, memo)

    node_types: dict[type, bool] = {}

    def is_node(kind: type) -> bool:
        known = node_types.get(kind)
        if known is None:  # Node is an ABC: isinstance goes through __instancecheck__
            known = node_types[kind] = issubclass(kind, node_cls)
        return known

    keys: dict[type, dict[type, type | None]] = {}  # per pass class: node type -> map key

    def key_of(pass_keys: dict[type, type | None], pmap: dict[type, Any], kind: type) -> Any:
        """The first key of the pass's map that ``kind`` is a subclass of (stock's choice)."""
        found = pass_keys[kind] = next((k for k in pmap if issubclass(kind, k)), None)
        return found

    base_hook: Any = traverser_cls.pre_processing_of_child  # a no-op; one pass has its own

    def traverse_node_recursively(self: Any, node: Any, child_id: int = -1) -> Any:
        """Stock depth-first, bottom-up traversal, with node types looked up once per type.

        The pass's map is built once per traversal (stock builds it at each node), and the
        stock no-op hook before each child is not called (one pass has its own).
        """
        pass_cls: Any = self.__class__
        pass_keys = keys.setdefault(pass_cls, {})
        pmap: dict[type, Callable[[Any], Any]] = self._processing_map()
        hook = None if pass_cls.pre_processing_of_child is base_hook else self

        def walk(node: Any, child_id: int) -> Any:
            kind: type = node.__class__
            known = node_types.get(kind)
            if not (is_node(kind) if known is None else known):
                return node
            parent_node = node.parent
            if node.children is not None:
                for i, child_node in enumerate(node.children):
                    if hook is not None:
                        hook.pre_processing_of_child(node, i)
                    walk(child_node, i)
            key = pass_keys[kind] if kind in pass_keys else key_of(pass_keys, pmap, kind)
            if key is not None:
                node = pmap[key](node)
                node.parent = parent_node
                if parent_node:
                    parent_node.children[child_id] = node
            return node

        return walk(node, child_id)

    def root_only(check: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """A pass whose check of the root covers every nested UpdateExpression.

        ``ActionCountValidator`` and ``OverlappingPathsValidator`` check each UpdateExpression
        node (74 in one job write) for too many clauses or overlapping paths among the
        actions below it; the root has them all, so a root that passes means every node
        passes. A root that fails runs the stock pass, so the error is stock's, word for word.
        """
        stock = traverser_cls.traverse

        def traverse(self: Any, node: Any) -> Any:
            if isinstance(node, update_cls):
                try:
                    check(self, node)
                except Exception:
                    return stock(self, node)
                return node
            return stock(self, node)

        return traverse

    _replace(parser_cls, "make", classmethod(make))
    _replace(validators, "deepcopy", clone)  # what ``Validator.__init__`` copies the tree with
    _replace(traverser_cls, "traverse_node_recursively", traverse_node_recursively)
    _replace(
        validators.ActionCountValidator,
        "traverse",
        root_only(validators.ActionCountValidator.verify_action_counts),
    )
    _replace(
        validators.OverlappingPathsValidator,
        "traverse",
        root_only(validators.OverlappingPathsValidator.check_for_overlapping_paths),
    )
    _replace(node_cls, "find_clauses", find_clauses)
    _undo.append(parsed.cache_clear)
    _undo.append(kept.clear)
    _patch_conditions()


def _patch_conditions() -> None:
    """Condition expressions parsed once per text; names and values put in per request.

    Stock ``ConditionExpressionParser.parse`` substitutes ``ExpressionAttributeNames`` and
    ``Values`` while it parses (and UpdateItem parses each condition twice), so what is kept
    here is the tree parsed with the lookups recorded instead: each request makes the same
    lookups in the same order (a missing name fails as stock), then stock's own last step
    builds the conditions from the tree with its values. A text stock cannot parse is not
    kept: every request parses it the stock way, for stock's error.
    """
    import moto.dynamodb.comparisons as comparisons_module

    comparisons: Any = comparisons_module  # untyped
    parser_cls = comparisons.ConditionExpressionParser
    kind, nonterminal = parser_cls.Kind, parser_cls.Nonterminal
    stock_parse = parser_cls.parse
    cache: dict[str, Any] = {}

    def template(expression: str) -> Any:
        """(tree, lookups, names found, values found) for a text, or None if stock fails."""
        if expression in cache:
            return cache[expression]
        lookups: list[tuple[bool, str]] = []  # (is a value, placeholder), in stock's order
        probe = parser_cls(expression, None, None)

        def value_lookup(placeholder: str) -> None:
            lookups.append((True, placeholder))

        def name_lookup(placeholder: str) -> None:
            lookups.append((False, placeholder))

        def tree_only(node: Any) -> Any:  # stop before the values are needed
            return node

        probe._lookup_expression_attribute_value = value_lookup
        probe._lookup_expression_attribute_name = name_lookup
        probe._make_op_condition = tree_only
        try:
            tree = stock_parse(probe)
        except Exception:
            found = None
        else:
            found = (tree, tuple(lookups), probe.expr_attr_names_found,
                     probe.expr_attr_values_found)  # fmt: skip
        if len(cache) < 256:
            cache[expression] = found
        return found

    def substituted(node: Any, got: dict[tuple[bool, str], Any]) -> Any:
        if node.kind == kind.EXPRESSION_ATTRIBUTE_VALUE:
            return node._replace(value=got[True, node.text])
        if node.nonterminal == nonterminal.IDENTIFIER and node.text.startswith("#"):
            return node._replace(value=got[False, node.text])
        if not node.children:
            return node
        return node._replace(children=[substituted(c, got) for c in node.children])

    def parse(self: Any) -> Any:
        """Stock ``parse``, from the tree kept for this text (a fresh result each call)."""
        kept = template(self.condition_expression) if self.condition_expression else None
        if kept is None:
            return stock_parse(self)
        tree, lookups, names_found, values_found = kept
        got = {
            (is_value, name): (
                self._lookup_expression_attribute_value(name)
                if is_value
                else self._lookup_expression_attribute_name(name)
            )
            for is_value, name in lookups
        }
        self.expr_attr_names_found.extend(names_found)
        self.expr_attr_values_found.extend(values_found)
        return self._make_op_condition(substituted(tree, got))

    _replace(parser_cls, "parse", parse)
    _undo.append(cache.clear)
