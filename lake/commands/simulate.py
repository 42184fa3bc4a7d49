"""`lake simulate`."""


def register(sub, common) -> None:
    pass
