"""The command of a ``lake stream --workers N`` worker: ``python -m beam_pipelines.stream.worker_main
--parent-pid PID --worker I/N ...``.

It starts watching for the process that started it before anything else:
importing Beam takes seconds (more on a loaded machine), and a parent killed
in those seconds must not leave a worker streaming on its own. The rest of
the command line is the stream's (``beam_pipelines.stream.pipeline``).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from beam_pipelines.stream.workers import split_parent, worker_started


def main(argv: Optional[Sequence[str]] = None) -> None:
    parent, rest = split_parent(list(sys.argv[1:] if argv is None else argv))
    worker_started(parent)
    from beam_pipelines.stream.pipeline import run  # noqa: PLC0415 - imports Beam: after the watch has started

    run(rest)


if __name__ == "__main__":
    main()
