"""One tenant's load for `make reliability`: N producers and M consumers in one
process, through the gateway, reporting exact counts as one JSON line.

Every value is ``<vcluster>:<producer>:<sequence>``, so a record from another
tenant is recognised by its prefix, and a lost or duplicated one by its key.
"""

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--vcluster", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--producers", type=int, default=5)
    p.add_argument("--consumers", type=int, default=5)
    p.add_argument("--records", type=int, default=1000, help="per producer")
    p.add_argument("--topic", default="load")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--debug-log", help="file for the consumers' librdkafka group and "
                   "metadata debug lines, read when a run fails")
    args = p.parse_args(argv)

    config = {"bootstrap.servers": args.bootstrap, "security.protocol": "SASL_PLAINTEXT",
              "sasl.mechanism": "PLAIN", "sasl.username": "sa",
              "sasl.password": args.token}
    admin = AdminClient(config)
    admin.create_topics([NewTopic(args.topic, 6, 3)])[args.topic].result(60)
    visible(admin, args.topic, 6, time.monotonic() + 60)
    known_to_every_broker(admin, args.token, args.topic, 6, time.monotonic() + 60)

    debugging = {}
    if args.debug_log:
        import logging
        logger = logging.getLogger("librdkafka")
        handler = logging.FileHandler(args.debug_log)
        handler.setFormatter(logging.Formatter("%(message)s @%(created).3f"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        debugging = {"debug": "cgrp,metadata", "logger": logger}

    expected = args.producers * args.records
    lock = threading.Lock()
    seen, duplicates, foreign, failed = set(), 0, 0, 0
    errors, assigned = [], {}  # why a consumer read nothing, when it did not
    acked = [0] * args.producers
    done = threading.Event()
    deadline = time.monotonic() + args.timeout

    def produce(index):
        producer = Producer({**config, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 5})

        def report(err, msg):
            nonlocal failed
            if err is None:
                acked[index] += 1
            else:
                with lock:
                    failed += 1
                    errors.append(f"producer {index}: {err}")
        for i in range(args.records):
            producer.produce(args.topic, key=str(i),
                             value=f"{args.vcluster}:{index}:{i}", on_delivery=report)
            producer.poll(0)
        producer.flush(args.timeout)

    def consume(index):
        nonlocal duplicates, foreign
        # A subscribed topic the group leader's metadata lacks when it assigns
        # is looked up again only at this interval (5 min by default): a broker
        # still applying the creation would leave the group nothing to read.
        def on_error(error):
            with lock:
                errors.append(f"consumer {index}: {error}")

        # A join the coordinator holds (a member it waits for) or that is lost
        # is given up after max.poll.interval.ms + 3 s: 5 minutes by default,
        # the whole run.  One minute lets the run recover; what was lost shows
        # in "errors".
        consumer = Consumer({**config, "group.id": "load-group", "error_cb": on_error,
                             "auto.offset.reset": "earliest",
                             "topic.metadata.refresh.interval.ms": 5000,
                             "max.poll.interval.ms": 60000, **debugging})
        def on_assign(_, partitions):
            with lock:
                assigned[index] = sorted(p.partition for p in partitions)

        consumer.subscribe([args.topic], on_assign=on_assign)
        while not done.is_set() and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is not None:
                    with lock:
                        errors.append(f"consumer {index}: {m.error()}")
                    continue
                value = m.value().decode()
                with lock:
                    if not value.startswith(f"{args.vcluster}:"):
                        foreign += 1
                    elif value in seen:
                        duplicates += 1
                    else:
                        seen.add(value)
                    if len(seen) >= expected:
                        done.set()
        consumer.close()

    started = time.monotonic()
    threads = [threading.Thread(target=consume, args=(i,)) for i in range(args.consumers)]
    threads += [threading.Thread(target=produce, args=(i,)) for i in range(args.producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"vcluster": args.vcluster, "expected": expected,
                      "acked": sum(acked), "failed": failed, "consumed": len(seen),
                      "duplicates": duplicates, "foreign": foreign,
                      "assigned": assigned, "errors": errors[-10:],
                      "seconds": round(time.monotonic() - started, 1)}))


def all_led(leaders, partitions):
    """A topic listed with *leaders* (one a partition) has its *partitions*,
    each with a leader."""
    return len(leaders) == partitions and all(leader >= 0 for leader in leaders)


def visible(admin, topic, partitions, deadline):
    """Wait until the brokers list *topic* with all its partitions led: its
    creation is acknowledged before every broker has applied it.  A metadata
    request that times out is asked again until the deadline (the load
    starts right after a broker came back: one took over 10 s)."""
    from confluent_kafka import KafkaException
    failed = None
    while True:
        try:
            found = admin.list_topics(topic, timeout=10).topics.get(topic)
        except KafkaException as e:  # said in the error at the deadline
            found, failed = None, e
        if found is not None and found.error is None and \
                all_led([p.leader for p in found.partitions.values()], partitions):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} not listed with {partitions} led "
                               f"partitions: {found or failed}")
        time.sleep(0.2)


def known_to_every_broker(admin, token, topic, partitions, deadline):
    """Wait until each broker (asked on its own port of the gateway) lists
    *topic* with its partitions led.  A broker still applying the creation
    answers UNKNOWN_TOPIC_OR_PARTITION for it, seconds after the others
    list it when the cluster has just recovered from a fault; a librdkafka
    group leader asking that broker (its coordinator) while it assigns gives
    every member nothing, and never assigns again while its own metadata,
    from the other brokers, does not change (consumers idle for the whole
    run; librdkafka's doing: the broker's answer reaches it unchanged)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
    from rawclient import RawClient

    request = MetadataRequest(
        topics=(MetadataRequestTopic(topic_id=None, name=topic),),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    waiting = {b.id: (b.host, b.port) for b in admin.list_topics(
        timeout=10).brokers.values()}
    said = {}
    while waiting:
        for node, (host, port) in list(waiting.items()):
            try:
                client = RawClient(host, port, timeout=10)
                try:
                    client.sasl_plain("sa", token)
                    answer = client.request(request, 12)
                finally:
                    client.close()
            except OSError as e:
                said[node] = repr(e)
                continue
            found = answer.topics[0] if answer is not None and answer.topics else None
            said[node] = found
            if found is not None and found.error_code == 0 and \
                    all_led([p.leader_id for p in found.partitions], partitions):
                del waiting[node]
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} not listed by brokers "
                               f"{sorted(waiting)}: {said}")
        if waiting:
            time.sleep(0.2)


if __name__ == "__main__":
    main()
