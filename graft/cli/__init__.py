"""The graft command line."""
