"""What every job's options share: runners, and flags declared once on the options' fields.

Each job's options are a frozen dataclass (``IngestOptions``,
``SilverOptions``, ``GoldOptions``) whose flag fields say how they appear on
the command line (``flag(...)``): the default is written once, on the field,
and argparse, ``--help`` and the dataclass all take it from there. Values are
checked when the object is built (``__post_init__``), wherever it is built.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Optional, TypeVar

__all__ = ["LOCAL_RUNNERS", "DEFAULT_RUNNER", "flag", "add_flags", "build_options", "is_local_runner"]

#: Runners that run the pipeline in this process (one worker): the ingest runs passes, the jobs start helpers.
LOCAL_RUNNERS = frozenset({"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "PrismRunner"})
DEFAULT_RUNNER = "FnApiRunner"

T = TypeVar("T")
_NO_DEFAULT: Any = dataclasses.MISSING


def is_local_runner(runner: str) -> bool:
    return runner in LOCAL_RUNNERS


def flag(
    default: Any = _NO_DEFAULT,
    *,
    help: str,
    name: Optional[str] = None,
    type: Optional[Callable[[str], Any]] = None,
    metavar: Optional[str] = None,
    choices: Optional[list[str]] = None,
    negate: Optional[str] = None,
    switch: bool = False,
    shown_default: Optional[str] = None,
) -> Any:
    """A dataclass field that is also a command-line flag.

    ``name``: the flag (default ``--field-name``); ``negate="--no-gate"``: a
    boolean field that is True unless the flag is given; ``switch``: a
    boolean field that is False unless the flag is given; ``shown_default``:
    how ``--help`` shows the default ("" shows none).
    """
    spec = {
        "help": help,
        "name": name,
        "type": type,
        "metavar": metavar,
        "choices": choices,
        "negate": negate,
        "switch": switch,
        "shown_default": shown_default,
    }
    return dataclasses.field(default=default, metadata={"flag": spec})


def add_flags(parser: argparse.ArgumentParser, options: type, title: str) -> None:
    """Declare every flag field of ``options`` on ``parser``, in a group named ``title``."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(options):
        spec = f.metadata.get("flag")
        if spec is None:
            continue
        name = spec["name"] or "--" + f.name.replace("_", "-")
        if spec["negate"]:
            group.add_argument(spec["negate"], dest=f.name, action="store_false", help=spec["help"])
            continue
        if spec["switch"]:
            group.add_argument(name, dest=f.name, action="store_true", help=spec["help"])
            continue
        required = f.default is dataclasses.MISSING
        shown = spec["shown_default"]
        if shown is None:
            shown = "" if required or f.default is None else str(f.default)
        kwargs: dict[str, Any] = {"dest": f.name, "help": spec["help"] + (f" (default {shown})" if shown else "")}
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        for key in ("type", "metavar", "choices"):
            if spec[key] is not None:
                kwargs[key] = spec[key]
        group.add_argument(name, **kwargs)


def build_options(options: type[T], args: argparse.Namespace, **given: Any) -> T:
    """``options`` built from the parsed flags of its flag fields plus ``given`` (lake root, Kafka...)."""
    assert dataclasses.is_dataclass(options)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(options) if "flag" in f.metadata}
    return options(**given, **values)
