"""``lake gold --date D``: one Silver day -> the Gold tables."""

from __future__ import annotations

from beam_pipelines.gold.options import add_gold_flags
from lake.commands.batch_job import run_batch_job


def register(sub, common) -> None:
    p = sub.add_parser(
        "gold",
        parents=[common],
        help="aggregate one Silver day into Gold (Beam batch)",
        description="Compute gold/vehicle_hourly and gold/zone_hourly for one UTC day (replacing "
        "that day atomically) and fold the day into gold/vehicle_state. Unknown flags are Beam "
        "pipeline options.",
    )
    add_gold_flags(p)
    p.set_defaults(func=run, allow_beam_args=True)


def run(args, settings) -> int:
    return run_batch_job("gold", args, settings)
