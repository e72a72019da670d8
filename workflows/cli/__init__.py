"""The ``terraseg`` command-line interface: one module per command."""
