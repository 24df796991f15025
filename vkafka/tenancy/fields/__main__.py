# -*- test-case-name: tests.test_fields -*-
"""``python -m vkafka.tenancy.fields``: what a new kio leaves unclassified."""

from . import main

if __name__ == "__main__":
    main()
