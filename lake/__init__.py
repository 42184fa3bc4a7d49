"""The ``lake`` command line and the Python entry points for notebooks."""
