"""Loading and validating graft.yaml."""
