"""A session with the real `nc` (install.sh installs it; this test never skips)."""

from __future__ import annotations

import json
import subprocess

from .conftest import Live

NC = "/usr/bin/nc"


def nc_session(port: int, lines: list[str]) -> list[str]:
    """Send lines through nc, all at once (pipelined); -N: half-close after stdin's end."""
    result = subprocess.run(
        [NC, "-N", "127.0.0.1", str(port)],
        input="".join(line + "\n" for line in lines).encode(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()


def test_nc_session_ping_apply_query_status_and_pipelined_lines(calm: Live) -> None:
    leader = calm.wait_leader()
    follower = next(name for name in calm.names if name != leader)
    port = calm.node(follower).api

    replies = nc_session(port, ["PING", "APPLY SET nc-key hello world", "QUERY GET nc-key"])
    assert replies == ["OK PONG", "OK OK", "OK hello world"]

    status_line = nc_session(port, ["status"])  # verbs are case-insensitive
    assert len(status_line) == 1 and status_line[0].startswith("OK {")
    status = json.loads(status_line[0][3:])
    assert status["id"] == follower and status["leader"] == leader

    # Many requests before reading anything: one reply per line, in order. (A QUERY
    # pipelined behind an APPLY not yet acknowledged may or may not see it, so the reads go
    # in a second session, after the acknowledgements.)
    writes = nc_session(port, [f"APPLY SET nc-{n} v{n}" for n in range(5)])
    assert writes == ["OK OK"] * 5
    reads = nc_session(port, [*(f"QUERY GET nc-{n}" for n in range(5)), "bogus", "PING", "\r"])
    assert reads[:5] == [f"OK v{n}" for n in range(5)]
    assert reads[5].startswith("ERR BADREQUEST")
    assert reads[6] == "OK PONG"
    assert len(reads) == 8, reads
