"""A small shop that uses payguard as a library (see ../README.md)."""
