"""How the suite names its test FSM in graft.yaml (DESIGN §3, exec mode)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

FSM_SCRIPT = Path(__file__).with_name("fsm_registers.py")


def fsm_command() -> str:
    """The real interpreter with -S (fast start), joined like a shell would split it."""
    return shlex.join([sys.executable, "-S", str(FSM_SCRIPT)])
