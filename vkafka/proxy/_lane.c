/* The produce lane's bookkeeping, compiled (proxy/splice.py: _lane_read,
 * lane_answer; filters/lane.py says what the lane takes).
 *
 * Once a read's requests are walked and renamed (_walk.produce_lane_many),
 * what is left is bookkeeping: a Pending owed for each, the tenant's
 * counters, one send to the broker; and for the broker's read of answers
 * (_walk.produce_answer_lane_many): which requests they answer, the
 * latency and answer counters, one send to the client, the requests
 * leaving the sequencer.  In Python that was some twenty calls a request
 * and its answer, ~39 k of the ~133 k instructions bench/hotpath.py counts
 * per request and answer: as much as a bare forwarder's whole work.  Here
 * it is one call per read each way.
 *
 * Only a read taken whole, on a connection whose rates do not limit it (the
 * splice's gate decides that, in Python, before calling): anything else (a
 * read the lane takes part of, a throttle) gets the walk's result back,
 * untouched, nothing done, and goes the Python way, which stays the
 * reference (tests/test_lane.py holds both to the same bytes, Pendings and
 * counts).  What Python objects hold stays theirs: this reads and sets the
 * same attributes the Python does, in the same order.
 *
 * After a read the Python path took whole, the next reads need not enter
 * Python at all: read and answers_read, installed as the two connections'
 * dataReceived and armed by the splice, call forward and answer
 * themselves while what the gate and the arguments were decided from
 * stays the same (see disarm below).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_watch.h"

#define MAX_BOUNDS 64
#define MAX_SLOTS 32

/* The fields of a Pending set per request (the rest as __init__ leaves
 * them), and those read of one owed; the names of its slots, in this
 * order, at Books's making. */
enum { CORRELATION_ID, API_VERSION, RULE, SENT, LANE, LOCAL, WAITING, FIELDS };
static const char *const field_names[FIELDS] = {
    "correlation_id", "api_version", "rule", "sent", "lane", "local", "waiting"};

/* A __slots__ member of one type (a metric's Count or Timing), read and
 * set at its offset: learned from the first object it is asked of, and
 * again when asked of one of another type. */
typedef struct {
    PyObject *type;         /* held; NULL: not learned */
    Py_ssize_t offset;      /* -1: not a member of objects: by name */
} Slot;

static void
slot_learn(Slot *slot, PyObject *object, PyObject *name)
{
    PyTypeObject *type = Py_TYPE(object);
    PyObject *descr = _PyType_Lookup(type, name);
    slot->offset = -1;
    if (type->tp_getattro == PyObject_GenericGetAttr &&
            type->tp_setattro == PyObject_GenericSetAttr &&
            descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
            PyObject_TypeCheck(object, PyDescr_TYPE(descr))) {
        PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
            slot->offset = m->offset;
    }
    Py_XSETREF(slot->type, Py_NewRef(type));
}

/* getattr(object, name) (a new reference; NULL raised). */
static PyObject *
slot_get(Slot *slot, PyObject *object, PyObject *name)
{
    if ((PyObject *)Py_TYPE(object) != slot->type)
        slot_learn(slot, object, name);
    PyObject *value = slot->offset < 0 ? NULL :
        *(PyObject **)((char *)object + slot->offset);
    return value != NULL ? Py_NewRef(value) : PyObject_GetAttr(object, name);
}

/* setattr(object, name, value); -1 raised. */
static int
slot_set(Slot *slot, PyObject *object, PyObject *name, PyObject *value)
{
    if ((PyObject *)Py_TYPE(object) != slot->type)
        slot_learn(slot, object, name);
    if (slot->offset < 0)
        return PyObject_SetAttr(object, name, value);
    Py_XSETREF(*(PyObject **)((char *)object + slot->offset), Py_NewRef(value));
    return 0;
}

/* Where send last sent on an outbox's socket at once: while its watches
 * hold (the outbox not held and on the same transport, the transport as
 * sendable found it: connected, not TLS, nothing queued by Twisted), the
 * next send goes to that socket without asking sendable again. */
typedef struct {
    PyObject *outbox, *sock; /* borrowed: ws.keep holds them */
    Watches ws;
} Route;

typedef struct {
    PyObject_HEAD
    PyObject *pending;      /* the sequencer's deque of Pendings */
    PyObject *append, *popleft; /* its bound methods */
    PyObject *template;     /* a sequencer.Pending as __init__ leaves it */
    Py_ssize_t slots[MAX_SLOTS], nslots; /* the offsets of its slots */
    Py_ssize_t at[FIELDS];  /* those of the fields set per request */
    PyObject *sendable;     /* _dispatch.sendable (tuning.sendable compiled) */
    PyObject *plain;        /* the transport types it takes (tuning._PLAIN_TCP) */
    PyObject *send_parts;   /* _send.send_parts */
    PyObject *socket_type;  /* socket.socket: what send_parts is given */
    Route routes[2];        /* the broker's outbox and the client's */
    Slot value, counts, sum; /* of the metrics' Count and Timing */
    /* The names to the client of the namespace last answered for, while
     * its memo is the same (Namespace.memo_watch): */
    PyObject *memo_lane, *to_client;
    Watches memo_watches;
    PyObject *walk;         /* _walk.produce_lane_many */
    PyObject *walk_answers; /* _walk.produce_answer_lane_many */
    double bounds[MAX_BOUNDS]; /* metrics.LATENCY_BUCKETS */
    Py_ssize_t nbounds;
    /* The counters of one ConnectionMetrics for one API name
     * (ConnectionMetrics.lane_counters), looked up when either changes. */
    PyObject *metrics, *api;
    PyObject *counters[6];  /* requests, bytes in, records in, latency, bytes out,
                             * answers without an error */
    /* The compiled read (``read``), once installed on a connection: */
    PyObject *conn;         /* the splice's ClientConnection */
    PyObject *fallback;     /* its Python dataReceived, bound */
    PyObject *seconds;      /* the reactor's clock */
    PyObject *reasons;      /* its valve's reasons (a set, never rebound) */
    Py_ssize_t turn, in_flight; /* FRAMES_PER_TURN, MAX_IN_FLIGHT */
    /* and, while armed, what forward is given and what is watched: */
    int armed;
    Py_ssize_t whole;       /* reads it sent whole (for the tests) */
    PyObject *args, *limit, *rule, *namespace, *out_metrics, *outbox;
    PyObject *share, *share_waiting; /* the loop share (or None) and its deque */
    double expires_at;      /* the token's */
    Watches watches;        /* _watch.h: attributes and items */
    PyObject *calls;        /* ((f, arg, value), ...) */
    /* The compiled read of answers (``answers_read``), installed on the
     * broker connection, and what it is armed with: */
    PyObject *broker, *broker_fallback, *unsent, *client;
    int answers_armed;
    Py_ssize_t answers_whole;
    Py_ssize_t middle_reads; /* reads from the middle of a streamed answer sent */
    PyObject *answers_limit, *answers_metrics, *answers_outbox, *sequencer;
    Watches answers_watches;
} Books;

enum { REQUESTS, BYTES_IN, RECORDS_IN, LATENCY, BYTES_OUT, ANSWERED };

static PyObject *s_value, *s_sum, *s_counts, *s_held, *s_transport, *s_socket,
    *s_write_parts, *s_name,
    *s_memo, *s_to_client, *s_release, *s_room, *s_lane_counters, *s_responses_for,
    *s_tokens, *s_backpressure, *s_paused, *s_answered_unsent, *s_memo_watch, *one, *empty,
    *s_streamed, *s_received, *s_limit, *s_chunks, *s_closed, *s_scanned, *s_sent,
    *s_outbox;
/* What _dispatch.sendable reads of a transport (tuning.SENDABLE_READS,
 * taken from there at import: the Twisted names are listed in tuning.py
 * alone, which tuning.check checks the installed Twisted has), and the
 * socket send uses. */
static PyObject *sendable_reads;

/* child.value += amount; -1 raised. */
static int
add(Books *b, PyObject *child, PyObject *amount)
{
    PyObject *value = slot_get(&b->value, child, s_value);
    if (value == NULL)
        return -1;
    PyObject *sum = PyNumber_Add(value, amount);
    Py_DECREF(value);
    if (sum == NULL)
        return -1;
    int failed = slot_set(&b->value, child, s_value, sum);
    Py_DECREF(sum);
    return failed;
}

static int
add_ssize(Books *b, PyObject *child, Py_ssize_t amount)
{
    PyObject *n = PyLong_FromSsize_t(amount);
    if (n == NULL)
        return -1;
    int failed = add(b, child, n);
    Py_DECREF(n);
    return failed;
}

/* pending.<field f> (a new reference; NULL raised): at its slot when it
 * is a Pending like the template (whose slots_of checked them). */
static PyObject *
field_of(Books *b, PyObject *pending, int f)
{
    if (Py_TYPE(pending) == Py_TYPE(b->template)) {
        PyObject *value = *(PyObject **)((char *)pending + b->at[f]);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttrString(pending, field_names[f]);
}

/* The counters of *metrics* (a ConnectionMetrics) for *rule*'s API, kept
 * while both stay the same objects; -1 raised. */
static int
counters_for(Books *b, PyObject *metrics, PyObject *rule)
{
    PyObject *api = PyObject_GetAttr(rule, s_name);
    if (api == NULL)
        return -1;
    if (metrics == b->metrics && api == b->api) {
        Py_DECREF(api);
        return 0;
    }
    PyObject *got = PyObject_CallMethodOneArg(metrics, s_lane_counters, api);
    if (got == NULL) {
        Py_DECREF(api);
        return -1;
    }
    if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 6) {
        Py_DECREF(got);
        Py_DECREF(api);
        PyErr_SetString(PyExc_TypeError, "lane_counters: a tuple of six was expected");
        return -1;
    }
    for (int i = 0; i < 6; i++)
        Py_XSETREF(b->counters[i], Py_NewRef(PyTuple_GET_ITEM(got, i)));
    Py_DECREF(got);
    Py_XSETREF(b->metrics, Py_NewRef(metrics));
    Py_XSETREF(b->api, api);
    return 0;
}

/* A Pending as ``Pending(correlation_id, PRODUCE, version, rule,
 * lane=lane)`` makes it, *sent* (or, NULL, as it leaves it): a copy of the
 * template's slots, those five set.  Its __init__ (generated by
 * dataclasses) was ~5 k instructions a request, a third of what this file
 * does per request; tests/test_lane.py holds the two equal. */
static PyObject *
make_pending(Books *b, PyObject *correlation_id, PyObject *version, PyObject *rule,
             PyObject *lane, PyObject *sent)
{
    PyTypeObject *type = Py_TYPE(b->template);
    PyObject *made = type->tp_alloc(type, 0);
    if (made == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < b->nslots; i++) {
        PyObject *value = *(PyObject **)((char *)b->template + b->slots[i]);
        *(PyObject **)((char *)made + b->slots[i]) = Py_XNewRef(value);
    }
    PyObject *fields[FIELDS] = {correlation_id, version, rule, sent, lane};
    for (int f = 0; f < FIELDS; f++)
        if (fields[f] != NULL)
            Py_XSETREF(*(PyObject **)((char *)made + b->at[f]), Py_NewRef(fields[f]));
    return made;
}

/* *route* taken for *outbox*, not *held*, on *transport*, whose socket
 * *sock* sendable let send on: watched as sendable reads them (their
 * names in sendable_reads); -1 raised. */
static int
take_route(Route *route, PyObject *outbox, PyObject *held, PyObject *transport,
           PyObject *sock)
{
    Py_ssize_t n = PyTuple_GET_SIZE(sendable_reads);
    PyObject *attrs = PyTuple_New(n + 2);
    if (attrs == NULL)
        return -1;
    PyTuple_SET_ITEM(attrs, 0, Py_BuildValue("(OOO)", outbox, s_held, held));
    PyTuple_SET_ITEM(attrs, 1, Py_BuildValue("(OOO)", outbox, s_transport, transport));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(sendable_reads, i);
        PyObject *value = PyObject_GetAttr(transport, name);
        PyTuple_SET_ITEM(attrs, i + 2, value == NULL ? NULL :
                         Py_BuildValue("(OOO)", transport, name, value));
        Py_XDECREF(value);
    }
    for (Py_ssize_t i = 0; i < n + 2; i++)
        if (PyTuple_GET_ITEM(attrs, i) == NULL) {
            Py_DECREF(attrs);
            return -1;
        }
    int holds = watches_arm(&route->ws, attrs, empty);
    Py_DECREF(attrs);
    route->outbox = holds == 1 ? outbox : NULL;
    route->sock = sock;
    return holds < 0 ? -1 : 0;
}

/* The socket *outbox* (an Outbox) can be sent on at once (a new
 * reference), or NULL: it is held, or its transport is not sendable
 * (Twisted queues for it, TLS, closing); NULL raised too. */
static PyObject *
socket_of(Books *b, PyObject *outbox, int *raised)
{
    *raised = 1;
    Route *route = b->routes[0].outbox == outbox ? &b->routes[0] :
        b->routes[1].outbox == outbox ? &b->routes[1] : NULL;
    if (route != NULL) {
        int holds = watches_hold(&route->ws);
        if (holds < 0)
            return NULL;
        if (holds) {
            *raised = 0;
            return Py_NewRef(route->sock);
        }
    }
    else  /* a slot free, else the second */
        route = &b->routes[b->routes[0].outbox == NULL ? 0 : 1];
    watches_clear(&route->ws);
    route->outbox = NULL;
    PyObject *held = PyObject_GetAttr(outbox, s_held), *transport = NULL, *ok = NULL,
        *sock = NULL;
    int is_held = held == NULL ? -1 : PyObject_IsTrue(held);
    if (is_held != 0)
        goto done;
    if ((transport = PyObject_GetAttr(outbox, s_transport)) == NULL)
        goto done;
    PyObject *ask[2] = {transport, b->plain};
    if ((ok = PyObject_Vectorcall(b->sendable, ask, 2, NULL)) != Py_True)
        goto done;
    if ((sock = PyObject_GetAttr(transport, s_socket)) == NULL)
        goto done;
    if ((PyObject *)Py_TYPE(sock) != b->socket_type)
        Py_CLEAR(sock);
    else if (take_route(route, outbox, held, transport, sock) < 0)
        Py_CLEAR(sock);
    else
        *raised = 0;
done:
    if (sock == NULL && !PyErr_Occurred())
        *raised = 0;
    Py_XDECREF(held);
    Py_XDECREF(transport);
    Py_XDECREF(ok);
    return sock;
}

/* *pieces* written to *outbox* (an Outbox) as its write_parts would: on
 * the socket at once when nothing is held or queued ahead of them, what it
 * does not take (and anything else) by write_parts itself; -1 raised. */
static int
send(Books *b, PyObject *outbox, PyObject *pieces)
{
    int raised;
    PyObject *sock = socket_of(b, outbox, &raised), *rest = Py_NewRef(pieces);
    if (raised)
        goto fail;
    if (sock != NULL) {
        PyObject *args[2] = {sock, pieces};
        PyObject *left = PyObject_Vectorcall(b->send_parts, args, 2, NULL);
        Py_DECREF(sock);
        if (left == NULL)
            goto fail;
        Py_SETREF(rest, left);
        if (rest == Py_None) {
            Py_DECREF(rest);
            return 0;
        }
    }
    PyObject *done = PyObject_CallMethodOneArg(outbox, s_write_parts, rest);
    Py_DECREF(rest);
    if (done == NULL)
        return -1;
    Py_DECREF(done);
    return 0;
fail:
    Py_DECREF(rest);
    return -1;
}

PyDoc_STRVAR(forward_doc,
"forward(read, args, limit, most, rule, namespace, metrics, outbox, now)\n"
"-> None, or produce_lane_many's (taken, end)\n\n"
"The Produce requests of *read* as produce_lane_many(read, args, limit,\n"
"most) takes them; when it takes them all (None): each owed its answer\n"
"(a Pending of *rule* and *namespace*, sent at *now*; none for acks=0),\n"
"counted in *metrics* (a ConnectionMetrics, or None), and all sent to the\n"
"broker's *outbox* at once.  Else the walk's result, nothing done.");

static PyObject *
forward(Books *b, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "forward() takes nine arguments");
        return NULL;
    }
    PyObject *read = args[0], *rule = args[4], *namespace = args[5],
        *metrics = args[6], *outbox = args[7], *now = args[8];
    PyObject *walked = PyObject_Vectorcall(b->walk, args, 4, NULL);
    if (walked == NULL)
        return NULL;
    if (!PyTuple_Check(walked) || PyTuple_GET_SIZE(walked) != 2 ||
            !PyList_Check(PyTuple_GET_ITEM(walked, 0))) {
        Py_DECREF(walked);
        PyErr_SetString(PyExc_TypeError, "forward: the walk gave no (list, end)");
        return NULL;
    }
    PyObject *taken = PyTuple_GET_ITEM(walked, 0);
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(walked, 1)),
        size = PyObject_Length(read), n = PyList_GET_SIZE(taken);
    if ((end == -1 || size == -1) && PyErr_Occurred()) {
        Py_DECREF(walked);
        return NULL;
    }
    if (n == 0 || end != size)
        return walked;
    PyObject *pieces = PyList_New(0);
    if (pieces == NULL || (metrics != Py_None && counters_for(b, metrics, rule) < 0))
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(taken, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 7) {
            PyErr_SetString(PyExc_TypeError, "forward: a request of seven was expected");
            goto fail;
        }
        /* (pieces, correlation id, version, acks, records, counted, size) */
        PyObject **f = &PyTuple_GET_ITEM(item, 0);
        int failed = 0;
        if (metrics != Py_None) {
            int records = PyObject_IsTrue(f[4]);
            failed = add(b, b->counters[REQUESTS], one) < 0 ||
                add(b, b->counters[BYTES_IN], f[5]) < 0 || records < 0 ||
                (records && add(b, b->counters[RECORDS_IN], f[4]) < 0);
        }
        int acks = failed ? 0 : PyObject_IsTrue(f[3]);
        if (failed || acks < 0)
            goto fail;
        if (acks) {  /* owed an answer (acks=0: none, no Pending kept) */
            PyObject *pending = make_pending(b, f[1], f[2], rule, namespace, now);
            PyObject *appended = pending == NULL ? NULL :
                PyObject_CallOneArg(b->append, pending);
            Py_XDECREF(pending);
            if (appended == NULL)
                goto fail;
            Py_DECREF(appended);
        }
        if (PyList_SetSlice(pieces, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, f[0]) < 0)
            goto fail;
    }
    if (send(b, outbox, pieces) < 0)
        goto fail;
    Py_DECREF(pieces);
    Py_DECREF(walked);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(pieces);
    Py_DECREF(walked);
    return NULL;
}

/* The Pendings owed from the head of *b*'s deque, at most *most*, while each
 * came by the lane of the head's namespace and waits for the broker
 * (Sequencer.owed_by_lane); NULL raised. */
static PyObject *
owed_by_lane(Books *b, Py_ssize_t most, PyObject **lane)
{
    PyObject *owed = PyList_New(0), *it = PyObject_GetIter(b->pending), *pending;
    *lane = NULL;
    if (owed == NULL || it == NULL)
        goto fail;
    while (PyList_GET_SIZE(owed) < most && (pending = PyIter_Next(it)) != NULL) {
        PyObject *its = field_of(b, pending, LANE), *local = NULL, *waiting = NULL;
        int takes = its != NULL && its != Py_None && (*lane == NULL || its == *lane) &&
            (local = field_of(b, pending, LOCAL)) == Py_None &&
            (waiting = field_of(b, pending, WAITING)) != NULL;
        int busy = takes ? PyObject_IsTrue(waiting) : 0;
        if (takes && !busy) {
            if (*lane == NULL)
                *lane = Py_NewRef(its);
            takes = PyList_Append(owed, pending) == 0;
        }
        int raised = PyErr_Occurred() != NULL;
        Py_XDECREF(its);
        Py_XDECREF(local);
        Py_XDECREF(waiting);
        Py_DECREF(pending);
        if (raised)
            goto fail;
        if (!takes || busy)
            break;
    }
    if (PyErr_Occurred())
        goto fail;
    Py_DECREF(it);
    return owed;
fail:
    Py_XDECREF(owed);
    Py_XDECREF(it);
    Py_CLEAR(*lane);
    return NULL;
}

/* The answers *answers* to *owed*, at *now*, counted as
 * ConnectionMetrics.lane_responses counts them; -1 raised. */
static int
count_answers(Books *b, PyObject *metrics, PyObject *owed, PyObject *answers,
              double now)
{
    PyObject *latency = b->counters[LATENCY];
    PyObject *counts = slot_get(&b->counts, latency, s_counts);
    if (counts == NULL)
        return -1;
    if (!PyList_Check(counts) || PyList_GET_SIZE(counts) != b->nbounds + 1) {
        Py_DECREF(counts);
        PyErr_SetString(PyExc_TypeError, "lane: the latency counts do not match");
        return -1;
    }
    Py_ssize_t size = 0, n = PyList_GET_SIZE(answers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *answer = PyList_GET_ITEM(answers, i);
        if (!PyTuple_Check(answer) || PyTuple_GET_SIZE(answer) != 3)
            goto type;
        PyObject *frame = PyTuple_GET_ITEM(answer, 0), *error = PyTuple_GET_ITEM(answer, 1);
        Py_ssize_t length = PyObject_Length(frame);
        PyObject *sent = field_of(b, PyList_GET_ITEM(owed, i), SENT);
        double at = sent == NULL ? -1.0 : PyFloat_AsDouble(sent);
        Py_XDECREF(sent);
        if (length < 0 || (at == -1.0 && PyErr_Occurred()))
            goto fail;
        size += length + 4;
        double seconds = now - at;
        Py_ssize_t bucket = 0;
        while (bucket < b->nbounds && b->bounds[bucket] < seconds)
            bucket++;  /* bisect_left: a bound is "le" */
        PyObject *count = PyNumber_Add(PyList_GET_ITEM(counts, bucket), one);
        if (count == NULL || PyList_SetItem(counts, bucket, count) < 0)
            goto fail;
        PyObject *total = slot_get(&b->sum, latency, s_sum), *more = NULL;
        if (total != NULL) {
            double sum = PyFloat_AsDouble(total);
            if (!(sum == -1.0 && PyErr_Occurred()))
                more = PyFloat_FromDouble(sum + seconds);
        }
        Py_XDECREF(total);
        int failed = more == NULL || slot_set(&b->sum, latency, s_sum, more) < 0;
        Py_XDECREF(more);
        if (failed)
            goto fail;
        int clean = PyLong_CheckExact(error) && PyLong_AsLong(error) == 0;
        if (clean) {
            if (add(b, b->counters[ANSWERED], one) < 0)
                goto fail;
        }
        else {
            PyObject *ask[3] = {metrics, b->api, error};
            PyObject *child = PyObject_VectorcallMethod(
                s_responses_for, ask, 3, NULL);
            failed = child == NULL || add(b, child, one) < 0;
            Py_XDECREF(child);
            if (failed)
                goto fail;
        }
    }
    Py_DECREF(counts);
    return add_ssize(b, b->counters[BYTES_OUT], size);
type:
    PyErr_SetString(PyExc_TypeError, "lane: an answer of three was expected");
fail:
    Py_DECREF(counts);
    return -1;
}

/* The names to the client of the namespace *lane* (a new reference; NULL
 * raised): its memo()'s to_client[True], kept while the memo would be the
 * same (Namespace.memo_watch: its stamp's parts). */
static PyObject *
names_to_client(Books *b, PyObject *lane)
{
    if (lane == b->memo_lane) {
        int holds = watches_hold(&b->memo_watches);
        if (holds < 0)
            return NULL;
        if (holds)
            return Py_NewRef(b->to_client);
    }
    Py_CLEAR(b->memo_lane);
    Py_CLEAR(b->to_client);
    watches_clear(&b->memo_watches);
    PyObject *memo = PyObject_CallMethodNoArgs(lane, s_memo), *names = NULL,
        *to_client = NULL, *watch = NULL;
    if (memo == NULL || (names = PyObject_GetAttr(memo, s_to_client)) == NULL ||
            (to_client = PyObject_GetItem(names, Py_True)) == NULL ||
            (watch = PyObject_CallMethodNoArgs(lane, s_memo_watch)) == NULL)
        goto done;
    if (!PyTuple_Check(watch) || watch_triples(watch, empty) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "memo_watch: a tuple of triples was expected");
        Py_CLEAR(to_client);
        goto done;
    }
    int holds = watches_arm(&b->memo_watches, watch, empty);
    if (holds < 0)
        Py_CLEAR(to_client);
    else if (holds) {
        b->memo_lane = Py_NewRef(lane);
        b->to_client = Py_NewRef(to_client);
    }
done:
    Py_XDECREF(memo);
    Py_XDECREF(names);
    Py_XDECREF(watch);
    return to_client;
}

PyDoc_STRVAR(answer_doc,
"answer(read, limit, most, metrics, outbox, sequencer, now)\n"
"-> None, False, or (owed, answers, end, out)\n\n"
"The broker's *read* of answers to the requests owed by the lane, next in\n"
"line (at most *most*), as produce_answer_lane_many takes them.  None: it\n"
"took them all, and they were counted in *metrics* (or None) at *now*,\n"
"sent to the client's *outbox* at once and left *sequencer*.  False:\n"
"nothing owed by the lane, or nothing taken.  Else the Pendings owed and\n"
"the walk's result, nothing done.");

/* Whether *sequencer*.release() has anything to do after the lane's answers
 * left: an answer made ready at the head of the deque (its ``local`` set),
 * or someone waiting for room (``room``).  Nearly always neither, and the
 * call from C cost more than the lane's own counting. */
static int
release_needed(Books *b, PyObject *sequencer)
{
    PyObject *room = PyObject_GetAttr(sequencer, s_room);
    if (room == NULL)
        return -1;
    int needed = room != Py_None;
    Py_DECREF(room);
    Py_ssize_t n = PyObject_Length(b->pending);
    if (n < 0)
        return -1;
    if (needed || n == 0)
        return needed;
    PyObject *head = PySequence_GetItem(b->pending, 0), *local = NULL;
    if (head == NULL || (local = field_of(b, head, LOCAL)) == NULL) {
        Py_XDECREF(head);
        return -1;
    }
    needed = local != Py_None;
    Py_DECREF(local);
    Py_DECREF(head);
    return needed;
}

static PyObject *
answer(Books *b, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "answer() takes seven arguments");
        return NULL;
    }
    PyObject *read = args[0], *metrics = args[3], *outbox = args[4],
        *sequencer = args[5], *result = NULL, *lane, *walked = NULL;
    Py_ssize_t most = PyLong_AsSsize_t(args[2]);
    double now = PyFloat_AsDouble(args[6]);
    if ((most == -1 || now == -1.0) && PyErr_Occurred())
        return NULL;
    PyObject *owed = owed_by_lane(b, most, &lane);
    if (owed == NULL)
        return NULL;
    if (PyList_GET_SIZE(owed) == 0) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    PyObject *to_client = names_to_client(b, lane);
    if (to_client == NULL)
        goto done;
    PyObject *ask[4] = {read, args[1], owed, to_client};
    walked = PyObject_Vectorcall(b->walk_answers, ask, 4, NULL);
    Py_DECREF(to_client);
    if (walked == NULL)
        goto done;
    if (!PyTuple_Check(walked) || PyTuple_GET_SIZE(walked) != 3 ||
            !PyList_Check(PyTuple_GET_ITEM(walked, 0))) {
        PyErr_SetString(PyExc_TypeError, "answer: the walk gave no (list, end, out)");
        goto done;
    }
    PyObject *answers = PyTuple_GET_ITEM(walked, 0);
    Py_ssize_t n = PyList_GET_SIZE(answers),
        end = PyLong_AsSsize_t(PyTuple_GET_ITEM(walked, 1)), size = PyObject_Length(read);
    if ((end == -1 || size == -1) && PyErr_Occurred())
        goto done;
    if (n == 0) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    if (end != size) {
        result = PyTuple_Pack(4, owed, answers, PyTuple_GET_ITEM(walked, 1),
                              PyTuple_GET_ITEM(walked, 2));
        goto done;
    }
    if (metrics != Py_None) {
        PyObject *rule = field_of(b, PyList_GET_ITEM(owed, 0), RULE);
        int failed = rule == NULL || counters_for(b, metrics, rule) < 0 ||
            count_answers(b, metrics, owed, answers, now) < 0;
        Py_XDECREF(rule);
        if (failed)
            goto done;
    }
    if (send(b, outbox, PyTuple_GET_ITEM(walked, 2)) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *gone = PyObject_CallNoArgs(b->popleft);
        if (gone == NULL)
            goto done;
        Py_DECREF(gone);
    }
    int more = release_needed(b, sequencer);
    if (more < 0)
        goto done;
    if (more) {
        PyObject *released = PyObject_CallMethodNoArgs(sequencer, s_release);
        if (released == NULL)
            goto done;
        Py_DECREF(released);
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(lane);
    Py_XDECREF(walked);
    Py_DECREF(owed);
    return result;
}


/* The compiled read: a connection's dataReceived (installed by the splice
 * once the lane opens) that sends a read the lane takes whole with no
 * Python at all, while it is armed.  The splice's Python path arms it
 * after a read it took whole the same way (ClientConnection._arm), giving
 * forward's arguments and what it decided them from: the objects whose
 * change would make it decide otherwise, each watched at every read (an
 * attribute still the same object, a call still giving the same object),
 * and the conditions of its gate that change without a read of this
 * connection (the valve's reasons, requests in flight, the loop share, the
 * token's expiry).  The rest of its gate changes only on the general path,
 * which a disarmed read takes: anything not as it was armed, a read the
 * lane does not take whole, disarms it and goes to the Python path, the
 * reference, which decides the read from scratch (and may arm again). */

static void
disarm(Books *b)
{
    b->armed = 0;
    Py_CLEAR(b->args);
    Py_CLEAR(b->limit);
    Py_CLEAR(b->rule);
    Py_CLEAR(b->namespace);
    Py_CLEAR(b->out_metrics);
    Py_CLEAR(b->outbox);
    Py_CLEAR(b->share);
    Py_CLEAR(b->share_waiting);
    watches_clear(&b->watches);
    Py_CLEAR(b->calls);
}

/* Whether each (f, arg, value) of *calls* still has f(arg) is value; -1
 * raised. */
static int
same_calls(PyObject *calls)
{
    int same = 1;
    Py_INCREF(calls);  /* what it calls may arm anew, dropping them */
    for (Py_ssize_t i = 0; same == 1 && i < PyTuple_GET_SIZE(calls); i++) {
        PyObject *w = PyTuple_GET_ITEM(calls, i);
        PyObject *now = PyObject_CallOneArg(PyTuple_GET_ITEM(w, 0), PyTuple_GET_ITEM(w, 1));
        same = now == NULL ? -1 : now == PyTuple_GET_ITEM(w, 2);
        Py_XDECREF(now);
    }
    Py_DECREF(calls);
    return same;
}

/* Whether an armed *b* may send the next read: then *most* requests of it
 * at most, at *now* (a new reference); 0 not, -1 raised. */
static int
may_send(Books *b, Py_ssize_t *most, PyObject **now)
{
    *now = NULL;
    Py_ssize_t pending = PyObject_Length(b->pending);
    if (pending < 0)
        return -1;
    if (pending >= b->in_flight || PySet_GET_SIZE(b->reasons) > 0)
        return 0;
    if (b->share != Py_None) {
        Py_ssize_t queued = PyObject_Length(b->share_waiting);
        if (queued != 0)  /* connections wait their turn: so does this one */
            return queued < 0 ? -1 : 0;
        PyObject *tokens = PyObject_GetAttr(b->share, s_tokens);
        if (tokens == NULL)
            return -1;
        double left = PyFloat_AsDouble(tokens);
        Py_DECREF(tokens);
        if (left == -1.0 && PyErr_Occurred())
            return -1;
        if (left < 0)
            return 0;
    }
    int same = watches_hold(&b->watches);
    if (same == 1)
        same = same_calls(b->calls);
    if (same <= 0)
        return same;
    if ((*now = PyObject_CallNoArgs(b->seconds)) == NULL)
        return -1;
    double at = PyFloat_AsDouble(*now);
    if (at == -1.0 && PyErr_Occurred()) {
        Py_CLEAR(*now);
        return -1;
    }
    if (at >= b->expires_at) {
        Py_CLEAR(*now);
        return 0;
    }
    *most = b->in_flight - pending < b->turn ? b->in_flight - pending : b->turn;
    return 1;
}

PyDoc_STRVAR(read_doc,
"read(data)\n\n"
"The installed connection's dataReceived: while armed, *data* sent as\n"
"forward sends a read the lane takes whole; else (or when it is not taken\n"
"whole, nothing done) disarmed and given to the connection's Python\n"
"dataReceived.");

static PyObject *
books_read(Books *b, PyObject *data)
{
    if (b->conn == NULL) {
        PyErr_SetString(PyExc_TypeError, "read: Books not installed on a connection");
        return NULL;
    }
    if (b->armed) {
        Py_ssize_t most = 0;
        PyObject *now;
        int go = may_send(b, &most, &now);
        if (go < 0)
            return NULL;
        if (go) {
            PyObject *n = PyLong_FromSsize_t(most);
            if (n == NULL) {
                Py_DECREF(now);
                return NULL;
            }
            /* held here: what forward calls back may arm it anew */
            PyObject *given[9] = {data, Py_NewRef(b->args), Py_NewRef(b->limit), n,
                                  Py_NewRef(b->rule), Py_NewRef(b->namespace),
                                  Py_NewRef(b->out_metrics), Py_NewRef(b->outbox), now};
            PyObject *walked = forward(b, given, 9);
            for (int i = 1; i < 9; i++)
                Py_DECREF(given[i]);
            if (walked == NULL)
                return NULL;
            if (walked == Py_None) {  /* sent, as nearly always */
                b->whole++;
                if (PySet_GET_SIZE(b->reasons) == 0)
                    return walked;
                Py_DECREF(walked);
                return PyObject_CallMethodNoArgs(b->conn, s_backpressure);
            }
            Py_DECREF(walked);
        }
    }
    disarm(b);
    return PyObject_CallOneArg(b->fallback, data);
}

PyDoc_STRVAR(install_doc,
"install(conn, fallback, seconds, reasons, turn, in_flight)\n\n"
"Make read serve *conn* (a ClientConnection): *fallback* its Python\n"
"dataReceived, *seconds* the reactor's clock, *reasons* its valve's set,\n"
"at most *turn* requests a read and *in_flight* owed.  Disarmed.");

static PyObject *
install(Books *b, PyObject *args)
{
    PyObject *conn, *fallback, *seconds, *reasons;
    Py_ssize_t turn, in_flight;
    if (!PyArg_ParseTuple(args, "OOOO!nn:install", &conn, &fallback, &seconds,
                          &PySet_Type, &reasons, &turn, &in_flight))
        return NULL;
    disarm(b);
    Py_XSETREF(b->conn, Py_NewRef(conn));
    Py_XSETREF(b->fallback, Py_NewRef(fallback));
    Py_XSETREF(b->seconds, Py_NewRef(seconds));
    Py_XSETREF(b->reasons, Py_NewRef(reasons));
    b->turn = turn;
    b->in_flight = in_flight;
    Py_RETURN_NONE;
}

/* Whether *calls* is a tuple of (callable, argument, value); -1 raised
 * otherwise. */
static int
call_triples(PyObject *calls)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(calls); i++) {
        PyObject *w = PyTuple_GET_ITEM(calls, i);
        if (!PyTuple_Check(w) || PyTuple_GET_SIZE(w) != 3 ||
                !PyCallable_Check(PyTuple_GET_ITEM(w, 0))) {
            PyErr_SetString(PyExc_TypeError,
                            "arm: calls are (callable, argument, value) triples");
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(arm_doc,
"arm(args, limit, rule, namespace, metrics, outbox, share, share_waiting,\n"
"    expires_at, attrs, items, calls)\n\n"
"Let read send what the lane takes whole with forward's arguments, while\n"
"every (object, name, value) of *attrs* still has getattr(object, name)\n"
"is value, every (dict, key, value) of *items* dict.get(key) is value\n"
"(_watch.h), every (f, arg, value) of *calls* f(arg) is value, the loop\n"
"*share* (or None; *share_waiting* its deque) is not in debt and the\n"
"clock is before *expires_at*.  Left disarmed if a triple does not hold.");

static PyObject *
arm(Books *b, PyObject *args)
{
    PyObject *walk_args, *limit, *rule, *namespace, *metrics, *outbox, *share,
        *share_waiting, *attrs, *items, *calls;
    double expires_at;
    if (!PyArg_ParseTuple(args, "OOOOOOOOdO!O!O!:arm", &walk_args, &limit, &rule,
                          &namespace, &metrics, &outbox, &share, &share_waiting,
                          &expires_at, &PyTuple_Type, &attrs, &PyTuple_Type, &items,
                          &PyTuple_Type, &calls))
        return NULL;
    if (b->conn == NULL) {
        PyErr_SetString(PyExc_TypeError, "arm: Books not installed on a connection");
        return NULL;
    }
    if (watch_triples(attrs, items) < 0 || call_triples(calls) < 0)
        return NULL;
    disarm(b);
    int holds = watches_arm(&b->watches, attrs, items);
    if (holds <= 0)
        return holds < 0 ? NULL : Py_NewRef(Py_None);
    b->args = Py_NewRef(walk_args);
    b->limit = Py_NewRef(limit);
    b->rule = Py_NewRef(rule);
    b->namespace = Py_NewRef(namespace);
    b->out_metrics = Py_NewRef(metrics);
    b->outbox = Py_NewRef(outbox);
    b->share = Py_NewRef(share);
    b->share_waiting = Py_NewRef(share_waiting);
    b->expires_at = expires_at;
    b->calls = Py_NewRef(calls);
    b->armed = 1;
    Py_RETURN_NONE;
}

static PyObject *
disarm_method(Books *b, PyObject *unused)
{
    disarm(b);
    Py_RETURN_NONE;
}

/* The same for the broker's reads of answers: ``answers_read`` is the
 * broker connection's dataReceived, armed by the splice after a read of
 * answers its Python path (lane_answer) took whole, sending the next ones
 * as answer does while what it watches stays the same: the rest of the
 * gate changes only on the broker connection's general path, which a
 * disarmed read takes.  What answer reads itself (the requests owed, the
 * namespace's memo) it checks at every read. */

static void
disarm_answers(Books *b)
{
    b->answers_armed = 0;
    Py_CLEAR(b->answers_limit);
    Py_CLEAR(b->answers_metrics);
    Py_CLEAR(b->answers_outbox);
    Py_CLEAR(b->sequencer);
    watches_clear(&b->answers_watches);
}

/* After answers were written to the client: its Unsent paused, the
 * splice's answered_unsent tells the tenant's answer budget. */
static PyObject *
answered(Books *b)
{
    PyObject *paused = PyObject_GetAttr(b->unsent, s_paused);
    int full = paused == NULL ? -1 : PyObject_IsTrue(paused);
    Py_XDECREF(paused);
    if (full < 0)
        return NULL;
    if (!full)
        Py_RETURN_NONE;
    return PyObject_CallMethodNoArgs(b->client, s_answered_unsent);
}

/* A read from the middle of a large Fetch answer the broker connection
 * streams (its ``streamed``), as Streamed.passes takes it: the read ends
 * before the held-back tail, all received before it was sent, the client
 * open.  Its scan is Streamed._scanned's (Python: the scan's loop time and
 * a failure are the tenant's and the connection's); if it passed, the
 * read counts as received and sent and goes to the client's outbox as
 * send does (its socket at once when nothing is held or queued).  Most of
 * an answer's reads are such.  1 taken, 0 not (the broker connection's
 * Python dataReceived takes it), -1 raised. */
static int
middle_read(Books *b, PyObject *data)
{
    PyObject *streamed = PyObject_GetAttr(b->broker, s_streamed);
    if (streamed == NULL)
        return -1;
    PyObject *received = NULL, *limit = NULL, *chunks = NULL, *closed = NULL,
        *passed = NULL, *now = NULL, *outbox = NULL, *pieces = NULL;
    int taken = -1;
    if (streamed == Py_None || !PyBytes_Check(data)) {
        taken = 0;
        goto done;
    }
    if ((received = PyObject_GetAttr(streamed, s_received)) == NULL ||
            (limit = PyObject_GetAttr(streamed, s_limit)) == NULL ||
            (chunks = PyObject_GetAttr(streamed, s_chunks)) == NULL ||
            (closed = PyObject_GetAttr(b->client, s_closed)) == NULL)
        goto done;
    Py_ssize_t at = PyLong_AsSsize_t(received), end = PyLong_AsSsize_t(limit);
    Py_ssize_t held = PyObject_Length(chunks);
    int is_closed = PyObject_IsTrue(closed);
    if (PyErr_Occurred())
        goto done;
    at += PyBytes_GET_SIZE(data);
    if (at > end || held || is_closed) {
        taken = 0;
        goto done;
    }
    if ((passed = PyObject_CallMethodOneArg(streamed, s_scanned, data)) == NULL)
        goto done;
    if (passed == Py_True) {
        if ((now = PyLong_FromSsize_t(at)) == NULL ||
                PyObject_SetAttr(streamed, s_received, now) ||
                PyObject_SetAttr(streamed, s_sent, now) ||
                (outbox = PyObject_GetAttr(b->client, s_outbox)) == NULL ||
                (pieces = PyList_New(1)) == NULL)
            goto done;
        PyList_SET_ITEM(pieces, 0, Py_NewRef(data));
        if (send(b, outbox, pieces))
            goto done;
    }
    taken = 1;
done:
    Py_DECREF(streamed);
    Py_XDECREF(received);
    Py_XDECREF(limit);
    Py_XDECREF(chunks);
    Py_XDECREF(closed);
    Py_XDECREF(passed);
    Py_XDECREF(now);
    Py_XDECREF(outbox);
    Py_XDECREF(pieces);
    return taken;
}

PyDoc_STRVAR(answers_read_doc,
"answers_read(data)\n\n"
"The installed broker connection's dataReceived: while armed, *data* sent\n"
"as answer sends a read of answers the lane takes whole; else (or when\n"
"not taken whole, nothing done) disarmed, and a read from the middle of a\n"
"streamed Fetch answer sent as Streamed.passes sends it; anything else\n"
"given to the broker connection's Python dataReceived.");

static PyObject *
answers_read(Books *b, PyObject *data)
{
    if (b->broker == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "answers_read: Books not installed on a broker connection");
        return NULL;
    }
    if (b->answers_armed) {
        int go = watches_hold(&b->answers_watches);
        if (go < 0)
            return NULL;
        PyObject *now = go ? PyObject_CallNoArgs(b->seconds) : NULL;
        if (go && now == NULL)
            return NULL;
        if (go) {
            PyObject *most = PyLong_FromSsize_t(b->turn);
            if (most == NULL) {
                Py_DECREF(now);
                return NULL;
            }
            PyObject *given[7] = {data, Py_NewRef(b->answers_limit), most,
                                  Py_NewRef(b->answers_metrics),
                                  Py_NewRef(b->answers_outbox), Py_NewRef(b->sequencer),
                                  now};
            PyObject *walked = answer(b, given, 7);
            for (int i = 1; i < 7; i++)
                Py_DECREF(given[i]);
            if (walked == NULL)
                return NULL;
            if (walked == Py_None) {  /* sent, as nearly always */
                b->answers_whole++;
                Py_DECREF(walked);
                return answered(b);
            }
            Py_DECREF(walked);
        }
    }
    disarm_answers(b);
    int taken = middle_read(b, data);
    if (taken < 0)
        return NULL;
    if (taken) {
        b->middle_reads++;
        return answered(b);
    }
    return PyObject_CallOneArg(b->broker_fallback, data);
}

PyDoc_STRVAR(install_answers_doc,
"install_answers(broker, fallback, unsent)\n\n"
"Make answers_read serve *broker* (the installed client connection's\n"
"BrokerConnection): *fallback* its Python dataReceived, *unsent* the\n"
"client's Unsent (whose pause answered_unsent reports).  Disarmed.");

static PyObject *
install_answers(Books *b, PyObject *args)
{
    PyObject *broker, *fallback, *unsent;
    if (!PyArg_ParseTuple(args, "OOO:install_answers", &broker, &fallback, &unsent))
        return NULL;
    if (b->conn == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "install_answers: Books not installed on a connection");
        return NULL;
    }
    disarm_answers(b);
    Py_XSETREF(b->broker, Py_NewRef(broker));
    Py_XSETREF(b->broker_fallback, Py_NewRef(fallback));
    Py_XSETREF(b->unsent, Py_NewRef(unsent));
    Py_XSETREF(b->client, Py_NewRef(b->conn));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(arm_answers_doc,
"arm_answers(limit, metrics, outbox, sequencer, attrs)\n\n"
"Let answers_read send what the lane takes whole with answer's arguments,\n"
"while every (object, name, value) of *attrs* still has\n"
"getattr(object, name) is value.");

static PyObject *
arm_answers(Books *b, PyObject *args)
{
    PyObject *limit, *metrics, *outbox, *sequencer, *attrs;
    if (!PyArg_ParseTuple(args, "OOOOO!:arm_answers", &limit, &metrics, &outbox,
                          &sequencer, &PyTuple_Type, &attrs))
        return NULL;
    if (b->broker == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "arm_answers: Books not installed on a broker connection");
        return NULL;
    }
    if (watch_triples(attrs, empty) < 0)
        return NULL;
    disarm_answers(b);
    int holds = watches_arm(&b->answers_watches, attrs, empty);
    if (holds <= 0)
        return holds < 0 ? NULL : Py_NewRef(Py_None);
    b->answers_limit = Py_NewRef(limit);
    b->answers_metrics = Py_NewRef(metrics);
    b->answers_outbox = Py_NewRef(outbox);
    b->sequencer = Py_NewRef(sequencer);
    b->answers_armed = 1;
    Py_RETURN_NONE;
}

/* The slots of *template*'s type into *b*: a class of __slots__ only (a
 * dataclass(slots=True)), each an object, the fields set per request
 * among them; -1 raised otherwise. */
static int
slots_of(Books *b, PyObject *template)
{
    PyTypeObject *type = Py_TYPE(template);
    PyMemberDef *member = type->tp_members;
    for (int f = 0; f < FIELDS; f++)
        b->at[f] = -1;
    if (!(type->tp_flags & Py_TPFLAGS_HEAPTYPE) || type->tp_dictoffset != 0 ||
            type->tp_base != &PyBaseObject_Type || member == NULL)
        goto refused;
    for (b->nslots = 0; member->name != NULL; member++, b->nslots++) {
        if (member->type != T_OBJECT_EX || b->nslots == MAX_SLOTS)
            goto refused;
        b->slots[b->nslots] = member->offset;
        for (int f = 0; f < FIELDS; f++)
            if (strcmp(member->name, field_names[f]) == 0)
                b->at[f] = member->offset;
    }
    for (int f = 0; f < FIELDS; f++)
        if (b->at[f] < 0)
            goto refused;
    return 0;
refused:
    PyErr_SetString(PyExc_TypeError, "Books: the template is no Pending of slots "
                    "with correlation_id, api_version, rule, sent, lane, local "
                    "and waiting");
    return -1;
}

static PyObject *
books_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *pending, *template, *sendable, *plain, *send_parts, *socket_type, *walk,
        *walk_answers, *bounds;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Books() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOO!OOOOO!:Books", &pending, &template, &sendable,
                          &PyTuple_Type, &plain, &send_parts, &socket_type, &walk,
                          &walk_answers, &PyTuple_Type, &bounds))
        return NULL;
    if (PyTuple_GET_SIZE(bounds) > MAX_BOUNDS) {
        PyErr_SetString(PyExc_ValueError, "Books: too many latency bounds");
        return NULL;
    }
    Books *b = (Books *)type->tp_alloc(type, 0);
    if (b == NULL)
        return NULL;
    b->nbounds = PyTuple_GET_SIZE(bounds);
    for (Py_ssize_t i = 0; i < b->nbounds; i++) {
        b->bounds[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(bounds, i));
        if (b->bounds[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(b);
            return NULL;
        }
    }
    if (slots_of(b, template) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    b->pending = Py_NewRef(pending);
    b->template = Py_NewRef(template);
    b->sendable = Py_NewRef(sendable);
    b->plain = Py_NewRef(plain);
    b->send_parts = Py_NewRef(send_parts);
    b->socket_type = Py_NewRef(socket_type);
    b->walk = Py_NewRef(walk);
    b->walk_answers = Py_NewRef(walk_answers);
    if ((b->append = PyObject_GetAttrString(pending, "append")) == NULL ||
            (b->popleft = PyObject_GetAttrString(pending, "popleft")) == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    return (PyObject *)b;
}

static int
books_traverse(Books *b, visitproc visit, void *arg)
{
    Py_VISIT(b->pending);
    Py_VISIT(b->append);
    Py_VISIT(b->popleft);
    Py_VISIT(b->template);
    Py_VISIT(b->plain);
    Py_VISIT(b->sendable);
    Py_VISIT(b->send_parts);
    Py_VISIT(b->socket_type);
    Py_VISIT(b->walk);
    Py_VISIT(b->walk_answers);
    Py_VISIT(b->metrics);
    Py_VISIT(b->api);
    for (int i = 0; i < 6; i++)
        Py_VISIT(b->counters[i]);
    Py_VISIT(b->conn);
    Py_VISIT(b->fallback);
    Py_VISIT(b->seconds);
    Py_VISIT(b->reasons);
    Py_VISIT(b->args);
    Py_VISIT(b->limit);
    Py_VISIT(b->rule);
    Py_VISIT(b->namespace);
    Py_VISIT(b->out_metrics);
    Py_VISIT(b->outbox);
    Py_VISIT(b->share);
    Py_VISIT(b->share_waiting);
    Py_VISIT(b->watches.keep);
    Py_VISIT(b->routes[0].ws.keep);
    Py_VISIT(b->routes[1].ws.keep);
    Py_VISIT(b->value.type);
    Py_VISIT(b->counts.type);
    Py_VISIT(b->sum.type);
    Py_VISIT(b->memo_lane);
    Py_VISIT(b->to_client);
    Py_VISIT(b->memo_watches.keep);
    Py_VISIT(b->calls);
    Py_VISIT(b->broker);
    Py_VISIT(b->broker_fallback);
    Py_VISIT(b->unsent);
    Py_VISIT(b->client);
    Py_VISIT(b->answers_limit);
    Py_VISIT(b->answers_metrics);
    Py_VISIT(b->answers_outbox);
    Py_VISIT(b->sequencer);
    Py_VISIT(b->answers_watches.keep);
    return 0;
}

static int
books_clear(Books *b)
{
    Py_CLEAR(b->pending);
    Py_CLEAR(b->append);
    Py_CLEAR(b->popleft);
    Py_CLEAR(b->template);
    Py_CLEAR(b->plain);
    Py_CLEAR(b->sendable);
    Py_CLEAR(b->send_parts);
    Py_CLEAR(b->socket_type);
    Py_CLEAR(b->walk);
    Py_CLEAR(b->walk_answers);
    Py_CLEAR(b->metrics);
    Py_CLEAR(b->api);
    for (int i = 0; i < 6; i++)
        Py_CLEAR(b->counters[i]);
    disarm(b);
    disarm_answers(b);
    for (int i = 0; i < 2; i++) {
        watches_clear(&b->routes[i].ws);
        b->routes[i].outbox = NULL;
    }
    Py_CLEAR(b->value.type);
    Py_CLEAR(b->counts.type);
    Py_CLEAR(b->sum.type);
    Py_CLEAR(b->memo_lane);
    Py_CLEAR(b->to_client);
    watches_clear(&b->memo_watches);
    Py_CLEAR(b->broker);
    Py_CLEAR(b->broker_fallback);
    Py_CLEAR(b->unsent);
    Py_CLEAR(b->client);
    Py_CLEAR(b->conn);
    Py_CLEAR(b->fallback);
    Py_CLEAR(b->seconds);
    Py_CLEAR(b->reasons);
    return 0;
}

static void
books_dealloc(Books *b)
{
    PyObject_GC_UnTrack(b);
    books_clear(b);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyMethodDef books_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))forward, METH_FASTCALL, forward_doc},
    {"answer", (PyCFunction)(void (*)(void))answer, METH_FASTCALL, answer_doc},
    {"read", (PyCFunction)books_read, METH_O, read_doc},
    {"install", (PyCFunction)install, METH_VARARGS, install_doc},
    {"arm", (PyCFunction)arm, METH_VARARGS, arm_doc},
    {"disarm", (PyCFunction)disarm_method, METH_NOARGS,
     "disarm()\n\nThe next read goes to the connection's Python dataReceived."},
    {"answers_read", (PyCFunction)answers_read, METH_O, answers_read_doc},
    {"install_answers", (PyCFunction)install_answers, METH_VARARGS,
     install_answers_doc},
    {"arm_answers", (PyCFunction)arm_answers, METH_VARARGS, arm_answers_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef books_members[] = {
    {"armed", T_INT, offsetof(Books, armed), READONLY,
     "Whether read sends what the lane takes whole (arm) or goes to Python."},
    {"whole", T_PYSSIZET, offsetof(Books, whole), READONLY,
     "The reads read sent whole, armed."},
    {"answers_armed", T_INT, offsetof(Books, answers_armed), READONLY,
     "Whether answers_read sends what the lane takes whole or goes to Python."},
    {"answers_whole", T_PYSSIZET, offsetof(Books, answers_whole), READONLY,
     "The reads answers_read sent whole, armed."},
    {"middle_reads", T_PYSSIZET, offsetof(Books, middle_reads), READONLY,
     "The reads from the middle of a streamed answer answers_read took."},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(books_doc,
"Books(pending, template, sendable, plain_types, send_parts, socket_type,\n"
"      walk, walk_answers, latency_bounds)\n\n"
"One connection's lane bookkeeping: *pending* is its sequencer's deque,\n"
"*template* a Pending as its __init__ leaves it, *sendable* the compiled\n"
"tuning.sendable, taking *plain_types*.");

static PyTypeObject BooksType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkafka.proxy._lane.Books",
    .tp_basicsize = sizeof(Books),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = books_doc,
    .tp_new = books_new,
    .tp_dealloc = (destructor)books_dealloc,
    .tp_traverse = (traverseproc)books_traverse,
    .tp_clear = (inquiry)books_clear,
    .tp_methods = books_methods,
    .tp_members = books_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lane",
    "The produce lane's bookkeeping, compiled (proxy/splice.py).", -1, NULL,
};

PyMODINIT_FUNC
PyInit__lane(void)
{
    struct { PyObject **to; const char *text; } names[] = {
        {&s_value, "value"}, {&s_sum, "sum"}, {&s_counts, "counts"}, {&s_held, "held"},
        {&s_transport, "transport"}, {&s_socket, "socket"},
        {&s_write_parts, "write_parts"},
        {&s_name, "name"}, {&s_memo, "memo"}, {&s_to_client, "to_client"},
        {&s_release, "release"}, {&s_room, "room"},
        {&s_lane_counters, "lane_counters"},
        {&s_responses_for, "responses_for"}, {&s_tokens, "tokens"},
        {&s_backpressure, "_backpressure"}, {&s_paused, "paused"},
        {&s_answered_unsent, "answered_unsent"}, {&s_memo_watch, "memo_watch"},
        {&s_streamed, "streamed"}, {&s_received, "received"}, {&s_limit, "limit"},
        {&s_chunks, "chunks"}, {&s_closed, "closed"}, {&s_scanned, "_scanned"},
        {&s_sent, "sent"}, {&s_outbox, "outbox"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].to = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    PyObject *tuning = PyImport_ImportModule("vkafka.tuning");
    PyObject *reads = tuning == NULL ? NULL : PyObject_GetAttrString(tuning, "SENDABLE_READS");
    Py_XDECREF(tuning);
    if (reads == NULL)
        return NULL;
    if (!PyTuple_Check(reads)) {
        Py_DECREF(reads);
        PyErr_SetString(PyExc_TypeError, "tuning.SENDABLE_READS is not a tuple");
        return NULL;
    }
    PyObject *with_socket = Py_BuildValue("(O)", s_socket);
    sendable_reads = with_socket == NULL ? NULL : PySequence_Concat(reads, with_socket);
    Py_DECREF(reads);
    Py_XDECREF(with_socket);
    if (sendable_reads == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(sendable_reads); i++)
        PyUnicode_InternInPlace(&PyTuple_GET_ITEM(sendable_reads, i));
    if ((one = PyLong_FromLong(1)) == NULL || (empty = PyTuple_New(0)) == NULL)
        return NULL;
    if (PyType_Ready(&BooksType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Books", (PyObject *)&BooksType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
