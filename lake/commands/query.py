"""`lake query`."""


def register(sub, common) -> None:
    pass
