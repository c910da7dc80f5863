"""The ``pgobs`` command line."""
