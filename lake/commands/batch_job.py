"""What ``lake silver`` and ``lake gold`` share: run the job, print its summary."""

from __future__ import annotations

import importlib

from quality.worker import gate_process


def run_batch_job(job: str, args, settings) -> int:
    """Run ``beam_pipelines.<job>`` (``silver`` or ``gold``) with the command's flags."""
    opts = importlib.import_module(f"beam_pipelines.{job}.options").options_from_args(args, settings)
    with gate_process(opts.gate and opts.local):  # before Beam's import: the gate's imports overlap it too
        run = getattr(importlib.import_module(f"beam_pipelines.{job}.pipeline"), f"run_{job}")
        report = run(opts, getattr(args, "beam_args", []))
    print(report.summary())
    return 0
