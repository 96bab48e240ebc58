"""The ``citygov`` command."""
