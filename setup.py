"""Only the compiled parts: the walk (vkafka/protocol/_walk.c), the
outbox's sendmsg (vkafka/proxy/_send.c), the produce lane's bookkeeping
(vkafka/proxy/_lane.c) and the reactor's per-event loop
(vkafka/_dispatch.c); the rest is setup.cfg.

Optional: where no C compiler is found the gateway runs the same walks,
sends, bookkeeping and loop in Python (slower per request);
tests/test_walk.py, tests/test_streaming.py, tests/test_lane.py and
tests/test_dispatch.py fail there, saying so."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("vkafka.protocol._walk", ["vkafka/protocol/_walk.c"], optional=True),
    Extension("vkafka.proxy._send", ["vkafka/proxy/_send.c"], optional=True),
    Extension("vkafka.proxy._lane", ["vkafka/proxy/_lane.c"],
              depends=["vkafka/proxy/_watch.h"], optional=True),
    Extension("vkafka._dispatch", ["vkafka/_dispatch.c"], optional=True),
])
