"""Checks a recorded history: linearizability of registers, safety of append-only lists.

Registers are checked one key at a time (linearizability is compositional, Herlihy & Wing
1990, so a history is linearizable iff each key's sub-history is). Each key is searched with
the Wing & Gong algorithm as improved by Lowe (2017) and used by Porcupine: the calls and
returns form a doubly linked list ordered by time; the search linearizes a pending call whose
effect agrees with the model, backtracks when it reaches a return whose call is still
unlinearized, and memoizes (set of linearized ops, model state) pairs already explored.

An operation with an unknown outcome has no return event (its completion is +infinity): the
search may linearize it anywhere after its invocation or leave it out, and the history is
accepted once every definite operation is linearized. A CAS answered FAIL is kept as an
observation: the register did not hold the expected value at some point in the interval.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .history import APPEND, CAS, FAIL, LIST_READ, OK, READ, UNKNOWN, WRITE, Op

DEFAULT_MAX_STEPS = 5_000_000
WINDOW_CONTEXT = 4  # linearized ops shown before the point where the search got stuck


@dataclass
class Anomaly:
    """One violation: what kind, which key, a short explanation and the operations involved."""

    kind: str
    key: str
    message: str
    ops: list[Op] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"{self.kind} on key {self.key!r}: {self.message}"]
        lines += ["    " + op.describe() for op in self.ops]
        return "\n".join(lines)


@dataclass
class Report:
    """The checker's verdict. valid is False when any anomaly was found; inconclusive lists
    keys whose search ran out of its step budget (neither proven nor refuted)."""

    anomalies: list[Anomaly] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)
    keys_checked: int = 0
    ops_checked: int = 0

    @property
    def valid(self) -> bool:
        return not self.anomalies

    def render(self) -> str:
        head = (
            f"{self.keys_checked} keys, {self.ops_checked} operations: "
            f"{len(self.anomalies)} anomalies, {len(self.inconclusive)} inconclusive"
        )
        body = [anomaly.render() for anomaly in self.anomalies]
        if self.inconclusive:
            body.append("inconclusive (search budget exhausted): " + ", ".join(self.inconclusive))
        return "\n".join([head, *body])


# ---------------------------------------------------------------------------------------
# Registers


def _is_candidate(op: Op) -> bool:
    """Whether op constrains the register search at all.

    Failed writes and failed or unanswered reads never took effect and observed nothing;
    only a CAS answered FAIL is a failed op that still observed the register.
    """
    if op.outcome == OK:
        return True
    if op.outcome == UNKNOWN:
        return op.kind in (WRITE, CAS)
    return op.kind == CAS and op.result == "FAIL"


def _written_value(op: Op) -> object:
    if op.kind == WRITE:
        return op.value
    return _cas_pair(op)[1]


def _cas_pair(op: Op) -> tuple[object, object]:
    old, new = op.value  # type: ignore[misc]
    return old, new


@dataclass
class _Plan:
    """How the search treats each candidate op: ends[i] is the time by which op i must be
    linearized (a required return), or None; deadlines[i] is, for an optional unknown op,
    the time after which taking effect could no longer be observed (it is then dropped)."""

    ops: list[Op]
    ends: list[float | None]
    deadlines: list[float | None]


def plan_unknowns(ops: list[Op]) -> _Plan:
    """Bound the unknown writes/CASes, which otherwise stay concurrent with everything after
    them and multiply the search space. Values are unique per write (the suite's clients
    guarantee it), so:

    - an unknown op whose value a definite read or successful CAS observed surely took
      effect, before the earliest such observer completed: it gets that return time;
    - an unobserved one can only matter to a CAS answered FAIL whose expected value is some
      written value (it could explain why the register differed); taking effect after the
      last such CAS completed is indistinguishable from never, so that is its deadline, and
      with no such CAS after its invocation it is dropped altogether;
    - one whose value is the expected value of another unknown CAS stays fully open.
    """
    written = {_written_value(op) for op in ops if op.kind in (WRITE, CAS)}
    first_seen: dict[object, float] = {}
    maybe_seen: set[object] = set()
    fail_ends: list[float] = []
    for op in ops:
        if op.kind == READ and op.outcome == OK and op.complete is not None:
            first_seen[op.result] = min(first_seen.get(op.result, op.complete), op.complete)
        elif op.kind == CAS and op.outcome == OK and op.complete is not None:
            old = _cas_pair(op)[0]
            first_seen[old] = min(first_seen.get(old, op.complete), op.complete)
        elif op.kind == CAS and op.outcome == UNKNOWN:
            maybe_seen.add(_cas_pair(op)[0])
        elif op.kind == CAS and op.complete is not None and _cas_pair(op)[0] in written:
            fail_ends.append(op.complete)
    last_fail = max(fail_ends, default=float("-inf"))

    plan = _Plan([], [], [])
    for op in ops:
        end: float | None = op.complete
        deadline: float | None = None
        if op.outcome == UNKNOWN:
            value = _written_value(op)
            end = first_seen.get(value)
            if end is None and value not in maybe_seen:
                if last_fail < op.invoke:
                    continue
                deadline = last_fail
        plan.ops.append(op)
        plan.ends.append(end)
        plan.deadlines.append(deadline)
    return plan


def _step(op: Op, state: object) -> tuple[bool, object]:
    """Apply op to the register model: (whether it is allowed now, the next state)."""
    if op.kind == WRITE:
        return True, op.value
    if op.kind == READ:
        return op.result == state, state
    old, new = _cas_pair(op)
    if op.outcome == FAIL:
        return state != old, state
    return state == old, new


@dataclass
class _Stuck:
    """Where the search got furthest before failing: used to explain the violation."""

    depth: int = -1
    op: Op | None = None
    prefix: list[Op] = field(default_factory=list)
    state: object = None


class _Inconclusive(Exception):
    """The search ran out of steps."""


CALL, RETURN, DROP = 0, 1, 2


def _search(plan: _Plan, initial: object, max_steps: int) -> _Stuck | None:
    """Lowe's WGL search. Returns None when a linearization exists, else where it got stuck.

    Besides calls and returns the list holds DROP events: reaching the DROP of an optional
    op that is still unlinearized decides it never took effect (see plan_unknowns).
    """
    ops = plan.ops
    events: list[tuple[float, int, int]] = []
    for position, op in enumerate(ops):
        events.append((op.invoke, CALL, position))
        end, deadline = plan.ends[position], plan.deadlines[position]
        if end is not None:
            # Ties: calls sort before returns, treating touching intervals as concurrent.
            events.append((end, RETURN, position))
        elif deadline is not None:
            events.append((deadline, DROP, position))
    events.sort()

    # Node 0 is the list head; node k is events[k - 1].
    size = len(events)
    nxt = list(range(1, size + 2))
    nxt[size] = -1
    prv = list(range(-1, size))
    kind = [CALL] + [event[1] for event in events]
    owner = [0] + [event[2] for event in events]
    call_node = [-1] * len(ops)
    end_node = [-1] * len(ops)
    for node in range(1, size + 1):
        if kind[node] == CALL:
            call_node[owner[node]] = node
        else:
            end_node[owner[node]] = node

    def unlink(node: int) -> None:
        nxt[prv[node]] = nxt[node]
        if nxt[node] != -1:
            prv[nxt[node]] = prv[node]

    def relink(node: int) -> None:
        nxt[prv[node]] = node
        if nxt[node] != -1:
            prv[nxt[node]] = node

    remaining = sum(1 for end in plan.ends if end is not None)
    state = initial
    decided = 0  # bit i: op i linearized, or dropped
    stack: list[tuple[int, object]] = []
    cache: set[tuple[int, object]] = set()
    stuck = _Stuck()
    entry = nxt[0]
    steps = 0
    while remaining:
        steps += 1
        if steps > max_steps:
            raise _Inconclusive
        if entry != -1 and kind[entry] == CALL:
            position = owner[entry]
            allowed, after = _step(ops[position], state)
            marked = decided | (1 << position)
            if allowed and (marked, after) not in cache:
                cache.add((marked, after))
                stack.append((entry, state))
                state, decided = after, marked
                unlink(entry)
                if end_node[position] != -1:
                    unlink(end_node[position])
                    remaining -= kind[end_node[position]] == RETURN
                entry = nxt[0]
                continue
            entry = nxt[entry]
            continue

        if entry != -1 and kind[entry] == DROP:
            position = owner[entry]
            marked = decided | (1 << position)
            if (marked, state) not in cache:
                cache.add((marked, state))
                stack.append((entry, state))
                decided = marked
                unlink(call_node[position])
                unlink(entry)
                entry = nxt[0]
                continue

        # A return whose call is not linearized yet: this branch is dead, backtrack.
        if entry != -1 and kind[entry] == RETURN and len(stack) > stuck.depth:
            recent = [ops[owner[node]] for node, _ in stack[-WINDOW_CONTEXT:]]
            stuck = _Stuck(len(stack), ops[owner[entry]], recent, state)
        while True:
            if not stack:
                return stuck
            node, state = stack.pop()
            position = owner[node]
            decided &= ~(1 << position)
            if kind[node] == DROP:
                # A drop is forced once its deadline is reached: no alternative here.
                relink(node)
                relink(call_node[position])
                continue
            if end_node[position] != -1:
                relink(end_node[position])
                remaining += kind[end_node[position]] == RETURN
            relink(node)
            entry = nxt[node]
            break
    return None


def _window(ops: list[Op], stuck: _Stuck) -> list[Op]:
    """The ops around the point where no linearization exists: the last ops linearized on
    the deepest path, the op that could not be placed, and the ops still pending then."""
    assert stuck.op is not None
    done = {id(op) for op in stuck.prefix}
    end = stuck.op.complete if stuck.op.complete is not None else stuck.op.invoke
    start = min([op.invoke for op in stuck.prefix] + [stuck.op.invoke])
    pending = [
        op
        for op in ops
        if id(op) not in done
        and op is not stuck.op
        and op.invoke <= end
        and (op.complete is None or op.complete >= start)
    ]
    chosen = {id(op): op for op in [*stuck.prefix, stuck.op, *pending[:10]]}
    return sorted(chosen.values(), key=lambda op: op.invoke)


def find_stale_read(key: str, ops: list[Op]) -> Anomaly | None:
    """A fast, sound pre-check for the commonest violation, run before the search.

    A read that returned v is stale if the op that wrote v (values are unique) was
    acknowledged before some other acknowledged write began, and that write was acknowledged
    before the read began: v was surely overwritten and nothing can write it again. A read
    of a missing register (None) is stale once any acknowledged write finished before it.
    """
    writes = sorted(
        (op for op in ops if op.outcome == OK and op.kind in (WRITE, CAS) and op.complete),
        key=lambda op: op.invoke,
    )
    starts = [op.invoke for op in writes]
    earliest_end: list[Op | None] = [None] * (len(writes) + 1)
    for position in range(len(writes) - 1, -1, -1):
        best = earliest_end[position + 1]
        op = writes[position]
        assert op.complete is not None
        if best is None or (best.complete is not None and op.complete < best.complete):
            best = op
        earliest_end[position] = best
    producers = {_written_value(op): op for op in ops if op.kind in (WRITE, CAS)}

    for read in ops:
        if read.kind != READ or read.outcome != OK:
            continue
        producer = producers.get(read.result)
        if read.result is None:
            produced_at = float("-inf")
        elif producer is not None and producer.outcome == OK and producer.complete is not None:
            produced_at = producer.complete
        else:
            continue
        overwriter = earliest_end[bisect.bisect_right(starts, produced_at)]
        if overwriter is None or overwriter.complete is None:
            continue
        if overwriter.complete < read.invoke:
            involved = [op for op in (producer, overwriter, read) if op is not None]
            message = (
                f"read returned {read.result!r} after #{overwriter.index} had replaced it "
                "(acknowledged before the read was sent)"
            )
            return Anomaly("stale-read", key, message, involved)
    return None


def check_register(
    key: str, ops: list[Op], initial: object = None, max_steps: int = DEFAULT_MAX_STEPS
) -> Anomaly | None:
    """Check one key's register history. Raises _Inconclusive past max_steps."""
    stale = find_stale_read(key, ops)
    if stale is not None:
        return stale
    plan = plan_unknowns([op for op in ops if _is_candidate(op)])
    candidates = plan.ops
    stuck = _search(plan, initial, max_steps)
    if stuck is None:
        return None
    assert stuck.op is not None
    message = (
        f"not linearizable: after {stuck.depth} ops linearized (register = {stuck.state!r}) "
        f"no order places {stuck.op.kind} #{stuck.op.index} before it returned"
    )
    return Anomaly("nonlinearizable", key, message, _window(candidates, stuck))


# ---------------------------------------------------------------------------------------
# Append-only lists


def check_list(key: str, ops: list[Op], final: list[object] | None) -> list[Anomaly]:
    """Safety of one append-only list. final: the list read after every fault was healed.

    Checks: no acknowledged append lost (missing from the final list, or from a read
    invoked after the append was acknowledged), no value appended by a failed request, no
    duplicate, every read a prefix of the final list (order consistent, nothing seen and
    then unseen), and appends ordered in real time appear in that order.
    """
    anomalies: list[Anomaly] = []
    appends = {op.value: op for op in ops if op.kind == APPEND}
    reads = [op for op in ops if op.kind == LIST_READ and op.outcome == OK]
    ok_appends = [op for op in appends.values() if op.outcome == OK]

    for read in reads:
        anomalies += _check_read_contents(key, read, appends, final)

    if final is not None:
        final_read = Op(-1, LIST_READ, key, None, list(final), OK, float("inf"), None)
        final_read.error = "the final read, after healing"
        anomalies += _check_read_contents(key, final_read, appends, None)
        missing = [op for op in ok_appends if op.value not in set(final)]
        if missing:
            anomalies.append(
                Anomaly(
                    "lost-append",
                    key,
                    "acknowledged appends missing from the final list",
                    missing[:10],
                )
            )
        anomalies += _check_append_order(key, ok_appends, final)

    anomalies += _check_read_freshness(key, reads, ok_appends)
    return anomalies


def _check_read_contents(
    key: str, read: Op, appends: dict[object, Op], final: list[object] | None
) -> list[Anomaly]:
    values = list(read.result or [])  # type: ignore[call-overload]
    found: list[Anomaly] = []
    repeated = sorted((value for value, seen in Counter(values).items() if seen > 1), key=str)
    if repeated:
        found.append(
            Anomaly(
                "duplicate-append",
                key,
                f"values {repeated} appear twice",
                [read] + [appends[v] for v in repeated if v in appends],
            )
        )
    for value in values:
        origin = appends.get(value)
        if origin is None:
            found.append(Anomaly("phantom-append", key, f"{value!r} was never appended", [read]))
        elif origin.outcome == FAIL:
            found.append(
                Anomaly(
                    "failed-append-applied",
                    key,
                    f"{value!r} was appended by a request that failed",
                    [origin, read],
                )
            )
    if final is not None and values != final[: len(values)]:
        found.append(
            Anomaly("list-order", key, f"read is not a prefix of the final list {final}", [read])
        )
    return found


def _check_append_order(key: str, ok_appends: list[Op], final: list[object]) -> list[Anomaly]:
    place = {value: position for position, value in enumerate(final)}
    ordered = sorted((op for op in ok_appends if op.value in place), key=lambda op: op.invoke)
    found = []
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        # Only a pair where one was acknowledged before the other began is ordered.
        assert earlier.complete is not None
        if earlier.complete < later.invoke and place[earlier.value] > place[later.value]:
            found.append(
                Anomaly(
                    "list-order",
                    key,
                    "appends land in the list out of real-time order",
                    [earlier, later],
                )
            )
    return found


def _check_read_freshness(key: str, reads: list[Op], ok_appends: list[Op]) -> list[Anomaly]:
    """A linearizable read sees every append acknowledged before it was sent, and never
    fewer values than a read that finished before it began."""
    found = []
    for read in reads:
        seen = set(read.result or [])  # type: ignore[call-overload]
        stale = [
            op
            for op in ok_appends
            if op.complete is not None and op.complete < read.invoke and op.value not in seen
        ]
        if stale:
            found.append(
                Anomaly(
                    "stale-list-read",
                    key,
                    "read misses appends acknowledged before it was sent",
                    [*stale[:5], read],
                )
            )
    by_end = sorted(reads, key=lambda op: op.complete or 0.0)
    for later in reads:
        for earlier in by_end:
            assert earlier.complete is not None
            if earlier.complete >= later.invoke:
                break
            if len(earlier.result or []) > len(later.result or []):  # type: ignore[arg-type]
                found.append(
                    Anomaly(
                        "seen-then-unseen",
                        key,
                        "a later read shows fewer values than an earlier one",
                        [earlier, later],
                    )
                )
                break
    return found


# ---------------------------------------------------------------------------------------
# Whole history


def check_history(
    ops: Iterable[Op],
    final_lists: dict[str, list[object]] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Report:
    """Check every key. final_lists: key -> the list read after healing (lists only)."""
    by_key: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in ops:
        family = "list" if op.kind in (APPEND, LIST_READ) else "register"
        by_key[(family, op.key)].append(op)

    report = Report()
    finals = final_lists or {}
    for (family, key), key_ops in sorted(by_key.items()):
        report.keys_checked += 1
        report.ops_checked += len(key_ops)
        if family == "list":
            report.anomalies += check_list(key, key_ops, finals.get(key))
            continue
        try:
            anomaly = check_register(key, key_ops, max_steps=max_steps)
        except _Inconclusive:
            report.inconclusive.append(key)
            continue
        if anomaly is not None:
            report.anomalies.append(anomaly)
    return report
