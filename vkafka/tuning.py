# -*- test-case-name: tests.test_tuning -*-
"""Process tuning: every setting that changes the whole process, in one place.

Each was measured on the gateway's hot paths (figures in the docstrings and
docs/performance.md).  ``apply`` is called by the twistd service when
``--tuning`` is on (the default for ``twistd vkafka``); tests build services
with it off, so no later test in the same process runs with them.  This is
also the only module that touches Twisted's private attributes; ``check``
says clearly when the installed Twisted is not the one it was written for.
"""

import ctypes
import ctypes.util
import gc
import sys
from contextlib import contextmanager

from twisted.internet import tcp
from twisted.internet.epollreactor import EPOLLIN, EPollReactor
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.logger import Logger
from twisted.python.failure import Failure

try:
    from . import _dispatch
except ImportError:  # no C compiler where it was installed: the Python loop
    _dispatch = None

WRITTEN_FOR = "Twisted 26.10"
"""The Twisted whose private attributes ``lean_dispatch`` and ``sendable`` use."""

READ_SIZE = 1 << 20
"""Bytes asked for per socket read (Twisted's default is 64 KiB): a Fetch
response of several MiB then costs a few reads, not dozens."""

SWITCH_INTERVAL = 0.001
"""Seconds a thread (the listing decode, bcrypt) holds the GIL before the
reactor gets it back: 1 ms instead of Python's 5 ms."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_PLAIN_TCP = (tcp.Server, tcp.Client)
_log = Logger(namespace="vkafka.dispatch")

REACTOR_PRIVATE = ("_doReadOrWrite", "_disconnectSelectable", "_selectables", "_poller",
                   "_started", "_justStopped", "_newTimedCalls", "_pendingTimedCalls",
                   "threadCallQueue")
CONNECTION_PRIVATE = ("_tempDataLen", "dataBuffer", "_writeDisconnected", "offset")
"""The private attributes used here: of an EPollReactor, of a tcp.Connection."""

SENDABLE_READS = ("TLS", "connected", "disconnecting") + CONNECTION_PRIVATE
"""What ``sendable`` (and its compiled twin) reads of a transport: the
produce lane's route watch (proxy/_lane.c) watches these, so the Twisted
names stay listed here alone."""


class TwistedMismatch(RuntimeError):
    """The installed Twisted lacks an attribute this module relies on."""


def check(reactor=None, connection=None):
    """Raise TwistedMismatch naming what *reactor* (an EPollReactor) or
    *connection* (a tcp.Connection) lacks: the lean dispatch and the direct
    socket writes would otherwise fail at the first event."""
    missing = [f"{type(sample).__name__}.{name}"
               for sample, names in ((reactor, REACTOR_PRIVATE),
                                     (connection, CONNECTION_PRIVATE))
               if sample is not None for name in names if not hasattr(sample, name)]
    if missing:
        raise TwistedMismatch(
            f"vkafka.tuning was written for {WRITTEN_FOR}; this Twisted has no "
            f"{', '.join(missing)}: run with --tuning=false, or update vkafka/tuning.py")


def _sample_connection():
    """A tcp.Connection over a socket pair, to check, then closed."""
    import socket
    ours, theirs = socket.socketpair()
    try:
        return tcp.Connection(ours, None)
    finally:
        ours.close()
        theirs.close()


def apply(reactor):
    """Apply every setting; return the names of those that took effect."""
    check(connection=_sample_connection())
    applied = []
    sys.setswitchinterval(SWITCH_INTERVAL)
    applied.append("switch interval")
    if tune_allocator():
        applied.append("allocator")
    if lean_dispatch(reactor):
        applied.append("lean dispatch")
    return applied


def tune_allocator(read_size=READ_SIZE):
    """Keep read buffers on glibc's heap; True if it applied (glibc only).

    Each read allocates a READ_SIZE buffer and shrinks it to what arrived.  At
    that size glibc maps fresh pages for it and unmaps them after: an mmap,
    page faults, an mremap and a munmap per read, about 20 us, most of the
    gateway's system time on the Produce path.  Raising the mmap threshold
    above READ_SIZE, and the trim threshold with it so freed heap is not given
    back after every read, makes a read cost what a 64 KiB one does.  The price:
    up to 32 MiB of freed heap kept for reuse."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 4 * read_size)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, 32 * read_size))


def lean_dispatch(reactor, compiled=True):
    """Give *reactor* Twisted's epoll loop without its per-event logging
    context; True if it is an EPollReactor (and now has it), False if left alone.

    For every ready socket ``EPollReactor.doPoll`` calls ``log.callWithLogger``,
    which builds a context dict and pushes it on the legacy logging stack around
    the read or write: a third of a bare round trip through the reactor (a
    loopback ping-pong: ~15 us per exchange with it, ~11 without) and about a
    tenth of the gateway's CPU per GB produced.  ``_doReadOrWrite`` still does
    all the work and its own error handling; what escapes it is logged here and
    the loop goes on.  The one difference: Twisted's own legacy log events
    during a read or write carry no ``system`` prefix naming the connection
    (vkafka's own events name the peer themselves).  Applied to the running
    reactor instance (twistd has installed it by then), only an exact
    EPollReactor.

    A plain read (the event exactly EPOLLIN, on a ``tcp.Server`` or
    ``tcp.Client`` whose ``doRead`` is the class's: not one still connecting
    or aborted, which replace it) is done here as ``tcp.Connection.doRead``
    does it: recv, then the protocol's ``dataReceived``; nothing read, a
    reset, an exception from the protocol disconnect it as
    ``_doReadOrWrite`` would (the exception logged).  That skips four Python
    calls a read (``_doReadOrWrite``, ``fileno``, ``doRead``,
    ``_dataReceived``): 8-13% of the CPU per Produce request in live A/Bs
    (sessions 35 and 36, docs/performance.md).  Every other event takes
    Twisted's path.

    *compiled* (the default, where ``vkafka/_dispatch.c`` is built): the
    same loop in C, which also waits and serves again while the reactor
    needs nothing of its ``mainLoop`` (no call from a thread queued, no
    timed call new or due, not stopping, the caller's timeout not passed):
    a request's two wake-ups (its read, its answer's) then cost no Python
    but the protocols'.  A loopback ping-pong on one reactor: 40.3 k
    instructions an exchange in the Python loop, 16.6 k in C
    (docs/performance.md, session 42).  The Python loop below is the
    reference, and what runs where the C is not built."""
    if type(reactor) is not EPollReactor:
        return False
    check(reactor=reactor)
    handle, disconnect = reactor._doReadOrWrite, reactor._disconnectSelectable
    plain = _PLAIN_TCP

    def escaped(selectable, error):
        """*error* escaped Twisted's or the plain read's own handling: logged,
        the loop goes on (a KeyboardInterrupt ends it)."""
        if isinstance(error, KeyboardInterrupt):
            raise error
        _log.failure("unhandled error dispatching an event on {selectable!r}",
                     Failure(error, type(error), error.__traceback__),
                     selectable=selectable)

    def one(selectable, fd, event):
        """An event the plain read does not take: Twisted's own handling."""
        try:
            handle(selectable, fd, event)
        except BaseException as error:
            escaped(selectable, error)

    def failed(selectable, error):
        """The protocol raised *error* in dataReceived: logged, disconnected."""
        _log.failure("unhandled error reading on {selectable!r}",
                     Failure(error, type(error), error.__traceback__),
                     selectable=selectable)
        disconnect(selectable, error, True)

    if _dispatch is not None and compiled:
        config = (reactor._poller, reactor._selectables, plain, one, disconnect,
                  failed, escaped, CONNECTION_DONE, CONNECTION_LOST, reactor)
        poll = _dispatch.poll

        def doPoll(timeout):
            poll(config, timeout)

        reactor.doPoll = reactor.doIteration = doPoll
        return True

    def doPoll(timeout):
        if timeout is None:
            timeout = -1
        selectables = reactor._selectables
        try:
            events = reactor._poller.poll(timeout, len(selectables))
        except InterruptedError:
            return
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == EPOLLIN and type(selectable) in plain \
                    and "doRead" not in selectable.__dict__:
                try:
                    data = selectable.socket.recv(selectable.bufferSize)
                except BlockingIOError:
                    continue
                except OSError:
                    why = CONNECTION_LOST
                except BaseException as error:
                    escaped(selectable, error)
                    continue
                else:
                    why = None if data else CONNECTION_DONE
                try:
                    if why is not None:
                        disconnect(selectable, why, True)
                    else:
                        try:
                            selectable.protocol.dataReceived(data)
                        except BaseException as error:
                            failed(selectable, error)
                except BaseException as error:
                    escaped(selectable, error)
                continue
            one(selectable, fd, event)

    reactor.doPoll = reactor.doIteration = doPoll
    return True


def called_directly(protocol):
    """Have the reactor call *protocol* itself on its plain TCP transport,
    not the wrapper a client endpoint put around it, which only passes each
    call on: one Python call less for every read of a broker's answers
    (~4,600 a GB consumed).  Other transports (TLS, the backend SASL
    login's wrapper) keep theirs."""
    transport = protocol.transport
    if type(transport) in _PLAIN_TCP and \
            getattr(transport, "protocol", protocol) is not protocol:
        transport.protocol = protocol


def sendable(transport):
    """A plain TCP socket, open, with nothing queued in Twisted ahead of us: the
    gateway may then send on the socket itself (proxy/outbox.py) instead of
    waiting a reactor turn, keeping the order of what Twisted queued."""
    return type(transport) in _PLAIN_TCP and not transport.TLS \
        and transport.connected and not transport.disconnecting \
        and not transport._writeDisconnected and not transport._tempDataLen \
        and transport.offset == len(transport.dataBuffer)


def compiled_sendable():
    """(``sendable`` compiled, the transport types it takes) for compiled
    callers (proxy/_lane.c), or None where vkafka/_dispatch.c is not built;
    tests/test_dispatch.py holds it to ``sendable``."""
    return None if _dispatch is None else (_dispatch.sendable, _PLAIN_TCP)


def unsent(transport):
    """Bytes written to *transport* that Twisted has not sent yet (over TLS,
    those of the TCP transport beneath; 0 for a transport with no such
    buffer): the tenant budgets count them (proxy/buffers.py)."""
    for handle in (transport, getattr(transport, "transport", None)):
        buffer = getattr(handle, "dataBuffer", None)
        if buffer is not None:
            return len(buffer) - getattr(handle, "offset", 0) + handle._tempDataLen
    return 0


@contextmanager
def collector_held():
    """Python's cyclic collector held off for the block (then as it was).

    kio builds some ten objects per topic when an all-topics listing is
    decoded, nearly all freed by reference counting at once; at 10,000 topics
    that burst triggered a full collection of the whole heap, 28-47 ms during
    which the decode thread held the GIL and every connection waited."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
