"""``python -m vkafka.tenancy.rules > docs/api-rules.md``"""

from . import markdown_table

print(markdown_table(), end="")
