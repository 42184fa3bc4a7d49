"""Every Beam pipeline of the lake. Each has the same shape: ``options``
(a typed object built from flags), named composite transforms, and
``run(argv)``."""
