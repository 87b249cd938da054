"""Peer connections: length-prefixed frames over TCP, optionally mutual TLS. Owns peer sockets."""
