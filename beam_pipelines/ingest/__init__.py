"""Streaming ingest: Kafka -> Bronze Parquet, exactly once.

``ReadKafkaPartitions | ValidateTelemetry | WriteBronze``.
"""
