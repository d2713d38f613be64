"""Mosaic Match: opt-in matching cycles on Kafka."""

__version__ = "0.1.0"
