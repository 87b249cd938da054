"""Peers over mutual TLS, configured by graft.yaml's `tls` section (docs/configuration.md).

Three real `graft start` processes, each with a certificate that names its node id, elect a
leader and replicate; a fourth process that holds a valid certificate of the same CA but for
another id is refused by every peer, and so cannot join the cluster under a false name.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import yaml
from jepsen.blocking import LineClient
from jepsen.cluster import free_ports, graft_command

from .conftest import fsm_kv_command, wait_for

NAMES = ("t1", "t2", "t3")


def write_identity(ca: trustme.CA, directory: Path, name: str) -> dict[str, str]:
    """A certificate naming `name`, its key, and the CA, as files for graft.yaml."""
    cert = ca.issue_cert(name)
    paths = {"cert": directory / f"{name}.pem", "key": directory / f"{name}.key"}
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return {"cert": str(paths["cert"]), "key": str(paths["key"]), "ca": str(directory / "ca.pem")}


def status(port: int) -> dict[str, object] | None:
    try:
        with LineClient(port, timeout=2.0) as client:
            reply = client.request("STATUS")
    except OSError:
        return None
    return json.loads(reply[3:]) if reply.startswith("OK ") else None


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[tuple[dict[str, int], list[subprocess.Popen[bytes]]]]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ports = free_ports(2 * len(NAMES))
    peers = {
        name: {"host": "127.0.0.1", "ports": {"p2p": ports[2 * i], "api": ports[2 * i + 1]}}
        for i, name in enumerate(NAMES)
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in NAMES:
            config = {
                "cluster": "tls",
                "timeouts": {"election": 300, "heartbeat": 30},
                "peers": peers,
                "fsm": {"command": fsm_kv_command()},
                "tls": write_identity(ca, tmp_path, name),
            }
            path = tmp_path / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            log = (tmp_path / f"{name}.log").open("wb")
            argv = [*graft_command(), "start", name, "--config", str(path)]
            argv += ["--data-dir", str(tmp_path / name)]
            processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        yield {name: peers[name]["ports"]["api"] for name in NAMES}, processes  # type: ignore[index]
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_peers_with_certificates_naming_their_ids_replicate(
    tls_cluster: tuple[dict[str, int], list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    api, _ = tls_cluster

    def one_leader() -> str | None:
        views = [status(port) for port in api.values()]
        leaders = {v["leader"] for v in views if v is not None}
        return leaders.pop() if len(leaders) == 1 and None not in leaders else None

    leader = wait_for(one_leader, 30.0, "one leader over TLS")
    follower = next(name for name in NAMES if name != leader)
    with LineClient(api[follower]) as client:
        assert client.request("APPLY SET secret 42") == "OK OK"  # forwarded over TLS
    for name in NAMES:
        with LineClient(api[name]) as client:
            wait_for(lambda c=client: c.request("LOCAL GET secret") == "OK 42", 10.0, name)


def test_a_certificate_for_another_id_is_refused(
    tls_cluster: tuple[dict[str, int], list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    api, processes = tls_cluster
    wait_for(lambda: all(status(port) for port in api.values()), 30.0, "the cluster")

    # t3 comes back holding t1's certificate and key: signed by the right CA, but naming t1.
    processes[2].kill()
    processes[2].wait()
    config = yaml.safe_load((tmp_path / "t3.yaml").read_text())
    config["tls"]["cert"] = str(tmp_path / "t1.pem")
    config["tls"]["key"] = str(tmp_path / "t1.key")
    (tmp_path / "t3-forged.yaml").write_text(yaml.safe_dump(config))
    argv = [*graft_command(), "start", "t3", "--config", str(tmp_path / "t3-forged.yaml")]
    argv += ["--data-dir", str(tmp_path / "t3")]
    with (tmp_path / "t3-forged.log").open("wb") as log:
        processes[2] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def warned_about_t3() -> bool:
        logs = [(tmp_path / f"{name}.log").read_text() for name in ("t1", "t2")]
        return any(
            "WARNING" in line and "t3" in line for text in logs for line in text.splitlines()
        )

    wait_for(warned_about_t3, 15.0, "t1 or t2 to refuse the impostor")
    wait_for(lambda: status(api["t3"]) is not None, 15.0, "the impostor to answer")
    impostor = status(api["t3"])
    assert impostor is not None and impostor["leader"] is None, impostor

    with LineClient(api["t1"]) as client:
        assert client.request("APPLY SET after 1") == "OK OK"  # t1 and t2 still a majority
