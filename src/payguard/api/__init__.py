"""The HTTP layer: the only place that knows about HTTP status codes and headers."""
