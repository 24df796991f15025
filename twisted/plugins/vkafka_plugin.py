"""The ``twistd vkafka`` dropin; everything heavy is imported by vkafka.tap."""

from twisted.application.service import ServiceMaker

vkafka = ServiceMaker("vkafka", "vkafka.tap", "A multi-tenant Kafka gateway.", "vkafka")
