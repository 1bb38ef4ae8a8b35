"""Utilities with Prefect-compatible module paths (``otelflow.utilities.annotations``)."""
