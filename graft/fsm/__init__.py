"""Runs the user's state machine command: apply, query, dump and load. Owns every child process."""
