"""payguard: payment primitives that stay correct under concurrency, and a reference service."""

__version__ = "0.1.0"
__all__ = ["__version__"]
