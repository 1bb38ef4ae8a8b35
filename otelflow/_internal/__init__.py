"""Internals: not part of the public API; may change without notice."""
