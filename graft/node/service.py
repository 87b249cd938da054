"""The client service: what each line-API request means for this node (DESIGN §4).

A follower forwards APPLY and QUERY (and membership requests) to the leader over the peer
connection and relays the answer, or answers REDIRECT when `api.forward` is off. The leader
proposes and reads through the core and answers once the applier has the outcome.

Every error says whether the request was certainly not applied (NOLEADER, NOTLEADER,
BADREQUEST, TOOLARGE) or whether its outcome is unknown (TIMEOUT), and the service only
claims certainty where the log proves it: an APPLY pending on a node that lost leadership
keeps waiting, because the new leader may still commit it; it becomes NOTLEADER only once a
different entry is applied at its index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

import orjson

from graft.api.protocol import Err, ErrCode, Ok, Op, Redirect, Reply, Request
from graft.node.addresses import address_of, parse_address
from graft.node.applier import OutcomeUnknown
from graft.node.envelope import wrap
from graft.node.forward import (
    Call,
    ForwardError,
    decode_call,
    decode_reply,
    encode_call,
    encode_reply,
)
from graft.node.sessions import Outcome
from graft.node.snapshots import SnapshotFailed
from graft.raft.ready import MembershipChangePending, NotLeader, ProposalDropped, Role
from graft.raft.types import Member
from graft.transport.codec import ForwardReply, ForwardRequest

if TYPE_CHECKING:
    from graft.node.runtime import Node

log = logging.getLogger("graft.node")

# Test-only switches that plant known bugs, so the fault suite can show it catches them
# (docs/testing.md). Read once at start; never set them in production.
UNSAFE = frozenset(filter(None, os.environ.get("GRAFT_TEST_UNSAFE", "").split(",")))

# Entries a leader lets into its log ahead of its state machine before new APPLYs wait.
MAX_UNAPPLIED = 4096

_FORWARDED = frozenset({Op.APPLY, Op.QUERY, Op.ADD, Op.REMOVE, Op.TRANSFER})


class Service:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._reads: dict[int, asyncio.Future[int | None]] = {}
        self._next_read = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- timeouts ---------------------------------------------------------------------------

    @property
    def election_s(self) -> float:
        return self.node.config.election_ms / 1000

    @property
    def request_s(self) -> float:
        """How long an APPLY may wait for commit and apply before the answer is TIMEOUT."""
        fsm = self.node.config.fsm
        fsm_ms = fsm.timeout_ms if fsm is not None else 10_000
        return fsm_ms / 1000 + 5 * self.election_s

    # -- the api.Handler entry point --------------------------------------------------------

    async def handle(self, request: Request) -> Reply:
        op = request.op
        if op is Op.PING:
            return Ok(b"PONG")
        if op is Op.STATUS:
            return Ok(orjson.dumps(self.status()))
        if op is Op.MEMBERS:
            return Ok(orjson.dumps(self.members()))
        if op is Op.LOCAL:
            outcome = await self.node.applier.local(request.command_bytes())
            return reply_of(outcome)
        if op is Op.SNAPSHOT:
            return await self._snapshot()
        if op is Op.QUERY and "stale-reads" in UNSAFE:
            return reply_of(await self.node.applier.local(request.command_bytes()))

        call = Call(op, self._call_data(request), request.client, request.seq)
        return await self.route(call)

    @staticmethod
    def _call_data(request: Request) -> bytes:
        if request.op is Op.ADD or request.op is Op.REMOVE or request.op is Op.TRANSFER:
            return " ".join(request.args).encode()
        return request.command_bytes()

    async def route(self, call: Call) -> Reply:
        """Run `call` here when this node leads, else hand it to the leader."""
        node = self.node
        if node.observed.role is Role.LEADER:
            return await self.execute(call)

        leader = await self._await_leader()
        if leader is None:
            return Err(ErrCode.NOLEADER, "no leader is known; the cluster may be electing one")
        if leader == node.id:
            return await self.execute(call)
        if not node.config.api_forward:
            return self._redirect(leader)

        future = node.forward(leader, encode_call(call))
        if future is None:
            return Err(ErrCode.NOLEADER, f"the leader {leader} cannot be reached from here")
        # A transfer changes the leader by design: that change says nothing about its reply.
        body = await self._relay(future, watch_leader=call.op is not Op.TRANSFER)
        if body is None:
            return Err(ErrCode.TIMEOUT, f"no answer from the leader {leader}; outcome unknown")
        try:
            return decode_reply(body)
        except ForwardError as exc:
            return Err(ErrCode.TIMEOUT, f"unreadable answer from the leader: {exc}")

    async def _relay(self, future: asyncio.Future[bytes], *, watch_leader: bool) -> bytes | None:
        """The leader's reply, or None when it did not come in time or the leader changed.

        A leader that crashed never answers, and the frame may sit in the peer queue until
        it restarts; once this node sees another leader (or none), waiting longer cannot
        tell the outcome, so the client hears TIMEOUT at once and can retry elsewhere.
        Without `watch_leader` only the time limit ends the wait.
        """
        waits: list[asyncio.Future[Any]] = [future]
        if watch_leader:
            waits.append(asyncio.ensure_future(self.node.observed.leader_changed.wait()))
        try:
            await asyncio.wait(
                waits,
                timeout=self.request_s + self.election_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiting in waits[1:]:
                waiting.cancel()
        if future.done():
            return future.result()
        future.cancel()
        return None

    async def _await_leader(self) -> str | None:
        """The known leader; during an election, wait up to two timeouts for one."""
        observed = self.node.observed
        if observed.leader is not None:
            return observed.leader

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(observed.leader_changed.wait(), 2 * self.election_s)
        return observed.leader

    def _redirect(self, leader: str) -> Reply:
        member = self.node.membership.member(leader)
        peer = self.node.config.peers.get(leader)
        if peer is not None:
            return Redirect(leader, peer.host, peer.api_port)
        if member is not None and member.address:
            host, _, api = parse_address(member.address)
            return Redirect(leader, host, api)
        return Err(ErrCode.NOLEADER, f"the address of the leader {leader} is unknown")

    # -- on the leader ----------------------------------------------------------------------

    async def execute(self, call: Call) -> Reply:
        try:
            if call.op is Op.APPLY:
                return await self._apply(call)
            if call.op is Op.QUERY:
                return await self._query(call.data)
            return await self._membership(call)
        except NotLeader as exc:
            return Err(ErrCode.NOTLEADER, "this node is not the leader", exc.leader)
        except ProposalDropped:
            return Err(ErrCode.NOTLEADER, "a leadership transfer is in progress; retry")
        except MembershipChangePending:
            return Err(ErrCode.BUSY, "another membership change is still in progress; retry")

    async def _apply(self, call: Call) -> Reply:
        node = self.node
        if call.client is not None and call.seq is not None:
            seen = node.applier.sessions.seen(call.client, call.seq)
            if seen is not None:
                return reply_of(seen)

        if not await self._admitted():
            return Err(ErrCode.BUSY, "the state machine is too far behind; retry later")

        index = node.core.propose(wrap(call.data, call.client, call.seq))
        node.poke()
        if "early-ack" in UNSAFE:
            return Ok(b"OK")
        return await self._await_applied(index)

    async def _admitted(self) -> bool:
        """Back-pressure: wait while MAX_UNAPPLIED entries are in the log but not applied.

        Without it a slow FSM lets the log grow without bound while clients time out and
        retry. A client that waits here holds its connection's slot, so closed-loop clients
        slow down to the FSM's pace; one that gives up has proposed nothing.
        """
        node = self.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_s
        while node.core.last_index - node.applier.applied >= MAX_UNAPPLIED:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(node.config.heartbeat_ms / 1000)
        return True

    async def _await_applied(self, index: int) -> Reply:
        node = self.node
        future = node.applier.expect(index, node.core.term)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(future), self.request_s)
        except TimeoutError:
            return Err(ErrCode.TIMEOUT, f"entry {index} was not applied in time; outcome unknown")
        except OutcomeUnknown:
            return Err(ErrCode.TIMEOUT, f"entry {index} was covered by a snapshot; outcome unknown")

        if outcome is None:
            return Err(ErrCode.NOTLEADER, f"entry {index} was replaced by a new leader's entry")
        return reply_of(outcome)

    async def _query(self, data: bytes) -> Reply:
        """§6.4 ReadIndex: confirm leadership, wait for the read index, then query."""
        node = self.node
        self._next_read += 1
        context = self._next_read
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._reads[context] = future
        node.core.read_index(context)
        node.poke()

        try:
            index = await asyncio.wait_for(future, 2 * self.election_s)
        except TimeoutError:
            self._reads.pop(context, None)
            return Err(
                ErrCode.TIMEOUT, "leadership could not be confirmed; the read was not served"
            )
        if index is None:
            return Err(ErrCode.NOTLEADER, "leadership was lost before the read could be served")

        return reply_of(await node.applier.read(index, data))

    def read_ready(self, context: int, index: int) -> None:
        future = self._reads.pop(context, None)
        if future is not None and not future.done():
            future.set_result(index)

    def read_dropped(self, context: int) -> None:
        future = self._reads.pop(context, None)
        if future is not None and not future.done():
            future.set_result(None)

    def role_changed(self, role: Role) -> None:
        if role is Role.LEADER:
            return
        # Reads wait on a leadership confirmation this node can no longer give.
        for context in list(self._reads):
            self.read_dropped(context)

    async def _snapshot(self) -> Reply:
        node = self.node
        try:
            stored = await node.applier.exclusive(node.snapshots.take)
        except SnapshotFailed as exc:
            return Err(ErrCode.UNAVAILABLE, str(exc))
        return Ok(str(stored.meta.index).encode())

    # -- membership -------------------------------------------------------------------------

    async def _membership(self, call: Call) -> Reply:
        args = call.data.decode().split()
        core = self.node.core
        if call.op is Op.TRANSFER:
            return await self._transfer(args[0])
        if call.op is Op.REMOVE:
            try:
                index = core.remove(args[0])
            except ValueError as exc:
                return refused(exc)
            self.node.poke()
            reply = await self._await_applied(index)
            return Ok(f"removed {args[0]}".encode()) if isinstance(reply, Ok) else reply

        node_id, host, p2p, api = args
        member = Member(node_id, address_of(host, int(p2p), int(api)))
        if core.membership.member(node_id) == member:
            # The same ADD again: an earlier one was cut short between its two changes
            # (leadership moved, or the learner was slow to catch up). Finish it.
            return await self._promote(node_id)
        try:
            index = core.add_learner(member)
        except ValueError as exc:
            return refused(exc)
        self.node.poke()
        reply = await self._await_applied(index)
        if not isinstance(reply, Ok):
            return reply
        return await self._promote(node_id)

    async def _promote(self, node_id: str) -> Reply:
        """Thesis §4.2.1: a new server catches up as a learner before it can vote.

        Also the whole of a repeated ADD: a learner left by an interrupted one is promoted,
        and a voter already promoted is reported added once that change has committed.

        Another change (a second learner added meanwhile) may be uncommitted when this one
        has caught up: the promotion then waits for it, since the learner is already in the
        configuration and answering BUSY would claim that nothing was applied.
        """
        node = self.node
        deadline = asyncio.get_running_loop().time() + self.request_s
        while asyncio.get_running_loop().time() < deadline:
            status = node.core.status()
            if node_id in status.membership.voter_ids():
                # Promoted already (by an identical ADD running beside this one).
                if status.membership_index <= status.commit_index:
                    return Ok(f"added {node_id}".encode())
                await asyncio.sleep(self.node.config.heartbeat_ms / 1000)
                continue
            progress = status.progress.get(node_id)
            if progress is not None and progress.match_index >= status.commit_index:
                with contextlib.suppress(MembershipChangePending):
                    index = node.core.promote(node_id)
                    break
            await asyncio.sleep(self.node.config.heartbeat_ms / 1000)
        else:
            return Err(
                ErrCode.TIMEOUT,
                f"{node_id} did not catch up; it stays a learner (check that it runs, then "
                "send the same ADD again to finish)",
            )

        node.poke()
        reply = await self._await_applied(index)
        return Ok(f"added {node_id}".encode()) if isinstance(reply, Ok) else reply

    async def _transfer(self, target: str) -> Reply:
        node = self.node
        if target == node.id:
            return Ok(f"{target} is already the leader".encode())
        try:
            node.core.transfer_leadership(target)
        except ValueError as exc:
            return refused(exc)
        node.poke()

        deadline = asyncio.get_running_loop().time() + 2 * self.election_s
        while node.observed.leader != target:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return Err(ErrCode.TIMEOUT, f"leadership did not move to {target} in time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.observed.leader_changed.wait(), remaining)
        return Ok(f"leader is now {target}".encode())

    # -- forwarded requests -----------------------------------------------------------------

    def serve_forwarded(self, peer: str, frame: ForwardRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._serve_forwarded(peer, frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_forwarded(self, peer: str, frame: ForwardRequest) -> None:
        try:
            call = decode_call(frame.body)
        except ForwardError as exc:
            reply: Reply = Err(ErrCode.BADREQUEST, str(exc))
        else:
            if call.op not in _FORWARDED:
                reply = Err(ErrCode.BADREQUEST, f"{call.op.name} cannot be forwarded")
            elif self.node.observed.role is not Role.LEADER:
                # No second hop: the follower that asked learns the truth and answers.
                reply = Err(
                    ErrCode.NOTLEADER,
                    "this node is no longer the leader",
                    self.node.observed.leader,
                )
            else:
                reply = await self.execute(call)

        self.node.transport.send(peer, ForwardReply(frame.request_id, encode_reply(reply)))

    # -- status -----------------------------------------------------------------------------

    def members(self) -> dict[str, object]:
        membership = self.node.membership
        return {
            "voters": sorted(membership.voter_ids()),
            "learners": sorted(membership.learner_ids()),
            "addresses": [
                self._address(m.id, m.address) for m in (*membership.voters, *membership.learners)
            ],
        }

    def _address(self, node_id: str, address: str) -> dict[str, str]:
        peer = self.node.config.peers.get(node_id)
        if peer is not None:
            host, p2p, api = peer.host, peer.p2p_port, peer.api_port
        else:
            host, p2p, api = parse_address(address)
        return {"id": node_id, "p2p": f"{host}:{p2p}", "api": f"{host}:{api}"}

    def status(self) -> dict[str, object]:
        node = self.node
        core = node.core.status()
        degraded = node.fsm.degraded
        progress = {
            peer: {"match": p.match_index, "next": p.next_index, "state": p.state}
            for peer, p in core.progress.items()
        }
        usage = node.storage.usage()
        stored = node.storage.snapshot()
        return {
            "id": node.id,
            "role": core.role.value,
            "term": core.term,
            "leader": core.leader,
            "commit": core.commit_index,
            "applied": node.applier.applied,
            "members": sorted(core.membership.ids()),
            "health": "degraded" if degraded else "ok",
            **({"reason": degraded} if degraded else {}),
            "voters": sorted(core.membership.voter_ids()),
            "learners": sorted(core.membership.learner_ids()),
            "first_index": core.first_index,
            "last_index": core.last_index,
            "log_bytes": usage.get("log_bytes", 0),
            "snapshot": {"index": stored.meta.index, "size": stored.size} if stored else None,
            "snapshot_bytes": usage.get("snapshot_bytes", 0),
            "progress": progress,
        }


def refused(exc: ValueError) -> Reply:
    """The core refused a change that makes no sense (adding a member twice, removing or
    handing leadership to an unknown one) before it touched the log: certainly not applied."""
    return Err(ErrCode.REFUSED, str(exc))


def reply_of(outcome: Outcome) -> Reply:
    if outcome.ok:
        return Ok(outcome.output)

    detail = outcome.stderr.strip() or outcome.output.strip()
    message = f"exit status {outcome.status}: {detail.decode(errors='replace')}"
    return Err(ErrCode.FSM, message)
