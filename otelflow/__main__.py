"""``python -m otelflow``: the otelflow command line."""

from otelflow.cli import main

if __name__ == "__main__":
    main()
