"""The Raft consensus algorithm as a pure, deterministic state machine (no I/O)."""
