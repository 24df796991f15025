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

#define MAX_BOUNDS 64
#define MAX_SLOTS 32

/* The fields of a Pending set per request (the rest as __init__ leaves
 * them); the names of its slots, in this order, at Books's making. */
enum { CORRELATION_ID, API_VERSION, RULE, SENT, LANE, FIELDS };
static const char *const field_names[FIELDS] = {
    "correlation_id", "api_version", "rule", "sent", "lane"};

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
    PyObject *attrs, *calls; /* ((object, name, value), ...), ((f, arg, value), ...) */
    /* The compiled read of answers (``answers_read``), installed on the
     * broker connection, and what it is armed with: */
    PyObject *broker, *broker_fallback, *unsent, *client;
    int answers_armed;
    Py_ssize_t answers_whole;
    PyObject *answers_limit, *answers_metrics, *answers_outbox, *sequencer,
        *answers_attrs;
} Books;

enum { REQUESTS, BYTES_IN, RECORDS_IN, LATENCY, BYTES_OUT, ANSWERED };

static PyObject *s_value, *s_sum, *s_counts, *s_held, *s_transport, *s_socket,
    *s_write_parts, *s_lane, *s_local, *s_waiting, *s_sent, *s_rule, *s_name,
    *s_memo, *s_to_client, *s_release, *s_room, *s_lane_counters, *s_responses_for,
    *s_tokens, *s_backpressure, *s_paused, *s_answered_unsent, *one;

/* child.value += amount; -1 raised. */
static int
add(PyObject *child, PyObject *amount)
{
    PyObject *value = PyObject_GetAttr(child, s_value);
    if (value == NULL)
        return -1;
    PyObject *sum = PyNumber_Add(value, amount);
    Py_DECREF(value);
    if (sum == NULL)
        return -1;
    int failed = PyObject_SetAttr(child, s_value, sum);
    Py_DECREF(sum);
    return failed;
}

static int
add_ssize(PyObject *child, Py_ssize_t amount)
{
    PyObject *n = PyLong_FromSsize_t(amount);
    if (n == NULL)
        return -1;
    int failed = add(child, n);
    Py_DECREF(n);
    return failed;
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

/* *pieces* written to *outbox* (an Outbox) as its write_parts would: on
 * the socket at once when nothing is held or queued ahead of them, what it
 * does not take (and anything else) by write_parts itself; -1 raised. */
static int
send(Books *b, PyObject *outbox, PyObject *pieces)
{
    PyObject *held = PyObject_GetAttr(outbox, s_held);
    if (held == NULL)
        return -1;
    int is_held = PyObject_IsTrue(held);
    Py_DECREF(held);
    if (is_held < 0)
        return -1;
    PyObject *rest = Py_NewRef(pieces);
    if (!is_held) {
        PyObject *transport = PyObject_GetAttr(outbox, s_transport);
        if (transport == NULL)
            goto fail;
        PyObject *ask[2] = {transport, b->plain};
        PyObject *ok = PyObject_Vectorcall(b->sendable, ask, 2, NULL);
        PyObject *sock = NULL;
        if (ok == Py_True)
            sock = PyObject_GetAttr(transport, s_socket);
        Py_DECREF(transport);
        if (ok == NULL || (ok == Py_True && sock == NULL)) {
            Py_XDECREF(ok);
            goto fail;
        }
        Py_DECREF(ok);
        if (sock != NULL && (PyObject *)Py_TYPE(sock) == b->socket_type) {
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
        else
            Py_XDECREF(sock);
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
            failed = add(b->counters[REQUESTS], one) < 0 ||
                add(b->counters[BYTES_IN], f[5]) < 0 || records < 0 ||
                (records && add(b->counters[RECORDS_IN], f[4]) < 0);
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
        PyObject *its = PyObject_GetAttr(pending, s_lane), *local = NULL,
            *waiting = NULL;
        int takes = its != NULL && its != Py_None && (*lane == NULL || its == *lane) &&
            (local = PyObject_GetAttr(pending, s_local)) == Py_None &&
            (waiting = PyObject_GetAttr(pending, s_waiting)) != NULL;
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
    PyObject *counts = PyObject_GetAttr(latency, s_counts);
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
        PyObject *sent = PyObject_GetAttr(PyList_GET_ITEM(owed, i), s_sent);
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
        PyObject *total = PyObject_GetAttr(latency, s_sum), *more = NULL;
        if (total != NULL) {
            double sum = PyFloat_AsDouble(total);
            if (!(sum == -1.0 && PyErr_Occurred()))
                more = PyFloat_FromDouble(sum + seconds);
        }
        Py_XDECREF(total);
        int failed = more == NULL || PyObject_SetAttr(latency, s_sum, more) < 0;
        Py_XDECREF(more);
        if (failed)
            goto fail;
        int clean = PyLong_CheckExact(error) && PyLong_AsLong(error) == 0;
        if (clean) {
            if (add(b->counters[ANSWERED], one) < 0)
                goto fail;
        }
        else {
            PyObject *ask[3] = {metrics, b->api, error};
            PyObject *child = PyObject_VectorcallMethod(
                s_responses_for, ask, 3, NULL);
            failed = child == NULL || add(child, one) < 0;
            Py_XDECREF(child);
            if (failed)
                goto fail;
        }
    }
    Py_DECREF(counts);
    return add_ssize(b->counters[BYTES_OUT], size);
type:
    PyErr_SetString(PyExc_TypeError, "lane: an answer of three was expected");
fail:
    Py_DECREF(counts);
    return -1;
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
    if (head == NULL || (local = PyObject_GetAttr(head, s_local)) == NULL) {
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
        *sequencer = args[5], *result = NULL, *lane, *walked = NULL, *memo = NULL,
        *names = NULL;
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
    PyObject *to_client;
    if ((memo = PyObject_CallMethodNoArgs(lane, s_memo)) == NULL ||
            (names = PyObject_GetAttr(memo, s_to_client)) == NULL ||
            (to_client = PyObject_GetItem(names, Py_True)) == NULL)
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
        PyObject *rule = PyObject_GetAttr(PyList_GET_ITEM(owed, 0), s_rule);
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
    Py_XDECREF(memo);
    Py_XDECREF(names);
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
    Py_CLEAR(b->attrs);
    Py_CLEAR(b->calls);
}

/* Whether each (object, name, value) of *watched* still has
 * getattr(object, name) is value (*called*: each (f, arg, value) f(arg)
 * is value); -1 raised. */
static int
same_objects(PyObject *watched, int called)
{
    int same = 1;
    Py_INCREF(watched);  /* what it calls may arm anew, dropping it */
    for (Py_ssize_t i = 0; same == 1 && i < PyTuple_GET_SIZE(watched); i++) {
        PyObject *w = PyTuple_GET_ITEM(watched, i);
        PyObject *now = called ?
            PyObject_CallOneArg(PyTuple_GET_ITEM(w, 0), PyTuple_GET_ITEM(w, 1)) :
            PyObject_GetAttr(PyTuple_GET_ITEM(w, 0), PyTuple_GET_ITEM(w, 1));
        same = now == NULL ? -1 : now == PyTuple_GET_ITEM(w, 2);
        Py_XDECREF(now);
    }
    Py_DECREF(watched);
    return same;
}

/* Whether every watched attribute of *attrs* and call of *calls* (or
 * NULL) still gives the object armed with; -1 raised. */
static int
unchanged(PyObject *attrs, PyObject *calls)
{
    int same = same_objects(attrs, 0);
    return same == 1 && calls != NULL ? same_objects(calls, 1) : same;
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
    int same = unchanged(b->attrs, b->calls);
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

/* Whether *watches* is a tuple of 3-tuples, the middle one a str if
 * *named*; -1 raised otherwise. */
static int
watches(PyObject *watched, int named)
{
    Py_ssize_t n = PyTuple_GET_SIZE(watched);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *w = PyTuple_GET_ITEM(watched, i);
        if (!PyTuple_Check(w) || PyTuple_GET_SIZE(w) != 3 ||
                (named && !PyUnicode_Check(PyTuple_GET_ITEM(w, 1))) ||
                (!named && !PyCallable_Check(PyTuple_GET_ITEM(w, 0)))) {
            PyErr_SetString(PyExc_TypeError, named ?
                            "arm: attrs are (object, name, value) triples" :
                            "arm: calls are (callable, argument, value) triples");
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(arm_doc,
"arm(args, limit, rule, namespace, metrics, outbox, share, share_waiting,\n"
"    expires_at, attrs, calls)\n\n"
"Let read send what the lane takes whole with forward's arguments, while\n"
"every (object, name, value) of *attrs* still has getattr(object, name)\n"
"is value, every (f, arg, value) of *calls* f(arg) is value, the loop\n"
"*share* (or None; *share_waiting* its deque) is not in debt and the\n"
"clock is before *expires_at*.");

static PyObject *
arm(Books *b, PyObject *args)
{
    PyObject *walk_args, *limit, *rule, *namespace, *metrics, *outbox, *share,
        *share_waiting, *attrs, *calls;
    double expires_at;
    if (!PyArg_ParseTuple(args, "OOOOOOOOdO!O!:arm", &walk_args, &limit, &rule,
                          &namespace, &metrics, &outbox, &share, &share_waiting,
                          &expires_at, &PyTuple_Type, &attrs, &PyTuple_Type, &calls))
        return NULL;
    if (b->conn == NULL) {
        PyErr_SetString(PyExc_TypeError, "arm: Books not installed on a connection");
        return NULL;
    }
    if (watches(attrs, 1) < 0 || watches(calls, 0) < 0)
        return NULL;
    disarm(b);
    b->args = Py_NewRef(walk_args);
    b->limit = Py_NewRef(limit);
    b->rule = Py_NewRef(rule);
    b->namespace = Py_NewRef(namespace);
    b->out_metrics = Py_NewRef(metrics);
    b->outbox = Py_NewRef(outbox);
    b->share = Py_NewRef(share);
    b->share_waiting = Py_NewRef(share_waiting);
    b->expires_at = expires_at;
    b->attrs = Py_NewRef(attrs);
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
    Py_CLEAR(b->answers_attrs);
}

PyDoc_STRVAR(answers_read_doc,
"answers_read(data)\n\n"
"The installed broker connection's dataReceived: while armed, *data* sent\n"
"as answer sends a read of answers the lane takes whole; else (or when\n"
"not taken whole, nothing done) disarmed and given to the broker\n"
"connection's Python dataReceived.");

static PyObject *
answers_read(Books *b, PyObject *data)
{
    if (b->broker == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "answers_read: Books not installed on a broker connection");
        return NULL;
    }
    if (b->answers_armed) {
        int go = unchanged(b->answers_attrs, NULL);
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
                PyObject *paused = PyObject_GetAttr(b->unsent, s_paused);
                int full = paused == NULL ? -1 : PyObject_IsTrue(paused);
                Py_XDECREF(paused);
                if (full < 0)
                    return NULL;
                if (!full)
                    Py_RETURN_NONE;
                return PyObject_CallMethodNoArgs(b->client, s_answered_unsent);
            }
            Py_DECREF(walked);
        }
    }
    disarm_answers(b);
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
    if (watches(attrs, 1) < 0)
        return NULL;
    disarm_answers(b);
    b->answers_limit = Py_NewRef(limit);
    b->answers_metrics = Py_NewRef(metrics);
    b->answers_outbox = Py_NewRef(outbox);
    b->sequencer = Py_NewRef(sequencer);
    b->answers_attrs = Py_NewRef(attrs);
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
                    "with correlation_id, api_version, rule, sent and lane");
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
    Py_VISIT(b->attrs);
    Py_VISIT(b->calls);
    Py_VISIT(b->broker);
    Py_VISIT(b->broker_fallback);
    Py_VISIT(b->unsent);
    Py_VISIT(b->client);
    Py_VISIT(b->answers_limit);
    Py_VISIT(b->answers_metrics);
    Py_VISIT(b->answers_outbox);
    Py_VISIT(b->sequencer);
    Py_VISIT(b->answers_attrs);
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
        {&s_write_parts, "write_parts"}, {&s_lane, "lane"}, {&s_local, "local"},
        {&s_waiting, "waiting"}, {&s_sent, "sent"}, {&s_rule, "rule"},
        {&s_name, "name"}, {&s_memo, "memo"}, {&s_to_client, "to_client"},
        {&s_release, "release"}, {&s_room, "room"},
        {&s_lane_counters, "lane_counters"},
        {&s_responses_for, "responses_for"}, {&s_tokens, "tokens"},
        {&s_backpressure, "_backpressure"}, {&s_paused, "paused"},
        {&s_answered_unsent, "answered_unsent"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].to = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    if ((one = PyLong_FromLong(1)) == NULL)
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
