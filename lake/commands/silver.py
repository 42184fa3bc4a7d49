"""``lake silver --hour H``: one Bronze hour -> Silver (the job the hourly DAG runs)."""
from __future__ import annotations


def register(sub, common) -> None:
    from beam_pipelines.silver.options import add_silver_flags

    p = sub.add_parser("silver", parents=[common], help="clean one Bronze hour into Silver (Beam batch)",
                       description="Parse, correct, quarantine, enrich and deduplicate one Bronze hour, then "
                       "MERGE it into silver/telemetry. Re-running an hour changes nothing. Unknown flags are "
                       "Beam pipeline options (e.g. --runner=FlinkRunner --flink_master=...).")
    add_silver_flags(p)
    p.set_defaults(func=run, allow_beam_args=True)


def run(args, settings) -> int:
    from beam_pipelines.silver.options import options_from_args
    from quality.worker import gate_process

    opts = options_from_args(args, settings)
    with gate_process(opts.gate and opts.local):  # before Beam's import: the gate's imports overlap it too
        from beam_pipelines.silver.pipeline import run_silver

        report = run_silver(opts, getattr(args, "beam_args", []))
    print(report.summary())
    return 0
