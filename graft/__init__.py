"""Graft: replicate any stateful program with Raft, without changing it."""

__version__ = "0.1.0"
