"""Mutual TLS for peer connections: both ends present a certificate signed by the cluster CA.

A peer's identity is its node id, never its address (DESIGN §2), so certificates name node
ids (as a SAN dNSName, or as the subject CN) and host names are not checked. The transport
compares the id a certificate names with the id the peer claims in its Hello (listener side)
or with the id it dialled (caller side).
"""

from __future__ import annotations

import os
import ssl
from typing import Any

StrPath = str | os.PathLike[str]


def server_context(cert: StrPath, key: StrPath, ca: StrPath) -> ssl.SSLContext:
    """A listener context that requires a client certificate signed by `ca`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(cert: StrPath, key: StrPath, ca: StrPath) -> ssl.SSLContext:
    """A caller context that presents `cert` and requires a server certificate signed by `ca`.

    Host name checking is off on purpose: peers are identified by node id, which the
    transport checks against the certificate after the TLS handshake.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    return context


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> set[str]:
    """The names the verified peer certificate gives: its SAN dNSNames and subject CNs.

    Empty when there is no TLS or no verified certificate.
    """
    if ssl_object is None:
        return set()
    cert: dict[str, Any] | None = ssl_object.getpeercert()
    if not cert:
        return set()

    names = {value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}
    for rdn in cert.get("subject", ()):
        names.update(value for key, value in rdn if key == "commonName")
    return names
