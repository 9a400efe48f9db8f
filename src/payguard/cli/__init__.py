"""The ``payguard`` command line."""
