"""What the ``otelflow`` command groups are made of: rendering, the trace tree, store-backed groups."""
