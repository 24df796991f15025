"""Kafka wire protocol: framing, headers and the kio codec.

Pure bytes in, bytes out: nothing in this package does I/O, so every piece
can be unit-tested with byte strings.
"""
