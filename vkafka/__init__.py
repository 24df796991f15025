"""vkafka: a multi-tenant Kafka gateway built on Twisted."""

__version__ = "0.1.0"
