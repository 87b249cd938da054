"""The validated configuration records. Every instance comes out of `load_config`, checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FsmMode = Literal["exec", "stream"]
FSM_VERBS = ("apply", "query", "dump", "load")


BUILT_IN = "the built-in graft.yaml"  # how errors name the embedded default


def source_name(path: Path | None) -> str:
    """The configuration file as errors name it: as given, or the built-in one for None."""
    return BUILT_IN if path is None else str(path)


class ConfigError(ValueError):
    """graft.yaml is refused. `key` is the dotted path of the offending key ("" for the file
    as a whole); `source` names the file (the loader sets it to the path it was given)."""

    def __init__(self, key: str, message: str, source: str = "graft.yaml") -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message
        self.source = source

    def __str__(self) -> str:
        if not self.key:  # the file as a whole (missing, unreadable)
            return f"{self.source}: {self.message}"
        return f"{self.source}: {self.key}: {self.message}"


@dataclass(frozen=True)
class PeerConfig:
    id: str
    host: str
    p2p_port: int
    api_port: int


@dataclass(frozen=True)
class FsmConfig:
    """How to run the user's state machine (DESIGN §3).

    `command` is already resolved: a relative program path was made absolute against the
    config file's directory. `verbs` holds the per-verb commands that replace `command VERB`.
    """

    command: str | None
    mode: FsmMode
    timeout_ms: int
    verbs: Mapping[str, str]


@dataclass(frozen=True)
class TlsConfig:
    """Mutual TLS between peers: our certificate, its key, and the CA that signs every peer."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class Config:
    cluster: str | None
    election_ms: int
    heartbeat_ms: int
    peers: Mapping[str, PeerConfig]  # in file order
    fsm: FsmConfig | None
    snapshot_every: int
    snapshot_keep_log: int
    api_forward: bool
    api_max_line: int
    data_dir: str  # may hold the template {id}
    log_level: str
    tls: TlsConfig | None
    source: Path | None  # None: the embedded default

    def peer(self, node_id: str) -> PeerConfig:
        """The entry of `node_id`; a node that is not a peer is refused before it opens anything."""
        try:
            return self.peers[node_id]
        except KeyError:
            known = ", ".join(self.peers)
            raise ConfigError(
                "peers", f"'{node_id}' is not a peer; known: {known}", source_name(self.source)
            ) from None

    def data_dir_for(self, node_id: str) -> Path:
        """`data_dir` with {id} replaced; a relative path is taken from the file's directory."""
        self.peer(node_id)
        path = Path(self.data_dir.replace("{id}", node_id)).expanduser()
        if path.is_absolute():
            return path

        base = self.source.parent if self.source is not None else Path.cwd()
        return (base / path).resolve()
