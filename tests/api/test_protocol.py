"""The sans-IO line protocol, byte by byte: splitting, parsing, rendering, escaping."""

from __future__ import annotations

import base64
import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graft.api.protocol import (
    BadRequest,
    Err,
    ErrCode,
    LineReader,
    Ok,
    Op,
    Outcome,
    Redirect,
    Request,
    TooLarge,
    escape,
    format_reply,
    parse_request,
    unescape,
)

TEXT = Request(Op.STATUS)


def pull(reader: LineReader) -> list[bytes | TooLarge]:
    out: list[bytes | TooLarge] = []
    while (item := reader.next_line()) is not None:
        out.append(item)
    return out


def split(data: bytes, max_line: int = 64, chunk: int | None = None) -> list[bytes | TooLarge]:
    reader = LineReader(max_line)
    step = chunk or len(data) or 1
    out: list[bytes | TooLarge] = []
    for start in range(0, len(data), step):
        reader.feed(data[start : start + step])
        out += pull(reader)
    return out


# --- LineReader -----------------------------------------------------------------------------


def test_lines_end_with_lf_or_crlf() -> None:
    assert split(b"PING\nSTATUS\r\nAPPLY a b\n") == [b"PING", b"STATUS", b"APPLY a b"]


def test_a_line_without_its_lf_waits_for_more_bytes() -> None:
    reader = LineReader(64)
    reader.feed(b"APPLY x")
    assert reader.next_line() is None
    reader.feed(b"y\r")
    assert reader.next_line() is None
    reader.feed(b"\n")
    assert pull(reader) == [b"APPLY xy"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_one_byte_feeds_give_the_same_lines(chunk: int) -> None:
    data = b"PING\r\nAPPLY a\rb\n\nSTATUS\n" + b"x" * 100 + b"\nLAST\r\n"
    expected = [b"PING", b"APPLY a\rb", b"", b"STATUS", TooLarge(64), b"LAST"]
    assert split(data) == expected
    assert split(data, chunk=chunk) == expected


def test_a_lone_cr_inside_a_line_is_kept() -> None:
    assert split(b"APPLY a\rb\r\r\n") == [b"APPLY a\rb\r"]


def test_limit_counts_the_line_without_its_ending() -> None:
    assert split(b"12345678\r\n123456789\n", max_line=8) == [b"12345678", TooLarge(8)]
    assert split(b"12345678\r\n123456789\r\n", max_line=8, chunk=1) == [b"12345678", TooLarge(8)]


def test_overlong_line_split_across_feeds_yields_one_marker_and_parsing_resumes() -> None:
    reader = LineReader(10)
    reader.feed(b"PING\nAPPLY " + b"a" * 20)
    assert pull(reader) == [b"PING", TooLarge(10)]
    for _ in range(5):
        reader.feed(b"b" * 1000)
        assert pull(reader) == []
    reader.feed(b"ccc\nSTATUS\n")
    assert pull(reader) == [b"STATUS"]


def test_overlong_json_line_is_marked_as_json() -> None:
    assert split(b'{"op":"' + b"a" * 100 + b"\n", max_line=10, chunk=3) == [TooLarge(10, True)]
    assert split(b"APPLY " + b"a" * 100 + b"\n", max_line=10) == [TooLarge(10, False)]


def test_memory_stays_bounded_for_a_huge_line() -> None:
    reader = LineReader(1024)
    block = b"z" * 65536
    tracemalloc.start()
    try:
        for _ in range(2048):  # 128 MiB of one line
            reader.feed(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    reader.feed(b"\nPING\n")
    assert pull(reader) == [TooLarge(1024), b"PING"]
    assert peak < 64 * 1024


def test_last_line_without_lf_counts_at_eof() -> None:
    reader = LineReader(8)
    reader.feed(b"PING\nSTATUS")
    reader.feed_eof()
    assert pull(reader) == [b"PING", b"STATUS"]


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_line"):
        LineReader(0)


# --- parse_request: text form ---------------------------------------------------------------


@pytest.mark.parametrize("verb", [b"APPLY", b"apply", b"Apply", b"aPPLY"])
def test_verbs_are_case_insensitive(verb: bytes) -> None:
    assert parse_request(verb + b" SET a 1") == Request(Op.APPLY, payload=b"SET a 1")


def test_payload_is_the_rest_after_one_space_byte_exact() -> None:
    assert parse_request(b"QUERY  two  spaces ").payload == b" two  spaces "
    assert parse_request(b"LOCAL \xff\x00\t").payload == b"\xff\x00\t"
    assert parse_request(b"APPLY \\n").payload == b"\\n"  # payloads are not unescaped


@pytest.mark.parametrize("line", [b"APPLY", b"APPLY ", b"query", b"LOCAL "])
def test_missing_payload_is_a_bad_request(line: bytes) -> None:
    with pytest.raises(BadRequest, match="missing payload"):
        parse_request(line)


def test_command_bytes_adds_one_newline_for_text_and_nothing_for_json() -> None:
    assert parse_request(b"APPLY x").command_bytes() == b"x\n"
    assert parse_request(b"QUERY GET a").command_bytes() == b"GET a\n"
    assert parse_request(b"LOCAL x\r").command_bytes() == b"x\r\n"
    assert parse_request(b'{"op":"apply","data":"x"}').command_bytes() == b"x"
    assert parse_request(b'{"op":"query","data":"a\\nb\\n"}').command_bytes() == b"a\nb\n"


@pytest.mark.parametrize(
    ("line", "op"),
    [
        (b"STATUS", Op.STATUS),
        (b"ping", Op.PING),
        (b"SNAPSHOT", Op.SNAPSHOT),
        (b"members", Op.MEMBERS),
        (b"STATUS  ", Op.STATUS),
    ],
)
def test_verbs_without_arguments(line: bytes, op: Op) -> None:
    assert parse_request(line) == Request(op)


@pytest.mark.parametrize("line", [b"STATUS now", b"PING x", b"MEMBERS all"])
def test_verbs_without_arguments_refuse_arguments(line: bytes) -> None:
    with pytest.raises(BadRequest, match="takes 0 argument"):
        parse_request(line)


def test_membership_verbs() -> None:
    add = parse_request(b"add hopper 10.0.0.4 08883 8083")
    assert add == Request(Op.ADD, args=("hopper", "10.0.0.4", "8883", "8083"))
    assert parse_request(b"REMOVE hopper") == Request(Op.REMOVE, args=("hopper",))
    assert parse_request(b"transfer turing") == Request(Op.TRANSFER, args=("turing",))


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"ADD hopper 10.0.0.4 8883", "takes 4 argument"),
        (b"ADD hopper h 0 8083", "p2p port"),
        (b"ADD hopper h 8883 65536", "api port"),
        (b"ADD hopper h +80 8083", "p2p port"),
        (b"ADD hopper h 8_0 8083", "p2p port"),
        ("ADD hopper h ８０ 8083".encode(), "p2p port"),
        (b"REMOVE", "takes 1 argument"),
        (b"TRANSFER a b", "takes 1 argument"),
        (b"REMOVE \xff", "not UTF-8"),
    ],
)
def test_bad_membership_arguments(line: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        parse_request(line)


@pytest.mark.parametrize("line", [b"", b"BOGUS", b"GET a", b"APPLYX y", b"\xff\xfe"])
def test_unknown_verbs_name_the_accepted_ones(line: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(line)
    assert "APPLY QUERY LOCAL STATUS PING SNAPSHOT MEMBERS ADD REMOVE TRANSFER" in str(info.value)
    assert not info.value.json


# --- parse_request: JSON form ---------------------------------------------------------------


def jreq(**fields: Any) -> Request:
    return parse_request(json.dumps(fields).encode())


def test_json_apply_carries_client_seq_and_id() -> None:
    request = jreq(op="apply", data="SET a 1\n", client="c-1", seq=7, id=42)
    assert request == Request(Op.APPLY, b"SET a 1\n", (), "c-1", 7, json=True, json_id=42)


def test_json_data_b64_carries_binary() -> None:
    request = jreq(op="QUERY", data_b64=base64.b64encode(b"\x00\xff\n").decode())
    assert request.payload == b"\x00\xff\n"
    assert request.op is Op.QUERY


def test_json_empty_data_is_allowed_and_exact() -> None:
    assert jreq(op="apply", data="").command_bytes() == b""


def test_json_membership_and_plain_ops() -> None:
    add = jreq(op="add", member="hopper", host="h", p2p=8883, api=8083, id="x")
    assert add.args == ("hopper", "h", "8883", "8083")
    assert add.json_id == "x"
    assert jreq(op="remove", member="hopper").args == ("hopper",)
    assert jreq(op="status") == Request(Op.STATUS, json=True)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"op":"apply","data":"x"', "invalid JSON"),
        (b"{}", '"op" must be one of'),
        (b'{"op":"frobnicate","id":3}', '"op" must be one of'),
        (b'{"op":"apply"}', 'exactly one of "data" and "data_b64"'),
        (b'{"op":"apply","data":"x","data_b64":"eA=="}', "exactly one of"),
        (b'{"op":"apply","data":5}', '"data" must be a string'),
        (b'{"op":"apply","data_b64":"!!"}', "not valid base64"),
        (b'{"op":"apply","data":"x","Data":"y"}', "unknown key"),
        (b'{"op":"status","data":"x"}', "unknown key"),
        (b'{"op":"apply","data":"x","client":"c"}', '"seq" must be'),
        (b'{"op":"apply","data":"x","seq":1}', '"client" must be'),
        (b'{"op":"apply","data":"x","client":"c","seq":-1}', '"seq" must be'),
        (b'{"op":"apply","data":"x","client":"c","seq":true}', '"seq" must be'),
        (b'{"op":"add","member":"m","host":"h","p2p":1}', "missing key"),
        (b'{"op":"add","member":"m","host":"h","p2p":0,"api":1}', '"p2p" must be'),
        (b'{"op":"add","member":"m","host":"h","p2p":"1","api":1}', '"p2p" must be'),
        (b'{"op":"transfer","member":"a b"}', '"member" must be'),
    ],
)
def test_bad_json_requests(line: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match) as info:
        parse_request(line)
    assert info.value.json


def test_bad_json_request_keeps_its_id_for_the_reply() -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(b'{"op":"frobnicate","id":3}')
    line = format_reply(info.value.reply(), info.value)
    assert json.loads(line)["id"] == 3
    assert json.loads(line)["error"] == "BADREQUEST"


def test_only_a_line_starting_with_a_brace_is_json() -> None:
    with pytest.raises(BadRequest, match="unknown verb") as info:
        parse_request(b'[{"op":"ping"}]')
    assert not info.value.json
    with pytest.raises(BadRequest, match="starts with a verb"):
        parse_request(b' {"op":"ping"}')


# --- format_reply ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "line"),
    [
        (Ok(b"1\n"), b"OK 1\n"),
        (Ok(b"1\n\n"), b"OK 1\\n\n"),
        (Ok(b"a\\b\r\nc"), b"OK a\\\\b\\r\\nc\n"),
        (Ok(b""), b"OK\n"),
        (Ok(b"\n"), b"OK\n"),
        (Ok(b"PONG"), b"OK PONG\n"),
        (Err(ErrCode.TIMEOUT, "no commit in 5 s"), b"ERR TIMEOUT no commit in 5 s\n"),
        (Err(ErrCode.FSM, "exit 1\nboom"), b"ERR FSM exit 1\\nboom\n"),
        (Err(ErrCode.NOLEADER), b"ERR NOLEADER\n"),
        (Err(ErrCode.NOTLEADER, "ask turing", "turing"), b"ERR NOTLEADER ask turing\n"),
        (Redirect("turing", "10.0.0.1", 8080), b"REDIRECT turing 10.0.0.1:8080\n"),
    ],
)
def test_text_replies(reply: Ok | Err | Redirect, line: bytes) -> None:
    assert format_reply(reply, TEXT) == line


def test_json_replies_are_one_line_and_exact() -> None:
    request = jreq(op="apply", data="x", id=42)
    ok = format_reply(Ok(b"line1\nline2\n"), request)
    assert ok.endswith(b"\n") and ok.count(b"\n") == 1
    assert json.loads(ok) == {"id": 42, "ok": True, "result": "line1\nline2\n"}

    binary = json.loads(format_reply(Ok(b"\xff\x00"), request))
    assert base64.b64decode(binary["result_b64"]) == b"\xff\x00"

    err = json.loads(format_reply(Err(ErrCode.NOTLEADER, "lost", "turing"), request))
    assert err == {
        "id": 42,
        "ok": False,
        "error": "NOTLEADER",
        "message": "lost",
        "leader": "turing",
    }

    redirect = json.loads(format_reply(Redirect("turing", "h", 8080), request))
    assert redirect == {
        "id": 42,
        "ok": False,
        "error": "REDIRECT",
        "leader": "turing",
        "host": "h",
        "port": 8080,
    }


def test_toolarge_reply_in_both_forms() -> None:
    assert format_reply(TooLarge(8).reply(), TooLarge(8)) == b"ERR TOOLARGE line exceeds 8 bytes\n"
    as_json = json.loads(format_reply(TooLarge(8).reply(), TooLarge(8, json=True)))
    assert as_json["error"] == "TOOLARGE" and as_json["id"] is None


def test_outcomes_follow_the_design() -> None:
    """§4: which errors mean certainly-not-applied, unknown, or applied."""
    not_applied = {c for c in ErrCode if c.outcome is Outcome.NOT_APPLIED}
    definite = {ErrCode.NOLEADER, ErrCode.BADREQUEST, ErrCode.TOOLARGE, ErrCode.NOTLEADER}
    assert definite <= not_applied
    assert ErrCode.TIMEOUT.outcome is Outcome.UNKNOWN
    assert ErrCode.INTERNAL.outcome is Outcome.UNKNOWN
    assert ErrCode.FSM.outcome is Outcome.APPLIED


# --- escaping -------------------------------------------------------------------------------


@given(st.binary())
def test_escape_round_trips_and_stays_on_one_line(data: bytes) -> None:
    escaped = escape(data)
    assert b"\n" not in escaped and b"\r" not in escaped
    assert unescape(escaped) == data


@given(st.binary())
def test_an_ok_reply_round_trips_its_result(data: bytes) -> None:
    line = format_reply(Ok(data + b"\n"), TEXT)
    assert line.count(b"\n") == 1
    body = line[3:-1] if line != b"OK\n" else b""
    assert unescape(body) == data


def test_escape_by_hand() -> None:
    assert escape(b"a\\nb") == b"a\\\\nb"
    assert unescape(b"a\\\\nb") == b"a\\nb"
    assert unescape(b"\\t\\") == b"\\t\\"  # unknown sequences are kept
