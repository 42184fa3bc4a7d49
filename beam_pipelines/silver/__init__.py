"""Silver: one Bronze hour -> ``silver/telemetry`` (Delta MERGE) and ``silver/quarantine``.

``ReadBronzeHour | ParseTelemetry | ShardByVehicle | CleanTelemetry | CommitSilver``.
"""
