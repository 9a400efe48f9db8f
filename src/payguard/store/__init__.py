"""Storage: engines, the unit of work, the schema and its migrations."""
