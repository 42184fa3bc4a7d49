"""The machinery behind ``lake.maintenance`` and ``lake.forget``: the lake's life cycle.

- ``audit``: the append-only JSON-lines logs under ``{LAKE_ROOT}/_audit``;
- ``checks``: the argument checks both entry points share; ``limits``: the
  default retention limits and vacuum's floor;
- ``vehicle_rows``: which rows are one vehicle's (one rule for every table);
- ``bronze_files``: Bronze and rejects files by hour, and their ingest groups;
- ``bronze_retention``: expiring whole Bronze hours without breaking the
  ingest's checkpoint;
- ``bronze_erasure``: rewriting Bronze files without one vehicle's rows;
- ``delta_upkeep``: retention deletes, compaction, vacuum and log
  checkpoints of the Delta tables;
- ``zone_recompute``: ``gold/zone_hourly`` rows recomputed from Silver.
"""
