"""``lake silver --hour H``: one Bronze hour -> Silver (the job the hourly DAG runs)."""

from __future__ import annotations

from beam_pipelines.silver.options import add_silver_flags
from lake.commands.batch_job import run_batch_job


def register(sub, common) -> None:
    p = sub.add_parser(
        "silver",
        parents=[common],
        help="clean one Bronze hour into Silver (Beam batch)",
        description="Parse, correct, quarantine, enrich and deduplicate one Bronze hour, then "
        "MERGE it into silver/telemetry. Re-running an hour changes nothing. Unknown flags are "
        "Beam pipeline options (e.g. --runner=FlinkRunner --flink_master=...).",
    )
    add_silver_flags(p)
    p.set_defaults(func=run, allow_beam_args=True)


def run(args, settings) -> int:
    return run_batch_job("silver", args, settings)
