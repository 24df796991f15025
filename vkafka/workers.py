# -*- test-case-name: tests.test_supervisor -*-
"""Several reactor processes behind one set of Kafka ports (``--workers N``).

With ``--workers 1`` none of this runs: ``twistd vkafka`` is today's single
process.  With more, the ``twistd vkafka`` process is a supervisor: it
serves the admin port (REST API, dashboard, ``/health``, ``/metrics``) once,
with its own state store for the admin API's writes, and runs N worker
processes (``python -m vkafka.worker INDEX N``).  Each worker is a whole
gateway without an admin port: it binds every Kafka port with
``SO_REUSEPORT`` (the kernel spreads new connections over the workers'
listening sockets by their addresses and ports), follows the state topic
with a store of its own (revocations, mappings and limits reach it as they
reach any gateway), and is a gateway of its own for the rate shares
(``filters/shares.py``) while it stands for its node in the gateway
cluster's mapping (``state/membership.py``: workers of one supervisor are
one node).

A worker's stdin and stdout are its control channel with the supervisor:
one JSON object a line, the supervisor asks (``{"id": n, "ask": "report"}``),
the worker answers (``{"id": n, "report": {...}}``: its pid, readiness,
connections and a snapshot of its metrics).  After each second's reading
the supervisor tells every worker what the others hold (``{"siblings":
{"ips": {...}, "vclusters": {...}}}``, no answer), so the connection caps
per client address and per virtual cluster hold for the gateway
(``proxy/gateway.py``, SharedCap).  Its stderr carries its log
events, one JSON object a line, which the supervisor logs as its own.  A
worker whose supervisor goes away (stdin closed, or the kernel's parent
death signal on Linux) exits.  A worker that dies is started again, after
a delay that doubles while it keeps dying early.  SIGTERM to the supervisor
is SIGTERM to every worker (each drains, ``proxy/leave.py``), then the
supervisor stops.

``/metrics`` and the dashboard add up the workers: counters and histograms
summed (a dead worker's last reading is kept, so totals do not go back),
gauges summed except those that describe the shared cluster or state
(``MAX_FAMILIES``: the same on every worker, so the largest is shown).
Asked ``?by=worker``, ``/metrics`` gives each worker's series apart instead,
under a ``worker`` label.
"""

import json
import os
import socket
import sys

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from twisted.internet.interfaces import IStreamServerEndpoint

log = Logger(namespace="vkafka.workers")

BACKLOG = 1024
ASK_TIMEOUT = 2.0
"""Seconds a worker has to answer a report request (a scrape waits as long)."""
POLL_EVERY = 1.0
"""Seconds between the supervisor's readings of every worker (health, dashboard)."""
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 10.0
"""A worker that ran this long before dying is restarted after RESTART_DELAY
again (the doubling starts over)."""
KILL_AFTER_DRAIN = 5.0
"""Seconds past the drain timeout after which a worker still stopping is killed."""

MAX_FAMILIES = frozenset({
    "vkafka_state_entries", "vkafka_state_lag_records", "vkafka_gateway_cluster_nodes",
    "vkafka_usage_topics",
    "vkafka_usage_partitions", "vkafka_usage_consumer_groups",
    "vkafka_usage_transactional_ids",
    "vkafka_usage_storage_bytes", "vkafka_rate_share_fallback"})
"""Gauges about the shared state or the cluster: every worker reads the same,
so the sum would count it N times; the largest reading is shown."""

CUMULATIVE = ("counter", "histogram", "summary")


def default_workers():
    """The number of cores, where the listeners can share ports; else 1."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return 1
    return os.cpu_count() or 1


# Listening: each worker binds the same ports.

def _reuse_socket(port, interface):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((interface, port))
    except OSError as e:
        sock.close()
        raise error.CannotListenError(interface, port, e)
    return sock


def reserve_ports(ports, interface):
    """Bind (not listen on) every port with SO_REUSEPORT: a port another
    program holds stops the supervisor's start at once, as a single gateway's
    start stops ("Address already in use"); a bound socket that does not
    listen takes no connection.  Returns the sockets (keep them open)."""
    held = []
    try:
        for port in ports:
            held.append(_reuse_socket(port, interface))
    except error.CannotListenError:
        for sock in held:
            sock.close()
        raise
    return held


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A TCP (or TLS, with *tls*) server endpoint whose listening socket has
    SO_REUSEPORT, so the workers of one supervisor all listen on the port."""

    def __init__(self, reactor, port, interface="", tls=None):
        self.reactor, self.port, self.interface, self.tls = reactor, port, interface, tls

    def listen(self, factory):
        try:
            sock = _reuse_socket(self.port, self.interface)
        except error.CannotListenError:
            return defer.fail()
        try:
            sock.listen(BACKLOG)
            sock.setblocking(False)
            if self.tls is not None:
                from twisted.protocols.tls import TLSMemoryBIOFactory
                factory = TLSMemoryBIOFactory(self.tls, False, factory)
            return defer.succeed(self.reactor.adoptStreamPort(
                sock.fileno(), socket.AF_INET, factory))
        except Exception:
            return defer.fail()
        finally:
            sock.close()  # the reactor's port holds its own copy


# Metrics: a worker's snapshot, the supervisor's sum.

POLLED_FAMILIES = frozenset({"vkafka_bytes", "vkafka_requests", "vkafka_records",
                             "vkafka_throttle_seconds", "vkafka_connections",
                             "vkafka_rate_share"})
"""Asked of every worker every second: what the dashboard reads
(admin/dashboard.py), and the counts of the clients' traffic (bytes,
requests, records), so that a worker killed takes at most a second of them
with it.  The rest only when /metrics is scraped."""


def snapshot(metrics, only=None):
    """The series of *metrics* (a ``vkafka.metrics.Metrics``, and collectors
    set as its attributes), or of the families named in *only*, JSON-able:
    the per-request tallies as their raw children (reading them costs a
    worker's reactor a third of what ``registry.collect()`` does), the
    others as ``[name, type, documentation, [[sample, labels, value]...]]``."""
    from .metrics import Tally, Timings
    out = []
    for value in list(vars(metrics).values()):
        if isinstance(value, Tally):
            if only is not None and value.name not in only:
                continue
            histogram = isinstance(value, Timings)
            out.append({"tally": value.name, "doc": value.documentation,
                        "histogram": histogram, "labels": list(value.labelnames),
                        "children": [
                            [list(k), [c.counts, c.sum] if histogram else c.value]
                            for k, c in list(value._children.items())]})
        elif hasattr(value, "collect") and value is not metrics.registry:
            if only is not None and (not hasattr(value, "describe") or not any(
                    f.name in only for f in value.describe())):
                continue
            for family in value.collect():
                out.append([family.name, family.type, family.documentation,
                            [[s.name, dict(s.labels), s.value]
                             for s in family.samples]])
    return out


def expand(taken):
    """A snapshot with every tally as the family its ``collect`` makes."""
    from .metrics import LATENCY_BUCKETS
    from prometheus_client.utils import floatToGoString
    bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]
    out = []
    for item in taken:
        if not isinstance(item, dict):
            out.append(item)
            continue
        name, names, samples = item["tally"], item["labels"], []
        if item["histogram"]:
            for values, (counts, total) in item["children"]:
                labels = dict(zip(names, values))
                running = 0
                for bound, count in zip(bounds, counts):
                    running += count
                    samples.append([f"{name}_bucket", {**labels, "le": bound}, running])
                samples.append([f"{name}_count", labels, running])
                samples.append([f"{name}_sum", labels, total])
            out.append([name, "histogram", item["doc"], samples])
        else:
            out.append([name, "counter", item["doc"],
                        [[f"{name}_total", dict(zip(names, values)), value]
                         for values, value in item["children"]]])
    return out


def merge(snapshots, cumulative_only=False):
    """The sum of several snapshots, in the same form (see the module's
    docstring for what is summed); *cumulative_only* keeps only counters and
    histograms (what a dead worker leaves to the totals)."""
    families = {}
    for taken in snapshots:
        for name, kind, documentation, samples in expand(taken):
            if cumulative_only and kind not in CUMULATIVE:
                continue
            entry = families.get(name)
            if entry is None:
                entry = families[name] = (kind, documentation, {})
            values = entry[2]
            for sample_name, labels, value in samples:
                key = (sample_name, tuple(labels.items()))
                old = values.get(key)
                if old is None:
                    values[key] = value
                elif sample_name.endswith("_created"):
                    values[key] = min(old, value)
                elif name in MAX_FAMILIES:
                    values[key] = max(old, value)
                else:
                    values[key] = old + value
    return [[name, kind, documentation,
             [[sample, dict(labels), value] for (sample, labels), value in
              values.items()]]
            for name, (kind, documentation, values) in families.items()]


def labelled(taken, worker):
    """A snapshot with a ``worker`` label on every sample (``/metrics?by=worker``)."""
    return [[name, kind, documentation,
             [[sample, {**labels, "worker": worker}, value]
              for sample, labels, value in samples]]
            for name, kind, documentation, samples in expand(taken)]


def families_of(taken):
    """A snapshot as prometheus_client metric families."""
    out = []
    for name, kind, documentation, samples in taken:
        family = Metric(name, documentation, kind)
        for sample_name, labels, value in samples:
            family.add_sample(sample_name, labels, value)
        out.append(family)
    return out


class _Family:
    """One family of a snapshot, as the dashboard reads a metric (``collect``)."""

    def __init__(self, summed, name):
        self.summed, self.name = summed, name

    def collect(self):
        return families_of([f for f in self.summed.merged() if f[0] == self.name])


class SummedMetrics:
    """The workers' metrics added up, read like ``vkafka.metrics.Metrics`` by
    the dashboard (``bytes``, ``requests``... each with ``collect``) and by
    ``/metrics`` (``text``).  *merged*: ``() -> snapshot``."""

    def __init__(self, merged):
        self.merged = merged
        for attribute, name in (("bytes", "vkafka_bytes"),
                                ("requests", "vkafka_requests"),
                                ("throttled", "vkafka_throttle_seconds"),
                                ("connections", "vkafka_connections"),
                                ("rate_share", "vkafka_rate_share")):
            setattr(self, attribute, _Family(self, name))

    def collect(self):
        return families_of(self.merged())

    def text(self):
        return generate_latest(self)


# The control channel: newline-delimited JSON.

class Lines:
    """Splits a byte stream into lines."""

    def __init__(self, on_line):
        self.buffer = b""
        self.on_line = on_line

    def feed(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.on_line(line)


class WorkerControl(protocol.Protocol):
    """The worker's end of the control channel (its stdin and stdout, through
    ``twisted.internet.stdio.StandardIO``).  *report*: ``() -> dict``;
    *lost*: called when the supervisor is gone."""

    def __init__(self, report, lost, siblings=None):
        self.report, self.lost, self.siblings = report, lost, siblings
        """*report*: ``(families or None) -> dict``, with the metrics of those
        families only (None: all); *siblings*: ``(ips, vclusters)``, what
        the other workers hold (a message without an answer)."""
        self.lines = Lines(self.line)

    def dataReceived(self, data):
        self.lines.feed(data)

    def line(self, raw):
        try:
            message = json.loads(raw)
            if "siblings" in message:  # told, not asked: no answer
                if self.siblings is not None:
                    held = message["siblings"]
                    self.siblings(held.get("ips", {}), held.get("vclusters", {}))
                return
            answer = {"id": message["id"]}
            if message.get("ask") == "report":
                only = message.get("families")
                answer["report"] = self.report(None if only is None else set(only))
            else:
                answer["error"] = f"unknown request {message.get('ask')!r}"
        except Exception as e:  # never let a bad line stop the worker
            log.failure("control request failed")
            answer = {"id": None, "error": str(e)}
        self.transport.write(json.dumps(answer).encode() + b"\n")

    def connectionLost(self, reason):
        self.lost()


def worker_log_observer(stream):
    """A log observer writing each event as a JSON line to *stream* (the
    worker's stderr), for the supervisor to log."""

    def observe(event):
        text = formatEvent(event)
        if "log_failure" in event:
            text = f"{text}\n{event['log_failure'].getTraceback()}"
        level = event.get("log_level", LogLevel.info)
        stream.write(json.dumps({"level": level.name,
                                 "ns": event.get("log_namespace", "vkafka"),
                                 "text": text}) + "\n")
        stream.flush()
    return observe


class WorkerProcess(protocol.ProcessProtocol):
    """The supervisor's end of one worker process."""

    def __init__(self, supervisor, index, started):
        self.supervisor, self.index, self.started = supervisor, index, started
        self.pid = None
        self.ended = defer.Deferred()
        self.latest = None
        """The worker's last report (None before its first)."""
        self.families = {}
        """Metric family name -> its latest reading from this worker (expanded;
        the dashboard's every second, the rest at each scrape)."""
        self._asked = {}
        self._next = 0
        self._out = Lines(self._answer)
        self._err = Lines(self._logged)

    def connectionMade(self):
        self.pid = self.transport.pid

    def ask(self, only=None, timeout=ASK_TIMEOUT):
        """The worker's report with the metric families *only* (None: all), or
        None after *timeout* seconds."""
        self._next += 1
        ident = self._next
        d = defer.Deferred()
        call = self.supervisor.clock.callLater(timeout, self._expire, ident)
        self._asked[ident] = (d, call)
        message = {"id": ident, "ask": "report",
                   "families": None if only is None else sorted(only)}
        try:
            self.transport.write(json.dumps(message).encode() + b"\n")
        except Exception:
            self._expire(ident)
        return d

    def _expire(self, ident):
        d, call = self._asked.pop(ident, (None, None))
        if call is not None and call.active():
            call.cancel()
        if d is not None:
            d.callback(None)

    def _answer(self, raw):
        try:
            message = json.loads(raw)
        except ValueError:
            log.warn("worker {index}: unreadable control line {line!r}",
                     index=self.index, line=raw[:200])
            return
        d, call = self._asked.pop(message.get("id"), (None, None))
        if d is None:
            return
        call.cancel()
        report = message.get("report")
        if report is not None:
            self.latest = report
            read = {f[0]: f for f in expand(report.pop("metrics", []))}
            if report.get("families") is None:
                self.families = read
            else:
                self.families.update(read)
            self.supervisor.generation += 1
        d.callback(report)

    def _logged(self, raw):
        try:
            event = json.loads(raw)
            level = LogLevel.levelWithName(event["level"])
            text, namespace = event["text"], event["ns"]
        except (ValueError, KeyError, TypeError, Exception):
            level, text, namespace = LogLevel.warn, raw.decode(errors="replace"), \
                "vkafka.worker"
        Logger(namespace=namespace).emit(level, "worker {worker} (pid {pid}): {text}",
                                         worker=self.index, pid=self.pid, text=text)

    def outReceived(self, data):
        self._out.feed(data)

    def errReceived(self, data):
        self._err.feed(data)

    def processEnded(self, reason):
        for ident in list(self._asked):
            self._expire(ident)
        self.supervisor.worker_ended(self, reason)
        self.ended.callback(None)


class WorkerSupervisor(service.Service):
    """Keeps *count* workers running: ``spawn(index, process_protocol)``
    starts one (``reactor.spawnProcess`` in production), *clock* times the
    restarts and the polls."""

    def __init__(self, count, spawn, clock, stop_timeout=15.0):
        self.count, self.spawn, self.clock = count, spawn, clock
        self.stop_timeout = stop_timeout
        self.workers = {}
        """index -> its current WorkerProcess."""
        self.failures = dict.fromkeys(range(count), 0)
        self.restarts = dict.fromkeys(range(count), 0)
        self.retired = []
        """The counters and histograms of workers that died: kept in the sums."""
        self.poll_families = POLLED_FAMILIES
        """The metric families read every second; /metrics reads them all."""
        self.generation = 0
        """Counts the readings, so sums are made once per reading."""
        self._merged = (None, [])
        self._pending = {}
        self._poll = None

    # starting, restarting

    def startService(self):
        super().startService()
        for index in range(self.count):
            self._start(index)
        from twisted.internet.task import LoopingCall
        self._poll = LoopingCall(self._reading)  # not waited for
        self._poll.clock = self.clock
        self._poll.start(POLL_EVERY, now=False)

    def _start(self, index):
        self._pending.pop(index, None)
        worker = WorkerProcess(self, index, self.clock.seconds())
        self.workers[index] = worker
        try:
            self.spawn(index, worker)
        except Exception:
            log.failure("worker {index}: cannot start", index=index)
            self.workers.pop(index, None)
            self._schedule(index, 0.0)
            return
        log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)
        if self.restarts[index]:  # what the others hold, before its first reading
            self.tell_siblings(only=worker)

    def worker_ended(self, worker, reason):
        index = worker.index
        if self.workers.get(index) is worker:
            del self.workers[index]
        if worker.families:
            self.retired = merge([self.retired, list(worker.families.values())],
                                 cumulative_only=True)
            self.generation += 1
        if not self.running:
            log.info("worker {index} (pid {pid}) stopped: {why}", index=index,
                     pid=worker.pid, why=reason.getErrorMessage())
            return
        ran = self.clock.seconds() - worker.started
        self._schedule(index, ran)
        log.warn("worker {index} (pid {pid}) died after {ran:.1f}s ({why}); "
                 "restarting it in {delay:.1f}s", index=index, pid=worker.pid,
                 ran=ran, why=reason.getErrorMessage(),
                 delay=self._pending[index].getTime() - self.clock.seconds())

    def _schedule(self, index, ran):
        if ran >= STABLE_AFTER:
            self.failures[index] = 0
        delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** self.failures[index])
        self.failures[index] += 1
        self.restarts[index] += 1
        self._pending[index] = self.clock.callLater(delay, self._start, index)

    # stopping

    def stopService(self):
        super().stopService()
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        workers = list(self.workers.values())
        for worker in workers:
            _signal(worker, "TERM")
        if not workers:
            return defer.succeed(None)
        done = defer.DeferredList([w.ended for w in workers])
        kill = self.clock.callLater(self.stop_timeout, self._kill, workers)
        done.addBoth(lambda result: kill.active() and kill.cancel())
        return done

    def _kill(self, workers):
        for worker in workers:
            if not worker.ended.called:
                log.warn("worker {index} (pid {pid}) still stopping: killed",
                         index=worker.index, pid=worker.pid)
                _signal(worker, "KILL")

    # reading them

    def _reading(self):
        """Every second: read every worker, then tell each what the others
        hold (the connection caps hold for the gateway, Gateway.siblings)."""
        d = self.reports(self.poll_families)
        d.addCallback(lambda _: self.tell_siblings())
        d.addErrback(lambda f: log.failure("reading the workers failed", f))

    def tell_siblings(self, only=None):
        """Send each worker (or only the one *only*) ``{"siblings": {"ips":
        {...}, "vclusters": {...}}}``: the connections the other workers held
        at their last reports, per client address (those they reported) and
        per virtual cluster.  A worker that did not answer counts with its
        last report."""
        if self.count < 2:
            return
        held = {}
        for index, worker in self.workers.items():
            report = worker.latest
            if report is not None and report.get("pid") == worker.pid:
                held[index] = (report.get("ips") or {}, report.get("vclusters") or {})
        totals = ({}, {})
        for ips, vclusters in held.values():
            for total, own in zip(totals, (ips, vclusters)):
                for key, n in own.items():
                    total[key] = total.get(key, 0) + n
        for index, worker in list(self.workers.items()):
            if only is not None and worker is not only:
                continue
            own = held.get(index, ({}, {}))
            ips, vclusters = ({key: n - mine.get(key, 0) for key, n in total.items()
                               if n > mine.get(key, 0)}
                              for total, mine in zip(totals, own))
            message = {"siblings": {"ips": ips, "vclusters": vclusters}}
            try:
                worker.transport.write(json.dumps(message).encode() + b"\n")
            except Exception:
                pass  # a worker gone: its end is logged where it ends

    def reports(self, only=None):
        """``{index: report or None}`` of every running worker, asked now, with
        the metric families *only* (None: all)."""
        workers = list(self.workers.values())
        d = defer.gatherResults([w.ask(only) for w in workers])
        d.addCallback(lambda answers: {w.index: a for w, a in zip(workers, answers)})
        return d

    def merged(self):
        """The metrics of every worker (their last readings) and of the dead."""
        generation, merged = self._merged
        if generation != self.generation:
            merged = merge([self.retired] + [list(w.families.values())
                                             for w in self.workers.values()])
            self._merged = (self.generation, merged)
        return merged

    def each(self):
        """``[(label, snapshot)]``: every running worker's last reading under
        its index, and what the dead left under ``gone``."""
        out = [(str(index), list(worker.families.values()))
               for index, worker in sorted(self.workers.items())]
        if self.retired:
            out.append(("gone", self.retired))
        return out

    def details(self, names=False):
        """What ``/health`` says of the workers: state and connection counts,
        no tenant names (it needs no credentials); with *names*, also each
        worker's connections per virtual cluster (``GET /admin/workers``)."""
        out = []
        for index in range(self.count):
            worker = self.workers.get(index)
            report = None if worker is None else worker.latest
            entry = {"index": index, "pid": None if worker is None else worker.pid,
                     "restarts": self.restarts[index], "ready": False}
            if report is not None and report.get("pid") == worker.pid:
                entry.update(ready=report.get("reason") is None,
                             connections=report.get("connections", 0))
                if names:
                    entry["vclusters"] = report.get("vclusters", {})
                if report.get("reason") is not None:
                    entry["reason"] = report["reason"]
            out.append(entry)
        return out


def _signal(worker, name):
    try:
        worker.transport.signalProcess(name)
    except (error.ProcessExitedAlready, OSError, AttributeError):
        pass


class SummedMetricsResource(Resource):
    """``/metrics`` of the supervisor: every worker asked now, then summed."""

    isLeaf = True

    def __init__(self, supervisor, own=None, refresh=None):
        super().__init__()
        self.supervisor = supervisor
        self.own = own
        """The supervisor's own Metrics (its state store, audit log...)."""
        self.refresh = refresh
        self.summed = SummedMetrics(self.merged)
        self.each = SummedMetrics(self.by_worker)

    def merged(self):
        parts = [self.supervisor.merged()]
        if self.own is not None:
            parts.append(snapshot(self.own))
        return merge(parts)

    def by_worker(self):
        """The same series, each with the ``worker`` that counted it: they
        add up to ``merged``'s."""
        parts = [labelled(taken, label) for label, taken in self.supervisor.each()]
        if self.own is not None:
            parts.append(labelled(snapshot(self.own), "supervisor"))
        return merge(parts)

    def render_GET(self, request):
        from .metrics import TEXT_FORMAT, by_worker, refused
        each = by_worker(request)
        if each is None:
            return refused(request)
        if self.refresh is not None:
            self.refresh()
        d = self.supervisor.reports()
        gone = []
        request.notifyFinish().addBoth(gone.append)

        def render(_):
            if gone:
                return
            request.setHeader(b"Content-Type", TEXT_FORMAT)
            request.write((self.each if each else self.summed).text())
            request.finish()

        def failed(f):
            log.failure("/metrics failed", f)
            if not gone:
                request.setResponseCode(500)
                request.finish()
        d.addCallback(render)
        d.addErrback(failed)
        return NOT_DONE_YET


def spawner(reactor, env, argv_prefix=None, count=1):
    """``spawn(index, protocol)`` for WorkerSupervisor: ``python -m
    vkafka.worker INDEX COUNT`` with *env* (the settings, resolved)."""
    prefix = argv_prefix or [sys.executable, "-m", "vkafka.worker"]

    def spawn(index, process_protocol):
        return reactor.spawnProcess(process_protocol, prefix[0],
                                    [*prefix, str(index), str(count)], env=env,
                                    childFDs={0: "w", 1: "r", 2: "r"})
    return spawn


def parent_death_signal():
    """On Linux, have the kernel SIGKILL this process when its parent dies
    (a supervisor killed with SIGKILL leaves no worker behind)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass


__all__ = ["WorkerSupervisor", "WorkerProcess", "WorkerControl", "ReusePortEndpoint",
           "SummedMetrics", "SummedMetricsResource", "merge", "snapshot",
           "reserve_ports", "default_workers", "spawner"]
