"""`lake registry`."""


def register(sub, common) -> None:
    pass
