"""Helpers the engine uses while runs run: caching, parameters, redaction, remote runs, signals."""
