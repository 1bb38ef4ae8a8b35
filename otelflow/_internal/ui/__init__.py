"""``otelflow ui``: a local web page of the spool's runs, traces and logs (docs/ui.md)."""
