"""Runs the user's state machine command: apply, query, dump and load. Owns every child
process. See docs/fsm.md for the contract (DESIGN §3) and the stream framing."""

from __future__ import annotations

from pathlib import Path

from graft.fsm.base import ApplyCall, FsmSettings, StateMachine
from graft.fsm.errors import FsmError, FsmFault, FsmStateLost
from graft.fsm.exec_mode import ExecStateMachine
from graft.fsm.retry import RetryingStateMachine
from graft.fsm.stream_mode import StreamStateMachine

Supervisor = RetryingStateMachine


def open_state_machine(
    cfg: FsmSettings, *, node_id: str, state_dir: Path
) -> ExecStateMachine | StreamStateMachine:
    """The runner for `cfg.mode`. Nothing starts yet: stream mode starts its process on the
    first call. `state_dir` (GRAFT_STATE_DIR) is created if missing."""
    if cfg.mode == "exec":
        return ExecStateMachine(cfg, node_id=node_id, state_dir=state_dir)
    if cfg.mode == "stream":
        return StreamStateMachine(cfg, node_id=node_id, state_dir=state_dir)
    raise ValueError(f"fsm: unknown mode {cfg.mode!r} (exec or stream)")


__all__ = [
    "ApplyCall",
    "ExecStateMachine",
    "FsmError",
    "FsmFault",
    "FsmSettings",
    "FsmStateLost",
    "RetryingStateMachine",
    "StateMachine",
    "StreamStateMachine",
    "Supervisor",
    "open_state_machine",
]
