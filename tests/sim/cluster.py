"""Seeded fault schedules over a cluster of simulated hosts.

One schedule is fully determined by (seed, nodes, steps). Its generator picks the cluster's
tuning (PreVote and CheckQuorum on or off, batch sizes), the network's faults, and at every
step one event: deliver the next due message, advance time by one tick (every running node
ticks), or act: propose, read, crash, restart, partition, heal, change membership, snapshot,
transfer leadership. After every step the checker verifies the safety properties.
A leader's disk may be slow: its Ready is then sent at once but persisted and advanced only
some steps later, as the node runtime allows (graft/raft/ready.py).

When the steps are done the faults heal (partitions removed, losses stopped, crashed nodes
restarted) and the liveness phase must elect a leader and commit and apply a marker entry on
every running member within a bounded number of ticks; surviving proposals are then applied
everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from graft.raft.core import CoreConfig, RaftCore
from graft.raft.messages import InstallSnapshot
from graft.raft.ready import MembershipChangePending, NotLeader, ProposalDropped, Role
from graft.raft.types import Member, Membership

from .checker import LINEARIZABILITY, LIVENESS, Checker, Violation
from .host import CoreFactory, HostFaults, SimHost
from .network import Envelope, Network, NetworkFaults

REPLAY = (
    "GRAFT_SIM_SEED={seed} GRAFT_SIM_NODES={nodes} GRAFT_SIM_STEPS={steps} "
    ".venv/bin/pytest tests/sim -k replay"
)


def replay_command(seed: int, nodes: int, steps: int) -> str:
    return REPLAY.format(seed=seed, nodes=nodes, steps=steps)


@dataclass
class Profile:
    """The per-schedule choices, drawn from the seed."""

    config: dict[str, int | bool]
    faults: NetworkFaults
    action_rate: float
    crash_mid_ready: float
    weights: dict[str, int]
    # chance that a leader's Ready stays unpersisted for another step (a slow fsync)
    slow_disk: float = 0.0

    @classmethod
    def draw(cls, rng: random.Random) -> Profile:
        election = rng.choice((5, 8, 10))
        config: dict[str, int | bool] = {
            "election_ticks": election,
            "heartbeat_ticks": rng.choice((1, 2)),
            "max_inflight": rng.choice((1, 4, 64)),
            "max_entries_bytes": rng.choice((1, 64, 1 << 20)),
            "pre_vote": rng.random() < 0.8,
            "check_quorum": rng.random() < 0.8,
        }
        faults = NetworkFaults(
            drop=rng.choice((0.0, 0.02, 0.1)),
            duplicate=rng.choice((0.0, 0.05)),
            reorder=rng.choice((0.0, 0.05, 0.2)),
            max_delay=rng.choice((0, 1, 3)),
        )
        weights = {
            "propose": 30,
            "read": 6,
            "crash": rng.choice((1, 3, 6)),
            "restart": 6,
            "partition": rng.choice((1, 3)),
            "heal": 4,
            "member": rng.choice((0, 2, 4)),
            "snapshot": rng.choice((1, 4)),
            "transfer": rng.choice((0, 2)),
        }
        return cls(config, faults, rng.choice((0.1, 0.2, 0.3)), 0.05, weights)


@dataclass
class Read:
    context: int
    floor: int  # highest commit index known anywhere when the read was asked


@dataclass
class SimCluster:
    seed: int
    nodes: int
    factory: CoreFactory = RaftCore
    host_faults: HostFaults = field(default_factory=HostFaults)
    profile_override: Callable[[Profile], None] | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.profile = Profile.draw(self.rng)
        # Its own stream, so that the slow disk leaves the other draws of a seed as they were.
        self.disk_rng = random.Random(f"disk-{self.seed}")
        self.profile.slow_disk = self.disk_rng.choice((0.0, 0.5, 0.9))
        if self.profile_override is not None:
            self.profile_override(self.profile)
        self.checker = Checker()
        self.network = Network(random.Random(self.rng.random()), self.profile.faults)
        self.now = 0
        self.step_no = 0
        self.bootstrap = Membership(tuple(Member(f"n{i}") for i in range(1, self.nodes + 1)))
        self.hosts: dict[str, SimHost] = {}
        for member in self.bootstrap.voters:
            self._add_host(member.id)
        self.spare = self.nodes + 1
        self.proposals = 0
        self.reads: dict[int, Read] = {}
        self.next_read = 1
        self.actions = list(self.profile.weights)
        self.action_weights = list(self.profile.weights.values())

    def _add_host(self, node_id: str) -> SimHost:
        config = CoreConfig(node_id, **self.profile.config)  # type: ignore[arg-type]
        host = SimHost(
            node_id,
            self.bootstrap,
            config,
            random.Random(self.rng.random()),
            self.checker,
            self.factory,
            self.host_faults,
        )
        self.hosts[node_id] = host
        return host

    # -- running -----------------------------------------------------------------------------

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()
        self.checker.check_logs(self._running_cores())
        self.heal_and_check_liveness()

    def step(self) -> None:
        self.step_no += 1
        roll = self.rng.random()
        if roll < self.profile.action_rate:
            action = self.rng.choices(self.actions, self.action_weights)[0]
            getattr(self, f"_do_{action}")()
        else:
            envelope = self.network.next_due(self.now)
            if envelope is None:
                self.tick()
            else:
                self._deliver(envelope)
        self._report_lost()
        if self.step_no % 250 == 0:
            self.checker.check_logs(self._running_cores())

    def tick(self) -> None:
        self.now += 1
        for host in self.hosts.values():
            if host.core is not None:
                host.core.tick()
                self._process(host)

    def _deliver(self, envelope: Envelope) -> None:
        host = self.hosts.get(envelope.msg.dst)
        if host is None or host.core is None:
            self.network.lost.append(envelope)
            return
        host.receive(envelope)
        self._process(host)
        if isinstance(envelope.msg, InstallSnapshot):
            self._report_snapshot(envelope.msg.src, envelope.msg.dst, True)

    def _report_snapshot(self, leader: str, peer: str, success: bool) -> None:
        host = self.hosts.get(leader)
        if host is not None and host.core is not None:
            host.core.report_snapshot(peer, success)
            self._process(host)

    def _report_lost(self) -> None:
        lost = self.network.lost
        while lost:
            msg = lost.pop().msg
            if isinstance(msg, InstallSnapshot):
                self._report_snapshot(msg.src, msg.dst, False)

    def _process(self, host: SimHost) -> None:
        crash = (
            host.core is not None
            and host.core.role is Role.LEADER
            and self.rng.random() < self.profile.crash_mid_ready
            and self._down_count() < self._tolerated()
        )
        slow = self.disk_rng.random() < self.profile.slow_disk
        host.process(self._send, crash_mid_ready=crash, slow_disk=slow)
        if host.core is None:
            return
        # Only the nodes a step touches can change, so checking them after it is checking all.
        self.checker.check_node(host.id, host.core)
        for read in host.released:
            self._check_read(host.id, read.context, read.index)
        host.released.clear()
        for context in host.dropped:
            self.reads.pop(context, None)
        host.dropped.clear()

    def _send(self, envelope: Envelope) -> None:
        self.network.send(envelope, self.now)

    def _check(self) -> None:
        check = self.checker.check_node
        for node_id, host in self.hosts.items():
            if host.core is not None:
                check(node_id, host.core)

    def _running_cores(self) -> dict[str, RaftCore]:
        return {n: h.core for n, h in self.hosts.items() if h.core is not None}

    def _tolerated(self) -> int:
        """Crash at most f of 2f+1 at a time, so the cluster can make progress in between."""
        return (self.nodes - 1) // 2

    def _down_count(self) -> int:
        return sum(1 for h in self.hosts.values() if h.core is None)

    def _leader(self) -> SimHost | None:
        found = [
            h for h in self.hosts.values() if h.core is not None and h.core.role is Role.LEADER
        ]
        if not found:
            return None
        return max(found, key=lambda h: h.core.term if h.core else 0)

    def _random_up(self) -> SimHost | None:
        up = [h for h in self.hosts.values() if h.core is not None]
        return self.rng.choice(up) if up else None

    # -- actions -----------------------------------------------------------------------------

    def _do_propose(self) -> None:
        host = self._leader() if self.rng.random() < 0.9 else self._random_up()
        if host is None or host.core is None:
            return
        self.proposals += 1
        count = self.rng.choice((1, 1, 1, 5, 20))
        try:
            for _ in range(count):
                host.core.propose(b"%d:%d" % (self.seed, self.proposals))
                self.proposals += 1
        except (NotLeader, ProposalDropped):
            return
        self._process(host)

    def _do_read(self) -> None:
        host = self._leader()
        if host is None or host.core is None:
            return
        context = self.next_read
        self.next_read += 1
        floor = max(self.checker.committed, default=0)
        self.reads[context] = Read(context, floor)
        host.core.read_index(context)
        self._process(host)

    def _check_read(self, node: str, context: int, index: int) -> None:
        read = self.reads.pop(context, None)
        if read is None:
            raise Violation(LINEARIZABILITY, f"{node} released unknown read {context}")
        if index < read.floor:
            raise Violation(
                LINEARIZABILITY,
                f"{node} released read {context} at index {index}, but {read.floor} "
                f"was committed before it was asked",
            )

    def _do_crash(self) -> None:
        host = self._random_up()
        if host is not None and self._down_count() < self._tolerated():
            host.crash()

    def _do_restart(self) -> None:
        down = [h for h in self.hosts.values() if h.core is None]
        if down:
            host = self.rng.choice(down)
            host.start()
            self._process(host)

    def _do_partition(self) -> None:
        ids = list(self.hosts)
        if self.rng.random() < 0.5:
            self.network.isolate(self.rng.choice(ids), set(ids))
        else:
            self.rng.shuffle(ids)
            cut = self.rng.randint(1, len(ids) - 1)
            self.network.partition([set(ids[:cut]), set(ids[cut:])])

    def _do_heal(self) -> None:
        self.network.heal()

    def _do_member(self) -> None:
        host = self._leader()
        if host is None or host.core is None:
            return
        core = host.core
        membership = core.membership
        learners = [m.id for m in membership.learners]
        voters = [m.id for m in membership.voters]
        try:
            if learners and self.rng.random() < 0.6:
                learner = self.rng.choice(learners)
                if self.rng.random() < 0.8:
                    core.promote(learner)
                else:
                    core.remove(learner)
            elif len(voters) > 3 and self.rng.random() < 0.5 or len(self.hosts) >= 2 * self.nodes:
                if len(voters) > 3:
                    core.remove(self.rng.choice(voters))
            else:
                node_id = f"n{self.spare}"
                core.add_learner(Member(node_id))
                self.spare += 1
                self._add_host(node_id)
        except (NotLeader, ProposalDropped, MembershipChangePending):
            return
        self._process(host)

    def _do_snapshot(self) -> None:
        host = self._random_up()
        if host is not None and host.take_snapshot(self.rng.choice((0, 2, 10))):
            self._process(host)

    def _do_transfer(self) -> None:
        host = self._leader()
        if host is None or host.core is None:
            return
        others = [m.id for m in host.core.membership.voters if m.id != host.id]
        if others:
            host.core.transfer_leadership(self.rng.choice(others))
            self._process(host)

    # -- liveness ----------------------------------------------------------------------------

    def heal_and_check_liveness(self) -> None:
        self.network.heal()
        faults = self.network.faults
        self.network.faults = NetworkFaults(reorder=faults.reorder, max_delay=faults.max_delay)
        self.profile.crash_mid_ready = 0.0
        self.profile.slow_disk = 0.0
        for host in self.hosts.values():
            if host.core is None:
                host.start()
                self._process(host)

        # A bounded wait: elections take a few timeouts; catching up a backlog takes a round
        # trip per batch, and a batch may be one entry (max_entries_bytes=1, max_inflight=1).
        election = int(self.profile.config["election_ticks"])
        cores = self._running_cores().values()
        backlog = max(c.log.last_index() for c in cores) - min(c.log.commit for c in cores)
        budget = 60 * election + 2 * backlog * (self.network.faults.max_delay + 1)
        marker = b"marker:%d" % self.seed
        marker_at: tuple[str, int, int] | None = None
        for _ in range(budget):
            leader = self._leader()
            if leader is not None and leader.core is not None:
                marker_at = self._place_marker(leader, marker, marker_at)
                if marker_at is not None and self._marker_everywhere(leader, marker_at):
                    self._check_surviving(leader.core.membership)
                    return
            self._settle()
            self.tick()
        raise Violation(
            LIVENESS,
            f"no leader that commits and applies a new entry within {budget} ticks after "
            f"healing (leader {self._leader() and self._leader().id})",  # type: ignore[union-attr]
        )

    def _place_marker(
        self, leader: SimHost, marker: bytes, marker_at: tuple[str, int, int] | None
    ) -> tuple[str, int, int] | None:
        core = leader.core
        assert core is not None
        if marker_at is not None and marker_at[0] == leader.id and marker_at[2] == core.term:
            return marker_at
        try:
            index = core.propose(marker)
        except (NotLeader, ProposalDropped):
            return None
        self._process(leader)
        return (leader.id, index, core.term)

    def _marker_everywhere(self, leader: SimHost, marker_at: tuple[str, int, int]) -> bool:
        assert leader.core is not None
        members = leader.core.membership.ids()
        index = marker_at[1]
        return all(
            host.fsm.index >= index
            for node_id, host in self.hosts.items()
            if node_id in members and host.core is not None
        )

    def _settle(self) -> None:
        for _ in range(10_000):
            envelope = self.network.next_due(self.now)
            if envelope is None:
                return
            self._deliver(envelope)
            self._report_lost()

    def _check_surviving(self, membership: Membership) -> None:
        """Every entry committed anywhere was applied by every running member."""
        self.checker.check_logs(self._running_cores())
        top = max(self.checker.committed, default=0)
        members = membership.ids()
        for node_id, host in self.hosts.items():
            if host.core is None or node_id not in members:
                continue
            if host.fsm.index < top:
                raise Violation(
                    LIVENESS, f"{node_id} applied up to {host.fsm.index}, committed {top}"
                )


def run_schedule(
    seed: int,
    nodes: int,
    steps: int,
    factory: CoreFactory = RaftCore,
    host_faults: HostFaults | None = None,
    profile_override: Callable[[Profile], None] | None = None,
) -> SimCluster:
    """Run one schedule; any failure carries the command that replays it."""
    cluster = SimCluster(seed, nodes, factory, host_faults or HostFaults(), profile_override)
    try:
        cluster.run(steps)
    except Violation as violation:
        violation.args = (f"{violation.args[0]}\n  replay: {replay_command(seed, nodes, steps)}",)
        raise
    except Exception as error:  # the core's own InvariantViolation, a crash in a handler
        error.add_note(f"replay: {replay_command(seed, nodes, steps)}")
        raise
    return cluster
