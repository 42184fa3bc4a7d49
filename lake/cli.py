"""``lake``: the command line of contract section 7.

Each sub-command lives in ``lake.commands.<name>`` with the same shape: a
``register(subparsers)`` that declares its flags and a ``run(args, settings)``
that does the work. Heavy imports (Beam, Great Expectations) happen inside
``run``, so ``lake --help`` stays instant.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
import threading
from typing import Optional, Sequence

from edge_client.errors import EdgeError
from lake_core.errors import LakeError
from lake_core.settings import Settings

COMMANDS = [
    "broker",
    "simulate",
    "registry",
    "devices",
    "gateway",
    "mqtt",
    "bridge",
    "ingest",
    "stream",
    "silver",
    "gold",
    "validate",
    "query",
    "ledger",
    "lineage",
    "maintain",
    "migrate",
    "forget",
    "airflow",
    "serve",
    "status",
    "demo",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2: the contract for bad flags
        self.exit(2, f"lake: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--lake-root",
        help="lake location: a path or file://, s3://, gs:// URI (default: env LAKE_ROOT, else ./lake_data)",
    )
    common.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: env KAFKA_BOOTSTRAP_SERVERS, else the embedded broker)"
    )
    common.add_argument("--topic", help="telemetry topic (default: env LAKE_TOPIC, else vehicle-telemetry)")
    common.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser = _Parser(prog="lake", description="Telemetry data lake: Kafka -> Beam -> Bronze/Silver/Gold.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"lake.commands.{name}").register(sub, common)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            if not getattr(args, "allow_beam_args", False):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.beam_args = extra
    except SystemExit as exc:  # --help and flag errors: return the code, callers (tests, DAGs) keep running
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.resolve(args.lake_root, args.bootstrap, args.topic)
        return int(args.func(args, settings) or 0)
    except (LakeError, EdgeError) as exc:  # the device side's errors have the same shape
        print(f"lake: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lake: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``lake`` console script: ``main()``, then a quick exit.

    After a Beam job the interpreter spends about half a second tearing down
    the objects of Beam, gRPC and protobuf one by one (measured after a
    ``lake ingest``), memory the OS reclaims at once. So once ``main``
    returned, the exit handlers ran and the streams are flushed, the process
    ends without that teardown. Not when a non-daemon thread still runs: the
    interpreter would wait for it, and so do we (the normal exit).
    """
    code = main()
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # what a normal exit runs first: multiprocessing, logging, our own handlers
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to save
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
