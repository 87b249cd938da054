"""Mutual TLS for peer connections, from the optional `tls` section of graft.yaml."""

from __future__ import annotations

import ssl

from graft.config import Config
from graft.transport import tls


def contexts(config: Config) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """The server and client contexts, or (None, None) when peers talk plain TCP."""
    if config.tls is None:
        return None, None

    paths = (str(config.tls.cert), str(config.tls.key), str(config.tls.ca))
    return tls.server_context(*paths), tls.client_context(*paths)
