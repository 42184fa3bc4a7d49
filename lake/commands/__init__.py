"""One module per ``lake`` sub-command: ``register(subparsers, common)`` and ``run(args, settings)``."""
