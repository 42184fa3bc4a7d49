"""The lake's life cycle: ``maintenance`` (``lake maintain``) and ``forget`` (``lake forget``).

- ``maintenance``: retention, compaction and vacuum of every table;
- ``forget``: erasing one vehicle from every layer;
- ``audit``: the append-only JSON-lines logs under ``{LAKE_ROOT}/_audit``;
- ``checks``: the argument checks both entry points share; ``limits``: the
  default retention limits and vacuum's floor;
- ``vehicle_rows``: which rows are one vehicle's (one rule for every table);
- ``bronze_retention``: expiring whole Bronze hours without breaking the
  ingest's checkpoint (Bronze's layout: ``lake_core.bronze.layout``);
- ``bronze_erasure``: rewriting Bronze files without one vehicle's rows;
- ``delta_maintenance``: retention deletes, compaction, vacuum and log
  checkpoints of the Delta tables;
- ``zone_recompute``: ``gold/zone_hourly`` rows recomputed from Silver.
"""
