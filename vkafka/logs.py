"""Structured logs: JSON lines through twisted.logger.

    twistd --logger=vkafka.logs.json_observer -n vkafka ...

writes one JSON object per event to stdout (or ``VKAFKA_LOG_FILE``), with the
event's fields (``log_level``, ``log_namespace``, ``log_format`` and its
values), ready for a log shipper.  Admin actions are events with
``audit: true`` (see vkafka/admin/app.py).
"""

import os
import sys

from twisted.logger import jsonFileLogObserver


def json_observer():
    path = os.environ.get("VKAFKA_LOG_FILE")
    stream = open(path, "a") if path else sys.stdout
    return jsonFileLogObserver(stream, recordSeparator="")
