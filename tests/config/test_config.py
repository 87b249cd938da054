"""graft.yaml loading: every refusal names its key path (DESIGN §2)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from graft.config import Config, ConfigError, default_config_text, load_config

ROOT = Path(__file__).resolve().parents[2]
KV = ROOT / "examples" / "fsm-scripts" / "kv.sh"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graft.yaml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str, **overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), **overrides)  # type: ignore[arg-type]
    return caught.value


BASE = f"""
peers:
  a: {{host: 127.0.0.1, ports: {{p2p: 9001, api: 9101}}}}
  b: {{host: 127.0.0.1, ports: {{p2p: 9002, api: 9102}}}}
fsm: {{command: {KV}}}
"""


def test_root_file_and_embedded_default_are_the_design_example() -> None:
    assert (ROOT / "graft.yaml").read_text() == default_config_text()

    cfg = load_config()
    assert cfg == dataclasses.replace(load_config(ROOT / "graft.yaml"), source=None)
    assert (cfg.cluster, cfg.election_ms, cfg.heartbeat_ms) == ("demo", 350, 35)
    assert [(p.id, p.host, p.p2p_port, p.api_port) for p in cfg.peers.values()] == [
        ("turing", "127.0.0.1", 8880, 8080),
        ("ritchie", "127.0.0.1", 8881, 8081),
        ("lovelace", "127.0.0.1", 8882, 8082),
    ]
    assert cfg.fsm is not None and cfg.fsm.command == str(KV)
    assert (cfg.fsm.mode, cfg.fsm.timeout_ms, dict(cfg.fsm.verbs)) == ("exec", 10000, {})
    assert (cfg.snapshot_every, cfg.snapshot_keep_log, cfg.api_forward, cfg.api_max_line) == (
        10000,
        1000,
        True,
        1048576,
    )
    assert (cfg.data_dir, cfg.log_level, cfg.tls, cfg.source) == ("./data/{id}", "INFO", None, None)


def test_defaults_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    script = tmp_path / "fsm" / "my.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    text = BASE.replace(str(KV), "'./fsm/my.sh --flag \"two words\"'")

    cfg = load_config(write(tmp_path, text))

    assert (cfg.election_ms, cfg.heartbeat_ms, cfg.cluster, cfg.log_level) == (
        350,
        35,
        None,
        "INFO",
    )
    assert cfg.fsm is not None
    assert cfg.fsm.command == f"{script} --flag 'two words'"
    assert cfg.data_dir_for("b") == tmp_path / "data" / "b"
    assert cfg.source == tmp_path / "graft.yaml"
    assert list(cfg.peers) == ["a", "b"]


def test_command_line_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = BASE.replace(f"fsm: {{command: {KV}}}", "fsm: {mode: stream}")

    cfg = load_config(
        write(tmp_path, text), fsm_command="cat -u", data_dir="d/{id}", log_level="debug"
    )

    assert cfg.fsm is not None and (cfg.fsm.command, cfg.fsm.mode) == ("cat -u", "stream")
    assert cfg.data_dir_for("a") == tmp_path / "d" / "a"
    assert cfg.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("fsm:", "fsmm:"), "graft.yaml: fsmm: unknown key (did you mean 'fsm'?)"),
        (
            ("9102}", "9102, http: 1}"),
            "graft.yaml: peers.b.ports.http: unknown key (allowed: p2p, api)",
        ),
        (("p2p: 9002, ", ""), "graft.yaml: peers.b.ports.p2p: missing"),
        (
            ("p2p: 9002", "p2p: 9001"),
            "graft.yaml: peers.b.ports.p2p: port 9001 is already used by peers.a.ports.p2p;",
        ),
        (
            ("api: 9102", "api: 9002"),
            "graft.yaml: peers.b.ports.api: port 9002 is already used by peers.b.ports.p2p;",
        ),
        (
            ("9101", "70000"),
            "graft.yaml: peers.a.ports.api: must be an integer 1..65535 (got 70000)",
        ),
        (
            ("9101", "'9101'"),
            "graft.yaml: peers.a.ports.api: must be an integer 1..65535 (got '9101')",
        ),
        (
            ("host: 127.0.0.1, ", ""),
            "graft.yaml: peers.a.host: missing; write the address other peers dial",
        ),
        (("b: {", "a: {"), "graft.yaml: a: written twice (again on line 4); keep one"),
        (("  b:", "  b c:"), "graft.yaml: peers.b c: a peer id is 1-63"),
    ],
)
def test_refusals_name_the_key(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    error = refusal(tmp_path, BASE.replace(*edit))

    assert str(error).startswith(f"{tmp_path}/{expected}")  # the file is named by its path


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ("timeouts: {election: fast}", "timeouts.election", "must be an integer > 0 (got 'fast')"),
        (
            "timeouts: {election: 30}",
            "timeouts.election",
            "must be greater than timeouts.heartbeat (30 <= 35)",
        ),
        ("timeouts: {heartbeat: yes}", "timeouts.heartbeat", "must be an integer > 0 (got True)"),
        ("snapshot: {every: 0}", "snapshot.every", "must be an integer > 0 (got 0)"),
        ("snapshot: {keep_log: -1}", "snapshot.keep_log", "must be an integer >= 0 (got -1)"),
        ("api: {forward: 'no'}", "api.forward", "must be true or false (got 'no')"),
        ("api: [1]", "api", "must be a mapping of keys"),
        ("log_level: LOUD", "log_level", "log_level must be one of DEBUG, INFO"),
        ("data_dir: ./x/{name}", "data_dir", "only {id} may appear in braces"),
        ("cluster: 3", "cluster", "must be a non-empty string (got 3)"),
        ("tls: {cert: c.pem, key: k.pem}", "tls.cert", "no such file"),
    ],
)
def test_bad_values(tmp_path: Path, extra: str, key: str, message: str) -> None:
    error = refusal(tmp_path, BASE + extra + "\n")

    assert error.key == key
    assert message in error.message
    assert str(error) == f"{tmp_path / 'graft.yaml'}: {key}: {error.message}"


def test_the_error_names_the_file_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("staging.yaml").write_text(BASE.replace("fsm:", "fsmm:"))

    with pytest.raises(ConfigError) as bad:
        load_config(Path("staging.yaml"))
    with pytest.raises(ConfigError) as missing:
        load_config(Path("nowhere.yaml"))

    assert str(bad.value).startswith("staging.yaml: fsmm: unknown key")
    assert str(missing.value) == "nowhere.yaml: no such file; pass --config PATH"


def test_fsm_command_is_required_and_checked(tmp_path: Path) -> None:
    no_fsm = BASE.replace(f"fsm: {{command: {KV}}}", "")
    assert "pass --fsm COMMAND" in refusal(tmp_path, no_fsm).message
    assert load_config(write(tmp_path, no_fsm), fsm_command=str(KV)).fsm is not None

    missing = refusal(tmp_path, BASE.replace(str(KV), "./nope.sh"))
    assert (missing.key, missing.message) == (
        "fsm.command",
        f"program './nope.sh' of fsm.command not found (looked at {tmp_path}/nope.sh)",
    )
    assert "not on PATH" in refusal(tmp_path, BASE.replace(str(KV), "no-such-program-xyz")).message
    batch = BASE.replace(f"{{command: {KV}}}", f"{{command: {KV}, mode: batch}}")
    bad_mode = refusal(tmp_path, batch)
    assert (bad_mode.key, bad_mode.message) == ("fsm.mode", "must be exec or stream (got 'batch')")


def test_per_verb_commands_may_stand_in_for_command(tmp_path: Path) -> None:
    verbs = "\n".join(f"  {verb}: cat" for verb in ("apply", "query", "dump", "load"))
    cfg = load_config(write(tmp_path, BASE.replace(f"fsm: {{command: {KV}}}", "fsm:\n" + verbs)))

    assert cfg.fsm is not None and cfg.fsm.command is None
    assert dict(cfg.fsm.verbs) == dict.fromkeys(("apply", "query", "dump", "load"), "cat")
    three = BASE.replace(f"fsm: {{command: {KV}}}", "fsm:\n" + verbs.rsplit("\n", 1)[0])
    assert refusal(tmp_path, three).key == "fsm.command"


def test_node_must_be_a_peer(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))

    with pytest.raises(ConfigError) as caught:
        cfg.peer("zed")
    assert (
        str(caught.value) == f"{tmp_path / 'graft.yaml'}: peers: 'zed' is not a peer; known: a, b"
    )
    with pytest.raises(ConfigError):
        cfg.data_dir_for("zed")


def test_tls_paths_resolve_against_the_file(tmp_path: Path) -> None:
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("x")

    cfg = load_config(write(tmp_path, BASE + "tls: {cert: c.pem, key: k.pem, ca: ca.pem}\n"))

    assert cfg.tls is not None
    assert (cfg.tls.cert, cfg.tls.key, cfg.tls.ca) == (
        tmp_path / "c.pem",
        tmp_path / "k.pem",
        tmp_path / "ca.pem",
    )


def test_file_and_syntax_errors(tmp_path: Path) -> None:
    syntax = refusal(tmp_path, "peers: [\n")
    top = refusal(tmp_path, "- 1\n")

    assert (syntax.key, top.key) == ("", "")
    assert str(syntax).startswith(f"{tmp_path / 'graft.yaml'}: not valid YAML: ")
    assert str(top).startswith(f"{tmp_path / 'graft.yaml'}: the top level must be a mapping")
    assert refusal(tmp_path, "").key == "peers"
    with pytest.raises(ConfigError, match="no such file; pass --config"):
        load_config(tmp_path / "absent.yaml")


def test_embedded_default_finds_kv_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    cfg = load_config()

    assert cfg.fsm is not None and cfg.fsm.command == str(KV)
    assert cfg.data_dir_for("turing") == tmp_path / "data" / "turing"
    assert os.access(KV, os.X_OK)


def test_every_design_key_is_accepted() -> None:
    tree = yaml.safe_load(default_config_text())
    assert set(tree) == {
        "cluster",
        "timeouts",
        "peers",
        "fsm",
        "snapshot",
        "api",
        "data_dir",
        "log_level",
    }
    assert isinstance(load_config(), Config)
