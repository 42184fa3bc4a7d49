"""Local operations: the embedded Kafka broker (``broker``) and a local Airflow (``airflow``)."""
