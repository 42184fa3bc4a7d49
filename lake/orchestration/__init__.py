"""What the Airflow DAGs do, as plain functions (the DAG files in ``dags/`` only schedule and wire).

- ``config``: the lake root and the Beam runner, from Airflow Variables or the environment;
- ``intervals``: the hour or day a run covers, from its data interval;
- ``bronze_hours``: whether a Bronze hour is ready, empty for good, or still open;
- ``beam_jobs``: the Silver and Gold jobs through Airflow's Beam provider;
- ``run_log``: what each hour and day published, kept under ``{LAKE_ROOT}/_quality/runs``;
- ``late_data``: the Gold days an hour's late rows make stale;
- ``hourly``, ``daily``: the tasks' bodies.

Airflow is imported inside the functions that need it: the package also
lives on Beam workers, which never install Airflow.
"""
