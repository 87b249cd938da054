"""The suite's own parts that need no node: reply classification, the client against a
scripted line server, per-node configs, fault schedules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from .client import Connection, Recorder, classify, interpret, perform, unescape
from .cluster import Cluster, graft_command
from .fsm_harness import fsm_command
from .history import CAS, FAIL, LIST_READ, OK, READ, UNKNOWN, WRITE, Op
from .nemesis import KINDS, draw_schedule


def test_reply_classification_follows_the_contract() -> None:
    assert classify("OK 5") == (OK, "5", "")
    assert classify("OK") == (OK, "", "")
    for code in ("NOLEADER", "BADREQUEST", "TOOLARGE", "NOTLEADER"):
        assert classify(f"ERR {code} no")[0] == FAIL
    assert classify("REDIRECT n2 127.0.0.1:9")[0] == FAIL
    assert classify("ERR TIMEOUT maybe")[0] == UNKNOWN
    assert classify("ERR FSM boom")[0] == UNKNOWN
    assert unescape("a\\nb\\\\c\\r") == "a\nb\\c\r"


def test_interpretation_of_results() -> None:
    read = Op(0, READ, "x")
    interpret(read, OK, "NIL", "")
    assert (read.outcome, read.result) == (OK, None)
    cas = Op(0, CAS, "x", ["1", "2"])
    interpret(cas, OK, "FAIL", "")
    assert (cas.outcome, cas.result) == (FAIL, "FAIL")
    listing = Op(0, LIST_READ, "l")
    interpret(listing, OK, "1 2", "")
    assert listing.result == ["1", "2"]
    timed_out_read = Op(0, READ, "x")
    interpret(timed_out_read, UNKNOWN, None, "ERR TIMEOUT")
    assert timed_out_read.outcome == FAIL  # a read without an answer had no effect


@pytest.mark.timeout(30)
def test_client_records_outcomes_and_reconnects() -> None:
    replies = iter(["OK OK", "ERR NOLEADER none", "ERR TIMEOUT later", "silence", "drop", "OK 7"])

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            reply = next(replies)
            if reply == "drop":
                break
            if reply != "silence":
                writer.write(reply.encode() + b"\n")
                await writer.drain()
        writer.close()

    async def scenario() -> list[Op]:
        listener = await asyncio.start_server(server, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        connection = Connection({"n1": port}, "n1", timeout=0.3)
        recorder = Recorder()
        ops = [Op(0, WRITE, "x", str(i)) for i in range(5)] + [Op(0, READ, "x")]
        for op in ops:
            await perform(recorder, connection, op)
        connection.drop()
        listener.close()
        return ops

    ops = asyncio.run(scenario())
    outcomes = [op.outcome for op in ops]
    assert outcomes == [OK, FAIL, UNKNOWN, UNKNOWN, UNKNOWN, OK]
    assert ops[3].error == "client timeout" and ops[5].result == "7"
    assert all(op.complete is not None and op.complete >= op.invoke for op in ops)


def test_each_node_dials_its_peers_through_the_proxy(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, size=3)
    cluster.plan()
    links = {(a, b): 40000 + 10 * i + j for i, a in enumerate("123") for j, b in enumerate("123")}
    config = cluster.config_for(cluster.nodes["n1"], lambda a, b: links[(a[1], b[1])])
    text = yaml.safe_dump(config)
    peers = yaml.safe_load(text)["peers"]

    assert peers["n1"]["ports"] == {"p2p": cluster.nodes["n1"].p2p, "api": cluster.nodes["n1"].api}
    assert peers["n2"]["ports"]["p2p"] == links[("1", "2")]
    assert peers["n3"]["ports"]["p2p"] == links[("1", "3")]
    assert peers["n2"]["ports"]["api"] == cluster.nodes["n2"].api
    assert config["fsm"]["command"] == fsm_command() and "-S" in fsm_command()
    ports = [p for n in cluster.nodes.values() for p in (n.p2p, n.api)]
    assert len(set(ports)) == 6
    assert graft_command()[0].endswith("python") or "python" in graft_command()[0]


def test_schedules_are_reproducible_from_the_seed() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    first = draw_schedule(7, nodes, 60.0)
    assert first == draw_schedule(7, nodes, 60.0)
    assert first != draw_schedule(8, nodes, 60.0)
    assert {fault.kind for fault in first} == set(KINDS)
    assert sum(fault.duration + fault.gap for fault in first) <= 62.0
    for fault in first:
        if fault.kind == "split":
            assert 1 <= len(fault.side) <= 2  # always a minority
