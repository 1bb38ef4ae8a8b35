"""The spool on disk: the OTLP-JSON codec, the line writer, liveness marks, the reader and the run index."""
