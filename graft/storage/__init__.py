"""Durable storage: the write-ahead log, hard state and snapshot store. Owns every byte on disk."""
