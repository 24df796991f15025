"""``python -m vkafka.worker INDEX COUNT``: one worker of a ``--workers N`` gateway.

Started by the supervisor (vkafka/workers.py), never by hand: the settings
come from the environment the supervisor gives it, stdin and stdout are the
control channel and stderr carries the log, one JSON event a line.
"""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    index = int(argv[0])
    count = int(argv[1]) if len(argv) > 1 else 1
    from .workers import parent_death_signal, worker_log_observer
    parent_death_signal()
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO
    from twisted.logger import Logger, globalLogBeginner
    from twisted.python import usage

    stream = sys.stderr
    globalLogBeginner.beginLoggingTo([worker_log_observer(stream)],
                                     redirectStandardIO=True)
    log = Logger(namespace="vkafka.worker")
    from .tap import Options, makeService
    from .workers import WorkerControl

    config = Options()
    try:
        config.parseOptions([])
    except usage.UsageError as e:
        log.critical("settings: {error}", error=str(e))
        return 2
    top = makeService(config, reactor, worker=index)
    gateway = top.gateway
    split_over(gateway, count)

    def lost():
        if reactor.running:
            log.warn("supervisor gone: stopping")
            reactor.stop()
    StandardIO(WorkerControl(top.report, lost, gateway.siblings), reactor=reactor)
    try:
        top.startService()
    except Exception:
        log.failure("worker {index} cannot start", index=index)
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    return 0


def split_over(gateway, count):
    """*gateway* as one of *count* workers: its connection caps hold for all
    of them, its budgets of broker state (fetch sessions too) and of state
    records (ACLs, topics made by rule) are split over them, and the work a
    tenant has the brokers do is charged *count* times (the brokers are the
    same for every worker: filters/throttle.LoopShare)."""
    gateway.workers = count
    for budget in (gateway.members, gateway.producer_ids, gateway.acl_writes,
                   gateway.rule_writes, gateway.loop_share):
        if budget is not None:
            budget.processes = count


if __name__ == "__main__":
    sys.exit(main())
