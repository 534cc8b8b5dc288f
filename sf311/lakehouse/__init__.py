"""Kafka -> bronze and silver Delta tables (Spark Structured Streaming)."""
