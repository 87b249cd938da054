"""Reading graft.yaml (DESIGN §2) into a checked `Config`.

Everything is refused here, before a node opens a file or a socket: unknown keys (with a
suggestion), missing or duplicate ports, wrong types, an election timeout that does not
exceed the heartbeat, an FSM command that does not exist. Each `ConfigError` names the key
path and says what to do. Checking whether a node id is a peer is `Config.peer`'s job, since
the id comes from the command line.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import yaml

from graft.config.model import (
    FSM_VERBS,
    Config,
    ConfigError,
    FsmConfig,
    FsmMode,
    PeerConfig,
    TlsConfig,
    source_name,
)

TOP_KEYS = (
    "cluster",
    "timeouts",
    "peers",
    "fsm",
    "snapshot",
    "api",
    "data_dir",
    "log_level",
    "tls",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PEER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# The repository root of a source checkout, where the embedded default's
# ./examples/fsm-scripts/kv.sh lives when Graft runs from elsewhere.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def default_config_text() -> str:
    """The embedded default graft.yaml (the same content as the repository's root graft.yaml)."""
    return resources.files("graft.config").joinpath("default.yaml").read_text(encoding="utf-8")


def load_config(
    path: Path | None = None,
    *,
    fsm_command: str | None = None,
    data_dir: str | None = None,
    log_level: str | None = None,
) -> Config:
    """Load and check graft.yaml; `path` None loads the embedded default.

    The keyword arguments are the command-line overrides (--fsm, --data-dir, --log-level).
    Relative paths in them are taken from the current directory, like any shell argument;
    relative paths in the file are taken from the file's directory.
    """
    try:
        if path is None:
            text, base = default_config_text(), None
        else:
            text, base = _read(path), path.resolve().parent

        tree = _parse(text)
        return _build(tree, base, path, fsm_command, data_dir, log_level)
    except ConfigError as exc:
        exc.source = source_name(path)
        raise


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", "no such file; pass --config PATH") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read it ({exc})") from None


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise ConfigError(str(key), f"written twice (again on line {line}); keep one")
        seen.add(key)
    return dict(loader.construct_pairs(node))


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _parse(text: str) -> dict[str, Any]:
    try:
        tree = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {exc}") from None

    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError("", f"the top level must be a mapping of keys, got {_kind(tree)}")
    return cast(dict[str, Any], tree)


def _build(
    tree: dict[str, Any],
    base: Path | None,
    source: Path | None,
    fsm_command: str | None,
    data_dir: str | None,
    log_level: str | None,
) -> Config:
    _no_unknown_keys(tree, TOP_KEYS, "")
    election_ms, heartbeat_ms = _timeouts(_section(tree, "timeouts", ""))
    snapshot = _section(tree, "snapshot", "")
    api = _section(tree, "api", "")
    _no_unknown_keys(snapshot, ("every", "keep_log"), "snapshot")
    _no_unknown_keys(api, ("forward", "max_line"), "api")

    return Config(
        cluster=_optional_str(tree, "cluster", ""),
        election_ms=election_ms,
        heartbeat_ms=heartbeat_ms,
        peers=_peers(tree.get("peers")),
        fsm=_fsm(tree, base, fsm_command),
        snapshot_every=_int(snapshot, "every", "snapshot", 10000, minimum=1),
        snapshot_keep_log=_int(snapshot, "keep_log", "snapshot", 1000, minimum=0),
        api_forward=_bool(api, "forward", "api", True),
        api_max_line=_int(api, "max_line", "api", 1048576, minimum=64),
        data_dir=_data_dir(tree, data_dir),
        log_level=_log_level(tree, log_level),
        tls=_tls(tree.get("tls"), base),
        source=source.resolve() if source is not None else None,
    )


# --- generic checks -------------------------------------------------------------------------


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def _no_unknown_keys(mapping: Mapping[Any, Any], allowed: tuple[str, ...], parent: str) -> None:
    for key in mapping:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        raise ConfigError(_join(parent, str(key)), f"unknown key ({hint})")


def _section(tree: Mapping[str, Any], key: str, parent: str) -> dict[str, Any]:
    """An optional mapping section; absent or empty gives {}."""
    value = tree.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(_join(parent, key), f"must be a mapping of keys (got {_kind(value)})")
    return cast(dict[str, Any], value)


def _int(
    mapping: Mapping[str, Any], key: str, parent: str, default: int | None, *, minimum: int
) -> int:
    value = mapping.get(key, default)
    path = _join(parent, key)
    if value is None:
        raise ConfigError(path, "missing; write an integer")
    # bool is an int in Python, but `yes` is not a duration or a port.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = "> 0" if minimum == 1 else f">= {minimum}"
        raise ConfigError(path, f"must be an integer {bound} (got {_show(value)})")
    return value


def _show(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def _bool(mapping: Mapping[str, Any], key: str, parent: str, default: bool) -> bool:
    value = mapping.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(_join(parent, key), f"must be true or false (got {_show(value)})")
    return value


def _optional_str(mapping: Mapping[str, Any], key: str, parent: str) -> str | None:
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(_join(parent, key), f"must be a non-empty string (got {_show(value)})")
    return value


# --- sections -------------------------------------------------------------------------------


def _timeouts(timeouts: dict[str, Any]) -> tuple[int, int]:
    _no_unknown_keys(timeouts, ("election", "heartbeat"), "timeouts")
    election = _int(timeouts, "election", "timeouts", 350, minimum=1)
    heartbeat = _int(timeouts, "heartbeat", "timeouts", 35, minimum=1)
    if election <= heartbeat:
        raise ConfigError(
            "timeouts.election",
            f"must be greater than timeouts.heartbeat ({election} <= {heartbeat}); "
            "a follower would start elections between two heartbeats (10x is usual)",
        )
    return election, heartbeat


def _peers(value: object) -> MappingProxyType[str, PeerConfig]:
    if value is None:
        raise ConfigError("peers", "missing; list at least one peer: id -> {host, ports}")
    if not isinstance(value, dict) or not value:
        raise ConfigError("peers", f"must be a non-empty mapping id -> peer (got {_kind(value)})")

    peers: dict[str, PeerConfig] = {}
    owners: dict[tuple[str, int], str] = {}
    for peer_id, entry in value.items():
        peer = _peer(peer_id, entry)
        for name, port in (("p2p", peer.p2p_port), ("api", peer.api_port)):
            _claim_port(owners, peer.host, port, f"peers.{peer.id}.ports.{name}")
        peers[peer.id] = peer
    return MappingProxyType(peers)


def _peer(peer_id: object, entry: object) -> PeerConfig:
    if not isinstance(peer_id, str) or not PEER_ID.fullmatch(peer_id):
        raise ConfigError(
            f"peers.{peer_id}",
            "a peer id is 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    path = f"peers.{peer_id}"
    if not isinstance(entry, dict):
        raise ConfigError(path, f"must be a mapping {{host, ports}} (got {_kind(entry)})")

    _no_unknown_keys(entry, ("host", "ports"), path)
    host = _optional_str(entry, "host", path)
    if host is None:
        raise ConfigError(f"{path}.host", "missing; write the address other peers dial")
    if "ports" not in entry:
        raise ConfigError(f"{path}.ports", "missing; write ports: {p2p: PORT, api: PORT}")
    ports = _section(entry, "ports", path)
    _no_unknown_keys(ports, ("p2p", "api"), f"{path}.ports")
    return PeerConfig(
        id=peer_id,
        host=host,
        p2p_port=_port(ports, "p2p", f"{path}.ports"),
        api_port=_port(ports, "api", f"{path}.ports"),
    )


def _port(ports: Mapping[str, Any], key: str, parent: str) -> int:
    path = _join(parent, key)
    if key not in ports:
        raise ConfigError(path, "missing")
    value = ports[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(path, f"must be an integer 1..65535 (got {_show(value)})")
    return value


def _claim_port(owners: dict[tuple[str, int], str], host: str, port: int, path: str) -> None:
    """Two listeners on one host and port cannot both start: refuse it now."""
    slot = (host.lower(), port)
    owner = owners.get(slot)
    if owner is not None:
        raise ConfigError(path, f"port {port} is already used by {owner}; pick a free port")
    owners[slot] = path


def _fsm(tree: Mapping[str, Any], base: Path | None, override: str | None) -> FsmConfig:
    section = _section(tree, "fsm", "")
    _no_unknown_keys(section, ("command", "mode", "timeout", *FSM_VERBS), "fsm")
    mode = section.get("mode", "exec")
    if mode not in ("exec", "stream"):
        raise ConfigError("fsm.mode", f"must be exec or stream (got {_show(mode)})")

    if override is not None:
        command: str | None = _command(override, "fsm.command", None, flag=True)
    else:
        command = _optional_str(section, "command", "fsm")
        command = _command(command, "fsm.command", base) if command is not None else None
    verbs = {v: _command(c, f"fsm.{v}", base) for v in FSM_VERBS if (c := section.get(v))}

    # A per-verb command replaces `command VERB`, so exec mode needs `command` only for the
    # verbs that have none; stream mode always runs `command stream`.
    if command is None and (mode == "stream" or len(verbs) < len(FSM_VERBS)):
        raise ConfigError(
            "fsm.command", "missing; set fsm.command in graft.yaml or pass --fsm COMMAND"
        )
    return FsmConfig(
        command=command,
        mode=cast(FsmMode, mode),
        timeout_ms=_int(section, "timeout", "fsm", 10000, minimum=1),
        verbs=MappingProxyType(verbs),
    )


def _command(command: object, path: str, base: Path | None, *, flag: bool = False) -> str:
    """Resolve the program of `command`: a relative path against `base`, a bare name on PATH."""
    if not isinstance(command, str) or not command.strip():
        raise ConfigError(path, f"must be a non-empty command string (got {_show(command)})")
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(path, f"cannot be split like a shell would ({exc})") from None
    if not words:
        raise ConfigError(path, "must name a program")

    program = _program(words[0], path, base, flag)
    return shlex.join([program, *words[1:]])


def _program(word: str, path: str, base: Path | None, flag: bool) -> str:
    where = "--fsm" if flag else path
    if "/" not in word:
        found = shutil.which(word)
        if found is None:
            raise ConfigError(path, f"program '{word}' of {where} is not on PATH")
        return word

    candidates = _candidates(Path(word).expanduser(), base, flag)
    for candidate in candidates:
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                raise ConfigError(path, f"{candidate} is not executable; chmod +x it")
            return str(candidate)
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(path, f"program '{word}' of {where} not found (looked at {tried})")


def _candidates(program: Path, base: Path | None, flag: bool) -> list[Path]:
    if program.is_absolute():
        return [program]
    if flag or base is not None:
        # A command-line path is relative to the cwd; a path in a file, to the file.
        root = Path.cwd() if flag else cast(Path, base)
        return [(root / program).resolve()]
    # The embedded default: the cwd, then the source checkout it came from.
    here, checkout = (Path.cwd() / program).resolve(), (SOURCE_ROOT / program).resolve()
    return [here] if here == checkout else [here, checkout]


def _data_dir(tree: Mapping[str, Any], override: str | None) -> str:
    if override is not None:
        # A --data-dir path is relative to the cwd of the command that was typed.
        return str(Path(override).expanduser().absolute())
    value = tree.get("data_dir", "./data/{id}")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("data_dir", f"must be a non-empty path (got {_show(value)})")
    leftover = value.replace("{id}", "")
    if "{" in leftover or "}" in leftover:
        raise ConfigError("data_dir", f"only {{id}} may appear in braces (got '{value}')")
    return value


def _log_level(tree: Mapping[str, Any], override: str | None) -> str:
    value = override if override is not None else tree.get("log_level", "INFO")
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        where = "--log-level" if override is not None else "log_level"
        raise ConfigError(
            "log_level", f"{where} must be one of {', '.join(LOG_LEVELS)} (got {_show(value)})"
        )
    return value.upper()


def _tls(value: object, base: Path | None) -> TlsConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError("tls", f"must be a mapping {{cert, key, ca}} (got {_kind(value)})")

    _no_unknown_keys(value, ("cert", "key", "ca"), "tls")
    root = base if base is not None else Path.cwd()
    files = {}
    for key in ("cert", "key", "ca"):
        name = _optional_str(value, key, "tls")
        if name is None:
            raise ConfigError(f"tls.{key}", "missing; mutual TLS needs cert, key and ca (PEM)")
        file = (root / Path(name).expanduser()).resolve()
        if not file.is_file():
            raise ConfigError(f"tls.{key}", f"{file}: no such file")
        files[key] = file
    return TlsConfig(cert=files["cert"], key=files["key"], ca=files["ca"])
