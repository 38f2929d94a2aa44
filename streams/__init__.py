"""retrostitch: retroactive user recognition (identity stitching) on Kafka."""

__version__ = "0.1.0"
