# -*- test-case-name: tests.test_rules -*-
"""The hot path: Produce and Fetch, rewritten by slicing where possible.

Requests are renamed without decoding (protocol/produce.py, fastpath.py);
fetch sessions are bound to the connection that made them (sessions.py);
v13+ responses pass as bytes when every topic id in them is the tenant's."""

import datetime
import struct
import uuid
from dataclasses import replace

from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.static.constants import EntityType
from kio.static.primitive import i32, i32Timedelta, i64


from ...protocol.codec import decode_request, encode_body, encode_request
from ...protocol.framing import Malformed
from ...protocol.fastpath import fetch_request_walk, rename_fields
from ...protocol.headers import read_string, write_string
from ...protocol.batches import MESSAGE_TOO_LARGE, BatchError, without_producer
from ...protocol.produce import (
    inflated, rewrite_produce, rewrite_records, transactional_partitions)
from ..naming import TOPIC, TRANSACTION, HotNames
from ..sessions import (
    FETCH_SESSION_ID_NOT_FOUND, FINAL_EPOCH, INITIAL_EPOCH, FetchSessions)
from ..context import ZERO_UUID, Rejected
from ..walker import rewrite_request as walk_request
from ..walker import rewrite_response as walk_response
from .addresses import node_endpoints
from .common import NO_THROTTLE, TXN_PARTITION_WORK, broker_work

_SESSION = struct.Struct(">ii")  # a Fetch request's session id and epoch


def passes_as_bytes(scan, version, rctx):
    """Fetch and Produce v13+ name topics by id only: unless a decoy id must be
    restored, node_endpoints rewritten or an error message read, the response
    goes back as it came (passthrough mode: any version without them)."""
    if rctx is not None and (version < 13 or rctx.decoy_ids):
        return False
    if rctx is not None and not all(map(rctx.owns_topic_id, scan.topic_ids)):
        return False  # decoded: the walk drops topics that are not the tenant's
    return scan.tags_empty  # before v12 (not flexible) no node_endpoints at all


def produce_response_names(frame, offset, version, scan, rctx):
    """Produce before v13 names topics.  With no decoy in the request and nothing
    but names to change (no node_endpoints, error message or record error), the
    names are swapped by slicing at the places the scan noted: what the walker
    would do, without kio's decode and re-encode.  A name that is not the
    tenant's: decoded (and dropped)."""
    if version >= 13 or not scan.tags_empty:
        return None
    return _names_sliced(frame, scan, rctx, version >= 9)


def fetch_response_names(frame, offset, version, scan, rctx):
    """Fetch before v13 (kafkajs, kafka-python, aiokafka, Sarama) names topics,
    and nothing else in its answer names anything (v12's partition tags are
    leader epochs and ids): the names are swapped by slicing, as for Produce.
    Decoded, the records were copied twice and the answer encoded in Python:
    one naming 24,000 topics held the loop for half a second.  With the
    virtual cluster's ACLs on it is decoded, so the walk drops topics the
    principal may not see (a fetch session's, named before a change)."""
    if version >= 13 or not scan.tags_empty or rctx.rights is not None:
        return None
    return _names_sliced(frame, scan, rctx, version >= 12)


def _names_sliced(frame, scan, rctx, flexible):
    """The answer with its topic names (at ``scan.names``) made logical, or
    None to decode it: a decoy to explain, or a name not the tenant's."""
    if rctx.decoy_names or rctx.decoy_ids:
        return None
    namespace = rctx.namespace
    known = namespace.memo().to_client[flexible]

    def field(raw):
        found = known.get(raw)
        if found is None:
            name, _ = read_string(raw, 0, flexible)
            logical = None if name is None else namespace.logical(TOPIC, name)
            if logical is None:
                return None
            found = write_string(logical, flexible)
            if len(known) < HotNames.LIMIT:
                known[raw] = found
        return found
    return rename_fields(frame, scan.names, field)


def produce_frame(services, rctx, frame, body_offset, version):
    """Produce: topics and transactional id renamed by slicing; records untouched
    (but for writable mappings' producer ids, ``_shared_without_producers``)
    (acks and the record count, read on the way, are left in the context).
    Without ACLs a name or topic id decided once (nothing refused, nothing
    concentrated) is not decided again while the mappings stay as they are
    (``Namespace.memo``)."""
    flexible = version >= 9
    memo = rctx.namespace.memo() if rctx.rights is None else None
    known = None if memo is None else memo.to_broker[flexible]

    def topic_field(raw):
        found = None if known is None else known.get(raw)
        if found is None:
            name, _ = read_string(raw, 0, flexible)
            if name is None:  # kio's decode refuses it too; no rule meets a None
                raise Malformed("produce request: a null topic name")
            refusals = len(rctx.decoy_names)
            physical = rctx.to_physical(TOPIC, name)
            found = write_string(physical, flexible)
            if known is not None and len(rctx.decoy_names) == refusals \
                    and physical not in rctx.concentrated \
                    and physical not in rctx.shared \
                    and len(known) < HotNames.LIMIT:
                known[raw] = found
        return found

    def topic_id(given):
        sent = rctx.check_topic_id(given)
        if memo is not None and sent == given and not rctx.concentrated \
                and rctx.topic_ids.get(given) not in rctx.shared \
                and len(memo.ids) < HotNames.LIMIT:
            memo.ids.add(given.bytes)
        return sent

    def transactional_id(txn):  # read before the topics (rewrite_produce)
        rctx.transactional = True
        return rctx.to_physical(TRANSACTION, txn, whole=True)

    def producer(found):  # its batches' producer id (producers.py)
        if found != services.producer and services.producer_ids is not None:
            services.producer_ids.admit(rctx.namespace.name, found)
            services.producer = found

    def partitions(named):  # each a log append, whatever its bytes
        over = named - 1 - len(given) // APPEND_BYTES
        if over > 0:
            broker_work(services, rctx, over, APPEND_WORK)

    given, packed, firsts = frame, [], []
    frame, acks, records = rewrite_produce(
        frame, body_offset, version, topic_id=topic_id, topic_field=topic_field,
        known_ids=() if memo is None else memo.ids, transactional_id=transactional_id,
        producer=producer, compressed=packed.append, transactional=firsts.append,
        partitions=partitions)
    rctx.produced = (acks, records)
    if packed:
        _count_inflated(services, rctx, given, version, packed[0])
    if firsts and rctx.transactional and services.transactions is not None:
        broker_work(services, rctx, services.transactions.added(
            transactional_partitions(given, firsts[0])), TXN_PARTITION_WORK)
    if rctx.shared:
        frame = _shared_without_producers(rctx, frame, body_offset, version)
    return frame


APPEND_BYTES = 1024
"""Bytes of a Produce that pay for a partition it names.  A broker appends
each partition's batches on its own (validation, offsets, the log and its
indexes, the answer): ~12-40 us of its CPU however few bytes they hold.  A
client names the partitions it has batches for on that broker, each batch
one to hundreds of KB; 13,000 one-record batches in a 1 MB request (the same
partition again and again, or partitions that do not exist) took 100-350 ms
of a request thread each, 150-570 ms of broker CPU, where 1 MB in one batch
takes 10-40 ms, and four connections sending them took another tenant's
produce p50 from 3 to 49 ms (p99 8 to 286 ms)."""
APPEND_WORK = 25e-6
"""Seconds of its loop share each partition a Produce names beyond the
first and one per APPEND_BYTES of the request costs: what the broker spends
on it.  Clients' batches (1 KB and more a partition) cost nothing; at the
default share a tenant's requests name ~10,000 partitions a second beyond
their bytes on a gateway process."""


INFLATED_MAX = 32 << 20
"""Bytes the compressed batches of one Produce may inflate to in all.  A
broker inflates every compressed batch to validate its records, ~3 ms of
its CPU per MiB on one of its request threads, and no Kafka quota sees it:
900 KB of gzip (900 MiB of zeros) a request, on four connections, took
another tenant's produce p99 from 24 ms to 11 s; 135 KB of zstd stood for
4 GiB (audit 25).  Counting to the bound takes the codec thread up to
~0.12 s (gzip, ~3.5 ms a MiB here; lz4 and zstd a tenth of it), charged to
the tenant as its loop work, and a refused request's bytes are charged as
inflated to the bound.  Past the bound the request is answered MESSAGE_TOO_LARGE
for each of its partitions, and a Java producer splits its batches and
sends them again; a client's batches (batch.size 16 KB to 1 MB) inflate to
a small part of it."""
FREE_RATIO = 16
"""Inflated bytes up to this many times the compressed ones cost nothing
more (text and JSON compress 3 to 10 times); beyond it each MiB costs the
tenant INFLATED_WORK of its loop share, as the partitions it creates do
(rules/common.py)."""
INFLATED_WORK = 0.003
"""Seconds of its loop share a MiB inflated past FREE_RATIO costs: what the
broker spends on it.  At the default share a tenant's requests inflate to
~80 MiB a second past the ratio on a gateway process."""


RECORD_BYTES = 8
"""Bytes a record takes uncompressed at the least (its length, attributes,
deltas, key and value lengths and headers count, a byte each).  A broker
reads every record of a batch it is sent, ~0.15-0.3 us of its CPU each; a
compressed batch may hold far more records than its bytes could: 900,000
empty ones in 730 KB of zstd (110-300 ms of a request thread), in 620 bytes
if their offsets repeat (80-700 ms), where the inflated bytes past
FREE_RATIO were charged 18 ms."""
RECORD_WORK = 0.3e-6
"""Seconds of its loop share each record of a compressed batch beyond
one per RECORD_BYTES of the batch costs: what the broker spends on it.  A
client's records (tens of bytes and more, compressed 3 to 10 times) cost
nothing; at the default share a tenant's requests carry ~800,000 records a
second beyond it on a gateway process."""


INFLATED_INLINE = 1 << 20
"""Bytes a request's compressed batches are counted inflated to on the loop
(gzip ~3.5 ms a MiB here, lz4 and zstd a tenth of it); past them the count
goes on in the codec thread.  A client's requests mostly stay below: the
hand-over to the thread and back cost more per request than the count
(~300 us: gzip, lz4 and zstd producers at 2-3 times the CPU per GB when
every count was handed over)."""


def _count_inflated(services, rctx, frame, version, spans):
    """Count the Produce *frame*'s compressed batches (their ``(start,
    end)``) inflated, here or (past INFLATED_INLINE) before it goes on, in
    the codec thread (``check_first``, filters/tenant.py)."""
    packed = sum(end - start for start, end in spans)
    records = sum(max(_COUNT.unpack_from(frame, start + 57)[0], 0)
                  for start, _ in spans)  # a broker reads no more than these
    found = inflated(frame, spans, INFLATED_INLINE)
    if isinstance(found, BatchError) and found.code == MESSAGE_TOO_LARGE:
        rctx.check_first = (inflated, (frame, spans, INFLATED_MAX),
                            lambda found: _inflation(services, rctx, frame, version,
                                                     packed, records, found))
    else:
        _inflation(services, rctx, frame, version, packed, records, found)


_COUNT = struct.Struct(">i")  # a batch's records, 57 bytes into its header


def _inflation(services, rctx, frame, version, packed, records, found):
    """What the compressed batches (*packed* bytes and *records* records of
    them) of the Produce *frame* inflate to (*found*: bytes, or the
    BatchError that stopped the count): charged past FREE_RATIO and
    RECORD_BYTES, or the request answered with the error for each
    partition (closed if it asks for no answer, acks=0, as a broker does)."""
    if isinstance(found, BatchError):
        if found.code == MESSAGE_TOO_LARGE:  # inflated to the bound first
            _inflated_charged(services, rctx, INFLATED_MAX, packed)
        if rctx.produced[0] == 0:
            raise Rejected(f"produce request with acks=0: {found}")
        rctx.answer = _produce_refused(frame, version, found.code, str(found))
        return
    _inflated_charged(services, rctx, found, packed)
    broker_work(services, rctx, records - packed // RECORD_BYTES, RECORD_WORK)


def _inflated_charged(services, rctx, inflated, packed):
    """INFLATED_WORK for each MiB of *inflated* past FREE_RATIO times *packed*."""
    beyond = inflated - FREE_RATIO * packed
    if beyond > 0:
        broker_work(services, rctx, beyond / (1 << 20), INFLATED_WORK)


def _produce_refused(frame, version, code, message):
    """The answer to the Produce *frame* (as the client sent it): every
    partition refused with *code* and *message*."""
    _, request = decode_request(frame)
    module = load_payload_module(0, version, EntityType.response)
    part = module.PartitionProduceResponse
    more = {"record_errors": (), "error_message": message} if \
        "error_message" in part.__dataclass_fields__ else {}
    key = "topic_id" if version >= 13 else "name"
    return encode_body(module.ProduceResponse(throttle_time=NO_THROTTLE, responses=tuple(
        module.TopicProduceResponse(**{key: getattr(t, key)}, partition_responses=tuple(
            part(index=p.index, error_code=ErrorCode(code), base_offset=i64(-1), **more)
            for p in t.partition_data))
        for t in request.topic_data)))


def _shared_without_producers(rctx, frame, body_offset, version):
    """A Produce naming writable mapped topics: their batches go without
    producer ids (``batches.without_producer``).  A producer id is the
    broker's, shared by every writer of a partition and tied to no tenant:
    another writer's, sent by a tenant, would fence it or stand in for its
    next record.  Their writes are at least once (no idempotence); a
    transactional Produce to such a topic was refused (context.py)."""
    flexible = version >= 9

    def chosen(field):
        name = rctx.topic_ids.get(uuid.UUID(bytes=field)) if version >= 13 else \
            read_string(field, 0, flexible)[0]
        return name in rctx.shared
    return rewrite_records(frame, body_offset, version, chosen, without_producer)


CONSUMER = -1
"""The replica id of a consumer's Fetch, ListOffsets and OffsetForLeaderEpoch."""


def _consumer_only(replica, api="Fetch"):
    """A Fetch as a replica (id >= 0) is a follower broker's: it reads records
    not yet committed and moves the leader's view of that follower; as the
    debugging replica (-2, -3 a broker's own) it reads past the high
    watermark too, and ListOffsets and OffsetForLeaderEpoch answer such
    replicas from the log's end.  A tenant's is refused (the connection is
    closed, the reason logged): clients send -1."""
    if replica != CONSUMER:
        raise Rejected(f"a {api} as replica {replica} is not a consumer's "
                       "request; refused")


def consumer_only(services, rctx, request):
    """ListOffsets, OffsetForLeaderEpoch: as a consumer only (``_consumer_only``)."""
    _consumer_only(getattr(request, "replica_id", CONSUMER),
                   type(request).__name__.removesuffix("Request"))
    return request


CHEAP_LOOKUPS = frozenset((-1, -2, -4, -5))
"""ListOffsets timestamps a broker answers from a partition's ends: LATEST,
EARLIEST, EARLIEST_LOCAL, LATEST_TIERED."""
LOOKUP_WORK = 2.0
"""Seconds of its loop share each second a ListOffsets by time waited for
its answer costs.  Any other timestamp (a time, -3 the largest, any other
negative) makes the broker inflate and read every record of the batch it
lands in, which the tenant may have made of 900,000 records in 730 KB of
zstd: ~0.3 s of a request thread a partition, ~0.6 s of broker CPU with its
collector (1.6-1.9 times the wait, measured here), as often as it asks.  No
field of the request says what the batch holds, so the wait is charged,
once a request (its partitions are read one after another)."""


def lookups_timed(services, rctx, request):
    """ListOffsets: note when one asking by time goes on (``LOOKUP_WORK``)."""
    for topic in request.topics:
        for part in topic.partitions:
            if part.timestamp not in CHEAP_LOOKUPS:
                rctx.asked_at = services.clock.seconds()
                return request
    return request


def lookups_charged(services, rctx, response):
    """ListOffsets: a lookup by time costs its wait (``LOOKUP_WORK``)."""
    if rctx.asked_at is not None:
        broker_work(services, rctx, services.clock.seconds() - rctx.asked_at,
                    LOOKUP_WORK)
    return response


def _fetch_sessions(services, rctx, session_id, epoch, version):
    """Check the fetch session a request names against the connection's own
    (tenancy/sessions.py): 'forward', 'unbind' or 'refuse' (answered here)."""
    if services.fetch_sessions is None:
        services.fetch_sessions = FetchSessions(services.fetch_session_pool)
    rctx.sessions = services.fetch_sessions
    rctx.sessions.version = version
    action = rctx.sessions.check(session_id, epoch, _generation(rctx))
    if action == "refuse":
        rctx.answer = _fetch_error(version, FETCH_SESSION_ID_NOT_FOUND)
        return action
    if action == "forward":
        rctx.session_named = session_id
    if epoch == INITIAL_EPOCH:  # the broker makes a session: is there room?
        rctx.making_session = rctx.sessions.reserve()
    return action


def own_producers(services, rctx, response):
    """DescribeProducers: a mapped topic's producers are never the tenant's
    (its batches there go without producer ids, ``_shared_without_producers``),
    so none are listed: others' ids, epochs and sequences stay theirs."""
    if not rctx.namespace.aliases:
        return response
    return replace(response, topics=tuple(
        replace(t, partitions=tuple(replace(p, active_producers=())
                                    for p in t.partitions))
        if t.name in rctx.namespace.aliases else t for t in response.topics))


def session_closers(sessions):
    """Fetch requests (payloads) closing each broker session *sessions* own:
    sent as the connection closes, so their slots in the broker's session
    cache (shared by every tenant) are free at once, not when evicted.  Epoch
    -1 closes the session named; no partitions, no wait."""
    if not sessions.owned() or sessions.version < 7:
        return []
    version = sessions.version
    module = load_payload_module(1, version, EntityType.request)
    fields = module.FetchRequest.__dataclass_fields__
    who = {"replica_state": module.ReplicaState(replica_id=i32(-1), replica_epoch=i64(-1))} \
        if "replica_state" in fields else {"replica_id": i32(-1)}
    return [encode_request(module.FetchRequest(
        **who, max_wait=i32Timedelta.parse(datetime.timedelta(0)), min_bytes=i32(0),
        max_bytes=i32(0), session_id=i32(session), session_epoch=i32(FINAL_EPOCH),
        topics=(), forgotten_topics_data=()), version, 0)
        for session in sessions.owned()]


def _sessionless(rctx, session_id, action):
    """The Fetch carries a decoy: it goes on with epoch FINAL_EPOCH, so no broker
    session keeps the decoy (tenancy/sessions.py); a session of this connection
    it names is closed by it.  The session id it goes on with."""
    if action == "unbind" or not session_id:
        return 0
    rctx.sessions.closed(session_id)
    return session_id


def _generation(rctx):
    """Which ACLs decide this request (None: none): fetch sessions are bound to it."""
    return None if rctx.rights is None else rctx.rights.authorizer.generation


def _fetch_error(version, code):
    """A Fetch response body with a top-level error and nothing else."""
    module = load_payload_module(1, version, EntityType.response)
    return encode_body(module.FetchResponse(
        throttle_time=NO_THROTTLE, error_code=ErrorCode(code), session_id=i32(0),
        responses=()))


def fetch_observe(rctx, scan):
    if rctx is not None:
        _answered(rctx, scan.session_id, scan.error)


def _answered(rctx, session_id, error):
    """A Fetch answered (by bytes, or decoded: both may run for one answer):
    the session it made is this connection's, the room held for it given back;
    a session the broker no longer has (evicted: FETCH_SESSION_ID_NOT_FOUND,
    after which the client asks for a new one) no longer holds room."""
    if rctx.sessions is not None:
        if error == FETCH_SESSION_ID_NOT_FOUND and rctx.session_named:
            rctx.sessions.closed(rctx.session_named)
        rctx.sessions.created(session_id, _generation(rctx),
                              made=rctx.making_session is True)
        rctx.making_session = None


def fetch_response(services, rctx, response):
    """Fetch, decoded: sessions noted, names and ids walked, node_endpoints."""
    _answered(rctx, getattr(response, "session_id", 0),
              getattr(response, "error_code", 0))
    return node_endpoints(services, rctx, walk_response(response, rctx))


FETCHED_WORK = 5e-6
"""Seconds of its loop share each partition a Fetch names beyond the first
costs: what the broker spends on it.  A broker looks up and answers every
partition a Fetch names, whether it holds records or exists at all: one
naming 50,000 partitions that do not exist (1.6 MB) took a broker here 234
ms of CPU, 2.3-5.5 us a partition, where the gateway's walk of it, all the
tenant was charged, took ~50 ms.  A consumer names the partitions it reads
from that broker, with fetch sessions (KIP-227) only those that changed: a
librdkafka consumer of 1,000 idle partitions on one broker (two fetches a
second) spends 10 ms a second of the default share."""


def fetch_request(services, rctx, request):
    """Fetch, decoded (before v13, or when ``fetch_frame`` declines): the
    session checked, names made physical, topic ids checked by the walker;
    the partitions named beyond the first charged (FETCHED_WORK)."""
    state = getattr(request, "replica_state", None)
    _consumer_only(request.replica_id if state is None else state.replica_id)
    broker_work(services, rctx, sum(len(t.partitions) for t in request.topics) + sum(
        len(t.partitions) for t in getattr(request, "forgotten_topics_data", ())) - 1,
        FETCHED_WORK)
    if request.__version__ < 7:
        return walk_request(request, rctx)
    action = _fetch_sessions(services, rctx, request.session_id,
                             request.session_epoch, request.__version__)
    if action == "refuse":
        return request
    if action == "unbind":
        request = replace(request, session_id=i32(0))
    decoys = len(rctx.decoy_names) + len(rctx.decoy_ids)
    request = walk_request(request, rctx)
    if len(rctx.decoy_names) + len(rctx.decoy_ids) > decoys \
            or rctx.making_session is False:  # a decoy, or no room for a session
        request = replace(request, session_epoch=i32(FINAL_EPOCH), session_id=i32(
            _sessionless(rctx, request.session_id, action)))
    return request


def in_a_transaction(services, rctx, request):
    """AddPartitionsToTxn: the topics it names get the transaction's markers,
    so they are checked as a transactional Produce's are (context.py)."""
    rctx.transactional = True
    return request


def _plainly_read(rctx, topic_id):
    """Whether a Fetch may name *topic_id*, which its check let through, with
    no check again while the namespace's memo stays: a topic of the tenant
    (not the zero id), neither concentrated nor a writable mapping (both
    noted per request), and room in the memo."""
    return topic_id != ZERO_UUID and not rctx.concentrated \
        and rctx.topic_ids.get(topic_id) not in rctx.shared \
        and len(rctx.namespace.memo().read) < HotNames.LIMIT


def fetch_frame(services, rctx, frame, body_offset, version):
    """Fetch v13+ names topics by id only: each id is checked where it lies, and
    the request goes on as it came (a foreign id swapped in place for a decoy,
    as the walker would, and the fetch then sessionless).  A consumer's long
    poll thus costs no decode and re-encode.  The partitions named beyond the
    first are charged (FETCHED_WORK).  Before v13 (names): None, so it is
    decoded and walked."""
    if version < 13:
        return None
    replica, positions, named, session_id, epoch, session_at = fetch_request_walk(
        frame, body_offset, version)
    _consumer_only(replica)
    if named > 1:
        broker_work(services, rctx, named - 1, FETCHED_WORK)
    out = None
    action = _fetch_sessions(services, rctx, session_id, epoch, version)
    if action == "refuse":
        return frame
    if action == "unbind":
        out = bytearray(frame)
        out[session_at:session_at + 4] = bytes(4)
    decoyed = False
    memo = rctx.namespace.memo() if rctx.rights is None else None
    for at in positions:
        raw = bytes(frame[at:at + 16])
        if memo is not None and memo.owns_id(raw):
            continue  # checked before, nothing to note: as check_topic_id would
        topic_id = uuid.UUID(bytes=raw)
        checked = rctx.check_topic_id(topic_id)
        if checked != topic_id:
            if out is None:
                out = bytearray(frame)
            out[at:at + 16] = checked.bytes
            decoyed = True
        elif memo is not None and _plainly_read(rctx, topic_id):
            memo.read.add(raw)
    if decoyed or rctx.making_session is False:  # sessionless: id, then epoch
        if out is None:
            out = bytearray(frame)
        _SESSION.pack_into(out, session_at, _sessionless(rctx, session_id, action),
                           FINAL_EPOCH)
    return frame if out is None else bytes(out)
