"""A local Airflow for the lake, in four parts: ``env`` (home, DAGs folder, executable),
``config`` (ports, login, database), ``health`` (the api-server's report), ``run_files``
(pid files and logs), and ``stack`` (up, down, status) over them; ``runs`` runs
``airflow`` commands (``db migrate``, ``dags test``) against that home."""
