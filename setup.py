"""Only the compiled walk (vkafka/protocol/_walk.c); the rest is setup.cfg.

Optional: where no C compiler is found the gateway runs the same walks in
Python (slower per request); tests/test_walk.py fails there, saying so."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("vkafka.protocol._walk", ["vkafka/protocol/_walk.c"],
                             optional=True)])
