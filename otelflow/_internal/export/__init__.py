"""The write side of telemetry: the export pipeline, its stages, the outage buffer, shipping."""
