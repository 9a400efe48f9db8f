"""Use cases. Each command owns its transaction boundary: one unit of work per command."""
