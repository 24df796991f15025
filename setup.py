"""Only the compiled parts: the walk (vkafka/protocol/_walk.c) and the
outbox's sendmsg (vkafka/proxy/_send.c); the rest is setup.cfg.

Optional: where no C compiler is found the gateway runs the same walks and
sends in Python (slower per request); tests/test_walk.py and
tests/test_outbox.py fail there, saying so."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("vkafka.protocol._walk", ["vkafka/protocol/_walk.c"], optional=True),
    Extension("vkafka.proxy._send", ["vkafka/proxy/_send.c"], optional=True),
])
