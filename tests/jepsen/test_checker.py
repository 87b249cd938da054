"""The checker judged on hand-made histories, and on large generated ones for speed."""

from __future__ import annotations

import random
from pathlib import Path

from .checker import (
    DEFAULT_MAX_STEPS,
    _search,
    check_history,
    check_list,
    check_register,
    find_stale_read,
    plan_unknowns,
)
from .history import APPEND, CAS, FAIL, LIST_READ, OK, READ, UNKNOWN, WRITE, Op, load, number, save


def w(value: str, start: float, end: float | None, outcome: str = OK, key: str = "x") -> Op:
    return Op(0, WRITE, key, value, "OK", outcome, start, end)


def r(result: str | None, start: float, end: float, key: str = "x") -> Op:
    return Op(1, READ, key, None, result, OK, start, end)


def cas(old: str, new: str, result: str, start: float, end: float | None, **kw: str) -> Op:
    outcome = kw.get("outcome", OK if result == "OK" else FAIL)
    return Op(2, CAS, kw.get("key", "x"), [old, new], result, outcome, start, end)


def judge(*ops: Op) -> list[str]:
    report = check_history(number(list(ops)))
    assert not report.inconclusive
    return [anomaly.render() for anomaly in report.anomalies]


def test_sequential_history_is_linearizable() -> None:
    assert judge(w("1", 0, 1), r("1", 2, 3), w("2", 4, 5), r("2", 6, 7)) == []


def test_concurrent_overlapping_ops_are_linearizable() -> None:
    # The read at 1..2 happens before the slow write takes effect, the later ones after.
    assert judge(w("1", 0, 10), r(None, 1, 2), r("1", 3, 4), r("1", 5, 12)) == []
    # Two concurrent writes may take effect in either order.
    assert judge(w("1", 0, 5), w("2", 1, 6), r("1", 7, 8)) == []
    assert judge(w("1", 0, 5), w("2", 1, 6), r("2", 7, 8)) == []


def test_unknown_write_that_took_effect() -> None:
    assert judge(w("1", 0, 1), w("2", 2, None, UNKNOWN), r("1", 3, 4), r("2", 50, 51)) == []


def test_unknown_write_that_never_took_effect() -> None:
    assert judge(w("1", 0, 1), w("2", 2, None, UNKNOWN), r("1", 5, 6), r("1", 7, 8)) == []


def test_cas_failure_explained_by_an_unknown_write() -> None:
    # Only the unknown write of 2 explains why the CAS saw something other than 1.
    assert judge(w("1", 0, 1), w("2", 2, None, UNKNOWN), cas("1", "3", "FAIL", 3, 4)) == []
    found = judge(w("1", 0, 1), w("2", 2, None, UNKNOWN), cas("1", "3", "FAIL", 3, 4), r("1", 5, 6))
    assert len(found) == 1 and "read x -> 1" in found[0]


def test_unknown_cas_chain() -> None:
    # The unknown CAS 2->3 took effect (3 was read), so the unknown write of 2 did too.
    assert (
        judge(
            w("1", 0, 1),
            w("2", 2, None, UNKNOWN),
            cas("2", "3", "", 3, None, outcome=UNKNOWN),
            r("3", 5, 6),
        )
        == []
    )
    found = judge(w("1", 0, 1), cas("2", "3", "", 3, None, outcome=UNKNOWN), r("3", 5, 6))
    assert len(found) == 1


def test_failed_write_is_ignored_but_must_not_be_seen() -> None:
    assert judge(w("5", 0, 1, FAIL), r(None, 2, 3)) == []
    found = judge(w("5", 0, 1, FAIL), r("5", 2, 3))
    assert len(found) == 1 and "'x'" in found[0] and "read x -> 5" in found[0]


def test_cas_success_and_definite_failure() -> None:
    assert (
        judge(w("1", 0, 1), cas("1", "2", "OK", 2, 3), cas("1", "3", "FAIL", 4, 5), r("2", 6, 7))
        == []
    )
    # A CAS that answered FAIL while the register surely held the expected value.
    found = judge(w("1", 0, 1), cas("1", "2", "FAIL", 2, 3))
    assert len(found) == 1 and "cas x ['1', '2'] -> FAIL" in found[0]


def test_stale_read_is_reported_with_key_and_ops() -> None:
    found = judge(w("1", 0, 1, key="k7"), w("2", 2, 3, key="k7"), r("1", 4, 5, key="k7"))
    assert len(found) == 1
    assert "stale-read on key 'k7'" in found[0]
    assert "read k7 -> 1" in found[0] and "write k7 2" in found[0]


def test_lost_acknowledged_write_is_reported() -> None:
    # The write of 2 was acknowledged, yet every later read still shows 1.
    found = judge(w("1", 0, 1), w("2", 2, 3), r("1", 4, 5), r("1", 6, 7))
    assert len(found) == 1 and "write x 2" in found[0]


def test_value_seen_then_unseen_is_reported() -> None:
    found = judge(w("1", 0, 1), w("2", 2, 10), r("2", 3, 4), r("1", 5, 6))
    assert len(found) == 1
    assert "read x -> 2" in found[0] and "read x -> 1" in found[0]


def test_unknown_write_seen_then_unseen_is_reported() -> None:
    found = judge(w("1", 0, 1), w("2", 2, None, UNKNOWN), r("2", 5, 6), r("1", 7, 8))
    assert len(found) == 1 and "read x -> 1" in found[0]


def test_keys_are_checked_independently() -> None:
    found = judge(
        w("1", 0, 1, key="a"), w("1", 0, 1, key="b"), r("1", 2, 3, key="a"), r(None, 2, 3, key="b")
    )
    assert len(found) == 1 and "key 'b'" in found[0]


def app(value: str, start: float, end: float | None, outcome: str = OK) -> Op:
    return Op(3, APPEND, "l", value, "OK", outcome, start, end)


def lr(values: list[str], start: float, end: float) -> Op:
    return Op(4, LIST_READ, "l", None, values, OK, start, end)


def list_kinds(ops: list[Op], final: list[str]) -> list[str]:
    return [anomaly.kind for anomaly in check_list("l", number(ops), list(final))]


def test_list_history_that_is_safe() -> None:
    ops = [
        app("a", 0, 1),
        app("b", 2, 3),
        lr(["a"], 1.5, 1.8),
        app("c", 4, None, UNKNOWN),
        app("d", 4, None, UNKNOWN),
        lr(["a", "b", "c"], 5, 6),
    ]
    assert list_kinds(ops, ["a", "b", "c"]) == []
    # The unknown appends may also never land.
    assert list_kinds(ops[:4] + [lr(["a", "b"], 5, 6)], ["a", "b"]) == []


def test_list_lost_append() -> None:
    assert "lost-append" in list_kinds([app("a", 0, 1), app("b", 2, 3)], ["a"])


def test_list_duplicate_append() -> None:
    assert "duplicate-append" in list_kinds([app("a", 0, 1), lr(["a", "a"], 2, 3)], ["a", "a"])


def test_list_reordered() -> None:
    kinds = list_kinds([app("a", 0, 1), app("b", 2, 3), lr(["b", "a"], 4, 5)], ["a", "b"])
    assert "list-order" in kinds
    assert "list-order" in list_kinds([app("a", 0, 1), app("b", 2, 3)], ["b", "a"])


def test_list_seen_then_unseen_and_stale_read() -> None:
    ops = [app("a", 0, 10), app("b", 0, 10), lr(["a", "b"], 1, 2), lr(["a"], 3, 4)]
    kinds = list_kinds(ops, ["a", "b"])
    assert "seen-then-unseen" in kinds
    assert "stale-list-read" in list_kinds([app("a", 0, 1), lr([], 2, 3)], ["a"])


def test_list_failed_append_must_not_appear() -> None:
    assert "failed-append-applied" in list_kinds([app("a", 0, 1, FAIL)], ["a"])


def generate(
    seed: int,
    count: int,
    unknown_rate: float = 0.05,
    spread: float = 3.0,
    fail_on_written: bool = True,
) -> list[Op]:
    """A linearizable history by construction: op i takes effect at time i, its interval
    surrounds that point, so about 2 * spread ops are concurrent at any moment."""
    rng = random.Random(seed)
    ops: list[Op] = []
    state: str | None = None
    for point in range(count):
        start, end = point - rng.uniform(0, spread), point + rng.uniform(0, spread)
        choice = rng.random()
        if choice < 0.4:
            state = f"v{point}"
            unknown = rng.random() < unknown_rate
            ops.append(
                Op(
                    0,
                    WRITE,
                    "x",
                    state,
                    None,
                    UNKNOWN if unknown else OK,
                    start,
                    None if unknown else end,
                )
            )
            if unknown and rng.random() < 0.5:
                # A write that never took effect and that nobody saw.
                ops.append(Op(0, WRITE, "x", f"lost{point}", None, UNKNOWN, start, None))
        elif choice < 0.85:
            ops.append(Op(1, READ, "x", None, state, OK, start, end))
        else:
            stale = [f"v{point - 3}"] if fail_on_written else []
            old = state if rng.random() < 0.5 else rng.choice(["nope", *stale])
            succeeded = old == state
            state = f"v{point}" if succeeded else state
            ops.append(
                Op(
                    2,
                    CAS,
                    "x",
                    [old, f"v{point}"],
                    "OK" if succeeded else "FAIL",
                    OK if succeeded else FAIL,
                    start,
                    end,
                )
            )
    return number(ops)


# The search's cost is counted in steps, not seconds: deterministic on any machine. Past
# max_steps it gives up (inconclusive), so each bound below is a proof of the cost.


def test_a_long_history_costs_a_few_steps_per_operation() -> None:
    ops = generate(seed=1, count=3000)

    assert check_register("x", ops, max_steps=4 * len(ops)) is None  # 9,525 steps


def test_wide_concurrency_and_many_unknowns_stay_within_a_fifth_of_the_budget() -> None:
    ops = generate(seed=5, count=1000, unknown_rate=0.2, spread=8.0)

    # 810,644 steps; the suite's default budget is 5,000,000.
    assert check_register("x", ops, max_steps=DEFAULT_MAX_STEPS // 5) is None


def test_large_history_with_one_stale_read_is_caught() -> None:
    # With CAS failures only on never-written values the full search settles it.
    ops = generate(seed=2, count=2000, fail_on_written=False)
    reads = [op for op in ops if op.kind == READ and op.result is not None]
    reads = reads[len(reads) // 2 :]
    victim = next(
        op
        for op in reads
        if any(
            other.kind == WRITE
            and other.outcome == OK
            and other.complete is not None
            and other.complete < op.invoke - 10
            for other in ops
        )
    )
    # A value written and overwritten long before the read.
    victim.result = next(op.value for op in ops if op.kind == WRITE and op.outcome == OK)
    anomaly = check_register("x", ops)
    assert anomaly is not None and anomaly.kind in ("stale-read", "nonlinearizable")
    assert victim in anomaly.ops and len(anomaly.ops) <= 20
    assert find_stale_read("x", ops) is not None

    # The search alone (without the pre-check) also refutes it and names the read.
    plan = plan_unknowns([op for op in ops if op.outcome != FAIL or op.kind == CAS])
    stuck = _search(plan, None, 5_000_000)
    assert stuck is not None and stuck.op is not None


def test_stale_read_precheck_names_the_overwrite() -> None:
    ops = number([w("1", 0, 1), w("2", 2, 3), cas("2", "3", "OK", 4, 5), r("2", 6, 7)])
    anomaly = find_stale_read("x", ops)
    assert anomaly is not None and anomaly.ops == [ops[1], ops[2], ops[3]]
    assert find_stale_read("x", number([w("1", 0, 1), w("2", 2, 5), r("1", 3, 6)])) is None


def test_search_budget_is_reported_as_inconclusive() -> None:
    report = check_history(generate(seed=3, count=500), max_steps=10)
    assert report.inconclusive == ["x"] and report.valid


def test_history_round_trips_through_json_lines(tmp_path: Path) -> None:
    ops = generate(seed=4, count=50) + [app("a", 0, 1), lr(["a"], 2, 3)]
    save(number(ops), tmp_path / "history.jsonl")
    assert load(tmp_path / "history.jsonl") == ops
