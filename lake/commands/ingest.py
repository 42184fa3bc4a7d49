"""`lake ingest`."""


def register(sub, common) -> None:
    pass
