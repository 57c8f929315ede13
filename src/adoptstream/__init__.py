"""adoptstream: exact, real-time software-adoption metrics from Kafka usage events."""

__version__ = "0.1.0"
