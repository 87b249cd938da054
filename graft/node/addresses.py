"""How a member's addresses travel in the replicated configuration.

The core treats a member's address as an opaque string. The node stores "host:p2p:api" in
it, so that a node added later (absent from everyone's graft.yaml) can be dialled and its
clients redirected.
"""

from __future__ import annotations


def address_of(host: str, p2p_port: int, api_port: int) -> str:
    return f"{host}:{p2p_port}:{api_port}"


def parse_address(address: str) -> tuple[str, int, int]:
    host, p2p, api = address.rsplit(":", 2)
    return host, int(p2p), int(api)
