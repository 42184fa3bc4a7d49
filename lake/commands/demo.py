"""`lake demo`."""


def register(sub, common) -> None:
    pass
