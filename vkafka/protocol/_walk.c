/*
 * The produce path's two walks by lengths, a consumer's Fetch request's
 * (fetch_request, below) and the scan of a streamed Fetch answer (FetchScan),
 * compiled (issue 24).
 *
 * Every Produce request and its answer are walked field by field to find the
 * few bytes the tenant rewrite touches (topic names or ids, the transactional
 * id) and what the metrics want (acks, records, the first error).  In Python
 * that walk is a third of the gateway's own work per request; here it is a
 * loop over a buffer.  It decides nothing: it returns where the fields are,
 * and produce.py / fastpath.py decide what to do with them, exactly as their
 * Python walks (kept as the reference, and used when this module is not
 * built) do.  Both are run side by side on every cut and poke of a request
 * and an answer in tests/test_walk.py.
 *
 * Hostile bytes: every read is bounds-checked; a position only grows, by at
 * most 2**35 a step, in walks capped at MAX_ENTRIES entries, so 64-bit
 * positions cannot overflow.  Errors raise headers.HeaderError, as the Python
 * walks do (or struct.error, which callers catch alike); fetch_request
 * instead declines (None) all but the plain request, and the Python walks
 * decide the rest.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#define MAX_ENTRIES 100000  /* headers.MAX_ENTRIES */
#define BATCH_HEADER 61     /* records.HEADER */

static PyObject *header_error = NULL;
static PyObject *api_version_name = NULL, *correlation_id_name = NULL;

typedef struct {
    const unsigned char *b;
    int64_t n;
} Buf;

static int
fail(const char *message)
{
    PyErr_SetString(header_error, message);
    return -1;
}

static int32_t
be32(const unsigned char *q)
{
    return (int32_t)((uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 |
                     (uint32_t)q[2] << 8 | (uint32_t)q[3]);
}

static int16_t
be16(const unsigned char *q)
{
    return (int16_t)((uint16_t)q[0] << 8 | q[1]);
}

/* The four bytes that announce a frame of *size* bytes (framing.size_prefix),
 * as a new bytes object. */
static PyObject *
size_prefix(int64_t size)
{
    unsigned char prefix[4] = {(unsigned char)(size >> 24), (unsigned char)(size >> 16),
                               (unsigned char)(size >> 8), (unsigned char)size};
    return PyBytes_FromStringAndSize((const char *)prefix, 4);
}

/* The frame whose size prefix is at *at* of the read *r*: 1 and *f* its
 * payload when it is whole in *r* and at most *limit* bytes (FrameDecoder's
 * checks), else 0. */
static int
whole_frame(const Buf *r, Py_ssize_t at, Py_ssize_t limit, Buf *f)
{
    if (at + 4 > r->n)
        return 0;
    int64_t size = (int32_t)be32(r->b + at);
    if (size < 0 || size > limit || size > r->n - at - 4)
        return 0;
    f->b = r->b + at + 4;
    f->n = (Py_ssize_t)size;
    return 1;
}

static int
int16_at(const Buf *f, int64_t p, int64_t *out)
{
    if (p + 2 > f->n)
        return fail("truncated int16");
    *out = be16(f->b + p);
    return 0;
}

static int
int32_at(const Buf *f, int64_t p, int64_t *out)
{
    if (p + 4 > f->n)
        return fail("truncated int32");
    *out = be32(f->b + p);
    return 0;
}

/* headers.read_uvarint: at most five bytes (32-bit lengths). */
static int
uvarint(const Buf *f, int64_t *pos, int64_t *out)
{
    int64_t p = *pos, value = 0;
    int shift = 0;
    for (;;) {
        if (p >= f->n)
            return fail("truncated varint");
        unsigned char byte = f->b[p++];
        value |= (int64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *pos = p;
            *out = value;
            return 0;
        }
        shift += 7;
        if (shift > 28)
            return fail("varint too long");
    }
}

/* headers.read_length: compact (uvarint - 1) or int32; -1 is null. */
static int
length(const Buf *f, int64_t *pos, int flexible, int64_t *out)
{
    if (flexible) {
        if (uvarint(f, pos, out))
            return -1;
        *out -= 1;
        return 0;
    }
    if (int32_at(f, *pos, out))
        return -1;
    *pos += 4;
    return 0;
}

/* headers.skip_string */
static int
skip_string(const Buf *f, int64_t *pos, int flexible)
{
    int64_t size;
    if (flexible) {
        if (uvarint(f, pos, &size))
            return -1;
        *pos += size > 1 ? size - 1 : 0;
        return 0;
    }
    if (int16_at(f, *pos, &size))
        return -1;
    *pos += 2 + (size > 0 ? size : 0);
    return 0;
}

/* headers.skip_tagged_fields */
static int
skip_tags(const Buf *f, int64_t *pos)
{
    int64_t p = *pos, count, tag, size;
    if (p < f->n && f->b[p] == 0) {
        *pos = p + 1;
        return 0;
    }
    if (uvarint(f, &p, &count))
        return -1;
    for (int64_t i = 0; i < count; i++) {
        if (uvarint(f, &p, &tag) || uvarint(f, &p, &size))
            return -1;
        p += size;
        if (p > f->n)
            return fail("truncated tagged field");
    }
    *pos = p;
    return 0;
}

/* headers.walkable */
static int
walkable(int64_t *budget, int64_t count)
{
    if (count > *budget)
        return fail("produce request: over 100000 topics and partitions");
    *budget -= count > 0 ? count : 0;
    return 0;
}

static int append_span(PyObject *list, int64_t start, int64_t end);

/* records.walk_batches: the records of the whole v2 batches in [pos, end)
 * that end by limit; with noted, the batches' producer id is noted in
 * noted[0] (produce._noted: -1 none, -2 several) and the (start, end) of
 * the compressed ones appended to *spans (a list made at the first);
 * -1 if that fails. */
static int64_t
batches(const Buf *f, int64_t pos, int64_t end, int64_t limit, int64_t *noted,
        PyObject **spans)
{
    int64_t records = 0;
    while (end - pos >= BATCH_HEADER) {
        int64_t size = be32(f->b + pos + 8);
        int64_t after = pos + 12 + size;
        if (size < 49 || after > limit || f->b[pos + 16] != 2)
            break;
        int64_t count = be32(f->b + pos + 57);
        if (count > 0)
            records += count;
        if (noted != NULL) {
            const unsigned char *b = f->b + pos + 43;
            int64_t id = (int64_t)(((uint64_t)be32(b) << 32) | (uint32_t)be32(b + 4));
            if (id >= 0 && noted[0] != id)
                noted[0] = noted[0] == -1 ? id : -2;
            if (f->b[pos + 22] & 7) {  /* the attributes' codec */
                if (*spans == NULL && (*spans = PyList_New(0)) == NULL)
                    return -1;
                if (append_span(*spans, pos, after))
                    return -1;
            }
        }
        pos = after;
    }
    return records;
}

/* One topic's partitions in a Produce request (produce._partitions), its
 * name or id field at [field, after): noted as walk_request says. */
static int
request_partitions(const Buf *f, int64_t *pos, int flexible, int64_t *budget,
                   int64_t *records, int64_t *noted, PyObject **spans,
                   int64_t field, int64_t after)
{
    int64_t p = *pos, partitions, size;
    if (length(f, &p, flexible, &partitions) || walkable(budget, partitions))
        return -1;
    for (int64_t i = 0; i < partitions; i++) {
        int64_t index = p;
        p += 4;  /* the partition index */
        if (!flexible) {
            if (int32_at(f, p, &size))
                return -1;
            p += 4;
        } else if (p < f->n && f->b[p] < 0x80) {
            size = (int64_t)f->b[p] - 1;
            p += 1;
        } else if (length(f, &p, 1, &size)) {
            return -1;
        }
        if (size < 0)  /* produce._partitions: a broker fails on them */
            return fail("produce request: null records");
        if (size >= BATCH_HEADER && p + BATCH_HEADER <= f->n && f->b[p + 16] == 2 &&
                (f->b[p + 22] & 0x10)) {  /* a transactional first batch */
            PyObject *item = Py_BuildValue("(LLLL)", (long long)field, (long long)after,
                                           (long long)be32(f->b + index), (long long)p);
            if (item == NULL)
                return -1;
            if (spans[1] == NULL && (spans[1] = PyList_New(0)) == NULL) {
                Py_DECREF(item);
                return -1;
            }
            int failed = PyList_Append(spans[1], item);
            Py_DECREF(item);
            if (failed)
                return -1;
        }
        if (size > 0) {
            int64_t stop = p + size;
            int64_t found = batches(f, p, stop < f->n ? stop : f->n, stop, noted,
                                    &spans[0]);
            if (found < 0)
                return -1;
            *records += found;
            p = stop;
        }
        if (flexible) {
            if (p < f->n && f->b[p] == 0)
                p += 1;
            else if (skip_tags(f, &p))
                return -1;
        }
    }
    if (flexible && skip_tags(f, &p))
        return -1;
    if (p > f->n)
        return fail("truncated produce request");
    *pos = p;
    return 0;
}

/* A tuple of the *n* new references *items*, taken over even on failure
 * (then NULL, raised, when one of them is NULL or the tuple cannot be
 * made): what Py_BuildValue makes, without parsing a format each call. */
static PyObject *
tuple_taking(Py_ssize_t n, PyObject **items)
{
    PyObject *tuple = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (items[i] == NULL)
            goto failed;
    if ((tuple = PyTuple_New(n)) == NULL)
        goto failed;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(tuple, i, items[i]);
    return tuple;
failed:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

static int
append_int(PyObject *list, int64_t value)
{
    PyObject *item = PyLong_FromLongLong(value);
    if (item == NULL)
        return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

static int
append_span(PyObject *list, int64_t start, int64_t end)
{
    PyObject *items[2] = {PyLong_FromLongLong(start), PyLong_FromLongLong(end)};
    PyObject *item = tuple_taking(2, items);
    if (item == NULL)
        return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

static int
walk_request(const Buf *f, int64_t p, int flexible, int by_id, PyObject *fields,
             int64_t out[6], PyObject *spans[2])
{
    int64_t acks, topics, records = 0, budget = MAX_ENTRIES;
    if (p < 0)
        return fail("negative body offset");
    if (skip_string(f, &p, flexible))  /* the transactional id */
        return -1;
    out[2] = p;
    out[4] = -1;  /* no producer id yet */
    if (int16_at(f, p, &acks))
        return -1;
    p += 6;  /* acks, timeout */
    if (length(f, &p, flexible, &topics) || walkable(&budget, topics))
        return -1;
    for (int64_t t = 0; t < topics; t++) {
        int64_t start = p;
        if (by_id) {
            if (p + 16 > f->n)
                return fail("truncated topic id");
            p += 16;
        } else {
            if (skip_string(f, &p, flexible))
                return -1;
            if (p > f->n)
                return fail("truncated topic name");
        }
        if (append_span(fields, start, p))
            return -1;
        if (request_partitions(f, &p, flexible, &budget, &records, &out[4], spans,
                               start, p))
            return -1;
    }
    if (flexible && skip_tags(f, &p))
        return -1;
    if (p > f->n)
        return fail("truncated produce request");
    out[0] = acks;
    out[1] = records;
    out[3] = p;
    out[5] = MAX_ENTRIES - budget - (topics > 0 ? topics : 0);  /* partitions */
    return 0;
}

PyDoc_STRVAR(produce_request_doc,
"produce_request(frame, body_offset, flexible, by_id)\n"
"-> (acks, records, end of the transactional id, [(start, end) of each topic's\n"
"name or id field], end of the request, producer id, [(start, end) of each\n"
"compressed batch] or None, [(start, end) of the topic field, partition index,\n"
"start of the batch) of each partition whose first batch is transactional]\n"
"or None, partitions named in all)\n\n"
"The walk of produce.walk_request_py, compiled.");

static PyObject *
produce_request(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t offset;
    int flexible, by_id;
    if (!PyArg_ParseTuple(args, "y*npp", &view, &offset, &flexible, &by_id))
        return NULL;
    Buf f = {view.buf, view.len};
    int64_t out[6];
    PyObject *fields = PyList_New(0);
    PyObject *spans[2] = {NULL, NULL};
    PyObject *result = NULL;
    if (fields != NULL &&
            walk_request(&f, offset, flexible, by_id, fields, out, spans) == 0)
        result = Py_BuildValue("(LLLOLLOOL)", (long long)out[0], (long long)out[1],
                               (long long)out[2], fields, (long long)out[3],
                               (long long)out[4], spans[0] == NULL ? Py_None : spans[0],
                               spans[1] == NULL ? Py_None : spans[1], (long long)out[5]);
    Py_XDECREF(fields);
    Py_XDECREF(spans[0]);
    Py_XDECREF(spans[1]);
    PyBuffer_Release(&view);
    return result;
}

/* fastpath.fetch_request_walk's plain case: a Fetch request v13+ (ids)
 * with no tagged field anywhere, no partition named twice and at most
 * PLAIN_FETCH_PAIRS partitions, whole to its last byte, as consumers send
 * nearly every one.  1 and *out* (replica, named, session id, epoch and
 * its position) with the topic ids' positions appended to *ids*; 0 for any
 * other request, malformed or not, which the Python walk then decides
 * (raising what it raises); -1 raised (memory). */
#define PLAIN_FETCH_PAIRS 256

/* 0 (declined), the error a read past the end raised cleared */
static int
clear_declined(void)
{
    PyErr_Clear();
    return 0;
}

static int
plain_fetch(const Buf *f, int64_t p, int version, PyObject *ids, int64_t *out)
{
    int64_t replica = -1, named = 0, budget = MAX_ENTRIES, topics, parts, forgotten, n;
    int64_t pairs[PLAIN_FETCH_PAIRS][2];  /* (id position, partition) */
    int npairs = 0;
    if (p < 0 || p > f->n)
        return 0;
    if (version <= 14) {
        if (p + 4 > f->n)
            return 0;
        replica = be32(f->b + p);
        p += 4;
    }
    int64_t session_at = p + 13;  /* max wait, min and max bytes, isolation */
    p = session_at + 8;
    if (p > f->n || uvarint(f, &p, &topics))
        return clear_declined();
    /* each count as headers.walkable spends it; null (0) is refused there */
    if (topics < 1 || (topics -= 1) > PLAIN_FETCH_PAIRS || walkable(&budget, topics))
        return clear_declined();
    for (; topics > 0; topics--) {
        int64_t at = p;
        p += 16;
        if (p > f->n || uvarint(f, &p, &parts) || parts < 1 ||
                (parts -= 1) > PLAIN_FETCH_PAIRS || walkable(&budget, parts))
            return clear_declined();
        for (; parts > 0; parts--) {
            if (p + 33 > f->n || f->b[p + 32] != 0 || npairs == PLAIN_FETCH_PAIRS)
                return 0;
            int64_t partition = be32(f->b + p);
            for (int i = 0; i < npairs; i++)
                if (pairs[i][1] == partition &&
                        !memcmp(f->b + pairs[i][0], f->b + at, 16))
                    return 0;  /* named twice: the Python walk refuses it */
            pairs[npairs][0] = at;
            pairs[npairs++][1] = partition;
            named++;
            p += 33;  /* partition, leader epoch, offset, last epoch, log start,
                         max bytes, no tags */
        }
        if (p >= f->n || f->b[p] != 0)
            return 0;
        p += 1;
        if (append_int(ids, at))
            return -1;
    }
    if (uvarint(f, &p, &forgotten) || forgotten < 1 ||
            (forgotten -= 1) > PLAIN_FETCH_PAIRS || walkable(&budget, forgotten))
        return clear_declined();
    for (; forgotten > 0; forgotten--) {
        int64_t at = p;
        p += 16;
        if (p > f->n || uvarint(f, &p, &n) || n < 1 || n - 1 > PLAIN_FETCH_PAIRS)
            return clear_declined();
        named += n - 1;
        p += 4 * (n - 1);
        if (p >= f->n || f->b[p] != 0)
            return 0;
        p += 1;
        if (append_int(ids, at))
            return -1;
    }
    if (skip_string(f, &p, 1))  /* rack id */
        return clear_declined();
    if (p + 1 != f->n || f->b[p] != 0)  /* no top-level tags, nothing after */
        return 0;
    out[0] = replica;
    out[1] = named;
    out[2] = be32(f->b + session_at);
    out[3] = be32(f->b + session_at + 4);
    out[4] = session_at;
    return 1;
}

PyDoc_STRVAR(fetch_request_doc,
"fetch_request(frame, offset, version) -> (replica, [topic id positions],\n"
"partitions named, session id, session epoch, position of the session id)\n"
"or None\n\n"
"fastpath.fetch_request_walk for a Fetch request v13+ as consumers send\n"
"them (no tagged field, no partition named twice, at most 256 partitions):\n"
"None for any other, which the Python walk decides.");

static PyObject *
fetch_request(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t offset;
    int version;
    if (!PyArg_ParseTuple(args, "y*ni", &view, &offset, &version))
        return NULL;
    Buf f = {view.buf, view.len};
    int64_t out[5];
    PyObject *ids = PyList_New(0), *result = NULL;
    int found = ids == NULL ? -1 : version < 13 ? 0 : plain_fetch(&f, offset, version, ids, out);
    if (found == 1)
        result = Py_BuildValue("(LOLLLL)", (long long)out[0], ids, (long long)out[1],
                               (long long)out[2], (long long)out[3], (long long)out[4]);
    else if (found == 0)
        result = Py_NewRef(Py_None);
    Py_XDECREF(ids);
    PyBuffer_Release(&view);
    return result;
}

/* What the name field *key* (bytes; a reference taken) becomes by *names*
 * (*to*, borrowed): 1 found, 0 not there (or not bytes), -1 raised. */
static int
renamed(PyObject *names, PyObject *key, PyObject **to)
{
    if (key == NULL)
        return -1;
    *to = PyDict_GetItemWithError(names, key);
    Py_DECREF(key);
    if (*to == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return PyBytes_Check(*to) ? 1 : 0;
}

PyDoc_STRVAR(produce_lane_doc,
"produce_lane(frame, (low, high, given, field, names, ids, producer,\n"
"              max_topics, max_partitions, append_bytes))\n"
"-> (pieces to send, correlation id, version, acks, records, counted), or None\n\n"
"A tenant's Produce request as nearly all are, in one call (filters/lane.py):\n"
"v9-v13 within low..high, its client id field *given* (sent as *field*), no\n"
"header tags, no transactional id, no compressed or transactional batch, a\n"
"producer id of -1 or *producer* (None: any), no topic named twice, at most\n"
"*max_topics* and *max_partitions*, none beyond one per *append_bytes* of\n"
"the request but the first, nothing after its end, each topic's name field a key of\n"
"*names* (v9-v12, sent as its value) or its id in *ids* (v13).  The pieces\n"
"are the size prefix, the header and slices of *frame* between the fields\n"
"renamed.  *counted*: its bytes as the metrics count a forwarded request\n"
"(renamed, the prefix included, the client id as the client sent it).\n"
"None for anything else, malformed bytes included: the rule table's path\n"
"decides those (and raises where it must).");

/* What a connection's requests are checked against (produce_lane's
 * arguments but the frame and the limit). */
typedef struct {
    int low, high;
    PyObject *given, *field, *names, *ids, *producer;
    Py_ssize_t max_topics, max_partitions, append_bytes;
} Lane;

/* The bytes objects of the list *pieces* joined into a new bytes object
 * (b"".join, without looking up and calling the method). */
static PyObject *
joined_bytes(PyObject *pieces)
{
    Py_ssize_t total = 0, n = PyList_GET_SIZE(pieces);
    for (Py_ssize_t i = 0; i < n; i++)
        total += PyBytes_GET_SIZE(PyList_GET_ITEM(pieces, i));
    PyObject *joined = PyBytes_FromStringAndSize(NULL, total);
    if (joined == NULL)
        return NULL;
    char *to = PyBytes_AS_STRING(joined);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *piece = PyList_GET_ITEM(pieces, i);
        memcpy(to, PyBytes_AS_STRING(piece), (size_t)PyBytes_GET_SIZE(piece));
        to += PyBytes_GET_SIZE(piece);
    }
    return joined;
}

/* A Py_ssize_t from *item*, an int; -1 and raised otherwise (as "n" would). */
static int
ssize_from(PyObject *item, Py_ssize_t *to)
{
    if (!PyLong_Check(item)) {
        PyErr_SetString(PyExc_TypeError, "lane: an int was expected");
        return -1;
    }
    *to = PyLong_AsSsize_t(item);
    return *to == -1 && PyErr_Occurred() ? -1 : 0;
}

/* *args* (lane.lane_args: a tuple of ten) into *lane*, borrowed; read by
 * position rather than by a format string, which cost more than the walk
 * of a small request. */
static int
lane_args(PyObject *args, Lane *lane)
{
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) != 10) {
        PyErr_SetString(PyExc_TypeError, "lane: a tuple of ten was expected");
        return -1;
    }
    PyObject **item = &PyTuple_GET_ITEM(args, 0);
    Py_ssize_t low, high;
    lane->given = item[2];
    lane->field = item[3];
    lane->names = item[4];
    lane->ids = item[5];
    lane->producer = item[6];
    if (ssize_from(item[0], &low) < 0 || ssize_from(item[1], &high) < 0 ||
            ssize_from(item[7], &lane->max_topics) < 0 ||
            ssize_from(item[8], &lane->max_partitions) < 0 ||
            ssize_from(item[9], &lane->append_bytes) < 0)
        return -1;
    if (!PyBytes_Check(lane->given) || !PyBytes_Check(lane->field) ||
            !PyDict_Check(lane->names) || !PySet_Check(lane->ids)) {
        PyErr_SetString(PyExc_TypeError,
                        "lane: (int, int, bytes, bytes, dict, set, ...) was expected");
        return -1;
    }
    if (low < INT32_MIN || low > INT32_MAX || high < INT32_MIN || high > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "lane: a version out of range");
        return -1;
    }
    lane->low = (int)low;
    lane->high = (int)high;
    if (lane->append_bytes <= 0) {
        PyErr_SetString(PyExc_ValueError, "append_bytes must be positive");
        return -1;
    }
    return 0;
}

/* The *n* positional arguments of a METH_FASTCALL function are what it takes
 * (0), else -1 and raised. */
static int
arguments(const char *name, Py_ssize_t nargs, Py_ssize_t n)
{
    if (nargs == n)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, n, nargs);
    return -1;
}

/* The Produce whose payload is *f*, at byte *base* of *whole* (a memoryview
 * its pieces are sliced from): (pieces, correlation id, version, acks,
 * records) and, when *framed* >= 0, *framed* (its size with the prefix);
 * Py_None when the lane declines it, NULL when raised. */
static PyObject *
lane_one(const Lane *lane, Buf f, PyObject *whole, Py_ssize_t base, Py_ssize_t framed)
{
    PyObject *fields = NULL, *seen = NULL, *pieces = NULL;
    PyObject *spans[2] = {NULL, NULL}, *result = NULL;
    int64_t out[6];
    Py_ssize_t glen = PyBytes_GET_SIZE(lane->given);
    int64_t end = 8 + (int64_t)glen, body = end + 1;
    if (f.n < 8 || be16(f.b) != 0)
        goto decline;
    int version = be16(f.b + 2);
    if (version < 9 || version > 13 || version < lane->low || version > lane->high ||
            glen < 2 || body >= f.n ||
            memcmp(f.b + 8, PyBytes_AS_STRING(lane->given), (size_t)glen) != 0 ||
            f.b[end] != 0 || f.b[body] != 0)  /* header tags, transactional id */
        goto decline;
    if ((fields = PyList_New(0)) == NULL)
        goto done;
    if (walk_request(&f, body, 1, version >= 13, fields, out, spans) < 0) {
        PyErr_Clear();
        goto decline;
    }
    if (spans[0] != NULL || spans[1] != NULL || out[3] != f.n ||
            out[5] > lane->max_partitions ||
            out[5] - 1 - f.n / lane->append_bytes > 0 ||
            PyList_GET_SIZE(fields) > lane->max_topics)
        goto decline;
    if (out[4] != -1 && lane->producer != Py_None) {
        long long known = PyLong_AsLongLong(lane->producer);
        if (known == -1 && PyErr_Occurred())
            goto done;
        if (known != out[4])
            goto decline;
    }
    if ((seen = PySet_New(NULL)) == NULL || (pieces = PyList_New(2)) == NULL)
        goto done;
    Py_ssize_t flen = PyBytes_GET_SIZE(lane->field);
    int64_t size = f.n - glen + flen, copied = end;
    PyObject *header = PyBytes_FromStringAndSize(NULL, 8 + flen);
    if (header == NULL)
        goto done;
    memcpy(PyBytes_AS_STRING(header), f.b, 8);
    memcpy(PyBytes_AS_STRING(header) + 8, PyBytes_AS_STRING(lane->field), (size_t)flen);
    PyList_SET_ITEM(pieces, 1, header);
    for (Py_ssize_t t = 0; t < PyList_GET_SIZE(fields); t++) {
        PyObject *span = PyList_GET_ITEM(fields, t);  /* append_span's */
        long long start = PyLong_AsLongLong(PyTuple_GET_ITEM(span, 0));
        long long stop = PyLong_AsLongLong(PyTuple_GET_ITEM(span, 1));
        if (PyErr_Occurred())
            goto done;
        PyObject *key = PyBytes_FromStringAndSize((const char *)f.b + start,
                                                  (Py_ssize_t)(stop - start));
        if (key == NULL)
            goto done;
        int twice = PySet_Contains(seen, key);
        if (twice != 0 || PySet_Add(seen, key) < 0) {
            Py_DECREF(key);
            if (twice < 0)
                goto done;
            goto decline;  /* named twice: the rule table's path refuses it */
        }
        if (version >= 13) {
            int own = PySet_Contains(lane->ids, key);
            Py_DECREF(key);
            if (own < 0)
                goto done;
            if (!own)
                goto decline;
            continue;
        }
        PyObject *to;
        int found = renamed(lane->names, key, &to);
        if (found < 0)
            goto done;
        if (!found)
            goto decline;
        PyObject *before = PySequence_GetSlice(whole, base + (Py_ssize_t)copied,
                                               base + (Py_ssize_t)start);
        int failed = before == NULL || PyList_Append(pieces, before) < 0 ||
                     PyList_Append(pieces, to) < 0;
        Py_XDECREF(before);
        if (failed)
            goto done;
        size += PyBytes_GET_SIZE(to) - (stop - start);
        copied = stop;
    }
    PyObject *rest = PySequence_GetSlice(whole, base + (Py_ssize_t)copied,
                                         base + (Py_ssize_t)f.n);
    if (rest == NULL || PyList_Append(pieces, rest) < 0) {
        Py_XDECREF(rest);
        goto done;
    }
    Py_DECREF(rest);
    if (size > INT32_MAX)
        goto decline;
    PyObject *sized = size_prefix(size);
    if (sized == NULL)
        goto done;
    PyList_SET_ITEM(pieces, 0, sized);
    PyObject *tuple = PyList_AsTuple(pieces);
    if (tuple == NULL)
        goto done;
    /* counted as the rule table's path counts a request it forwards: its
     * names renamed, its client id as the client sent it, the prefix */
    int64_t counted = size - flen + glen + 4;
    PyObject *items[7] = {tuple, PyLong_FromLong((long)be32(f.b + 4)),
                          PyLong_FromLong(version), PyLong_FromLongLong(out[0]),
                          PyLong_FromLongLong(out[1]), PyLong_FromLongLong(counted),
                          framed < 0 ? NULL : PyLong_FromSsize_t(framed)};
    result = tuple_taking(framed < 0 ? 6 : 7, items);
    goto done;
decline:
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(fields);
    Py_XDECREF(spans[0]);
    Py_XDECREF(spans[1]);
    Py_XDECREF(seen);
    Py_XDECREF(pieces);
    return result;
}

static PyObject *
produce_lane(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *frame, *whole;
    Lane lane;
    if (arguments("produce_lane", nargs, 2) < 0 || lane_args(args[1], &lane) < 0)
        return NULL;
    frame = args[0];
    Py_buffer view;
    if (PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Buf f = {view.buf, view.len};
    PyObject *result = NULL;
    if ((whole = PyMemoryView_FromObject(frame)) != NULL) {
        result = lane_one(&lane, f, whole, 0, -1);
        Py_DECREF(whole);
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(produce_lane_many_doc,
"produce_lane_many(read, (low, high, ..., append_bytes), limit, max_frames)\n"
"-> ([(pieces, correlation id, version, acks, records, counted, size), ...],\n"
"    end)\n\n"
"The Produce requests of *read* (frames with their size prefixes) from its\n"
"start, each as produce_lane takes it (*size*: its bytes with the prefix),\n"
"while each is whole, its size at most *limit*, the lane takes it and there\n"
"are at most *max_frames*; *end*: where the first not taken starts.  One\n"
"call per read: a pipelining producer's read holds several.");

/* What takes one frame of a read, the *index*-th taken (lane_take,
 * answer_take): its result for the payload *f* at byte *base* of *read*
 * (*view*: a memoryview of *read*, made by the first that needs one),
 * Py_None when not taken, NULL when raised. */
typedef PyObject *(*take_frame)(void *how, Buf f, PyObject *read, Py_ssize_t base,
                                Py_ssize_t index, PyObject **view);

/* The frames of *read* from its start taken by *take*, while each is whole,
 * at most *limit* bytes, taken, and no more than *most*:
 * ([result, ...], where the first not taken starts). */
static PyObject *
frames_while(PyObject *read, Py_ssize_t limit, Py_ssize_t most, take_frame take,
             void *how)
{
    Py_buffer buffer;
    if (PyObject_GetBuffer(read, &buffer, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t at = 0;
    PyObject *taken = PyList_New(0), *view = NULL, *result = NULL;
    if (taken == NULL)
        goto done;
    Buf r = {buffer.buf, buffer.len}, f;
    while (PyList_GET_SIZE(taken) < most && whole_frame(&r, at, limit, &f)) {
        PyObject *one = take(how, f, read, at + 4, PyList_GET_SIZE(taken), &view);
        if (one == NULL)
            goto done;
        if (one == Py_None) {
            Py_DECREF(one);
            break;
        }
        int failed = PyList_Append(taken, one) < 0;
        Py_DECREF(one);
        if (failed)
            goto done;
        at += f.n + 4;
    }
    PyObject *items[2] = {Py_NewRef(taken), PyLong_FromSsize_t(at)};
    result = tuple_taking(2, items);
done:
    Py_XDECREF(taken);
    Py_XDECREF(view);
    PyBuffer_Release(&buffer);
    return result;
}

static PyObject *
lane_take(void *how, Buf f, PyObject *read, Py_ssize_t base, Py_ssize_t index,
          PyObject **view)
{
    if (*view == NULL && (*view = PyMemoryView_FromObject(read)) == NULL)
        return NULL;
    return lane_one((const Lane *)how, f, *view, base, f.n + 4);
}

static PyObject *
produce_lane_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit, max_frames;
    Lane lane;
    if (arguments("produce_lane_many", nargs, 4) < 0 || lane_args(args[1], &lane) < 0 ||
            ssize_from(args[2], &limit) < 0 || ssize_from(args[3], &max_frames) < 0)
        return NULL;
    return frames_while(args[0], limit, max_frames, lane_take, &lane);
}

/* One topic's partitions in a Produce response (fastpath._produce_partitions):
 * 1 clean, 0 not clean (a record error or a message), -1 raised. */
static int
response_partitions(const Buf *f, int64_t *pos, int version, int flexible,
                    int64_t *first)
{
    int64_t p = *pos, partitions, record_errors, message;
    int64_t width = version >= 5 ? 30 : 22;
    char why[96];
    *first = 0;
    if (length(f, &p, flexible, &partitions))
        return -1;
    if (partitions * width > f->n - p) {
        PyOS_snprintf(why, sizeof why, "produce response: %lld partitions in %lld bytes",
                      (long long)partitions, (long long)(f->n - p));
        return fail(why);
    }
    for (int64_t i = 0; i < partitions; i++) {
        if (*first == 0 && int16_at(f, p + 4, first))
            return -1;
        p += width;  /* index, error, base offset, append time, log start */
        if (flexible && version >= 8 && p + 3 <= f->n && f->b[p] == 1 &&
                f->b[p + 1] == 0 && f->b[p + 2] == 0) {
            p += 3;  /* no record errors, a null message, no tagged fields */
            continue;
        }
        if (version >= 8) {
            if (length(f, &p, flexible, &record_errors))
                return -1;
            if (p >= f->n)
                return fail("truncated produce response");
            if (flexible)
                message = f->b[p] == 0 ? -1 : 0;
            else if (int16_at(f, p, &message))
                return -1;
            if (record_errors > 0 || message != -1)
                return 0;
            p += flexible ? 1 : 2;
        }
        if (flexible && skip_tags(f, &p))
            return -1;
    }
    if (flexible && skip_tags(f, &p))
        return -1;
    *pos = p;
    return 1;
}

PyDoc_STRVAR(produce_response_doc,
"produce_response(frame, offset, version)\n"
"-> (first error, clean, ((start, end) of each topic name field), where the\n"
"top-level tags start or -1, no top-level tags)\n\n"
"The walk of fastpath.walk_response_py, compiled; not clean: the walk\n"
"stopped at a record error or an error message.");

static PyObject *
produce_response(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t offset;
    int version;
    if (!PyArg_ParseTuple(args, "y*ni", &view, &offset, &version))
        return NULL;
    Buf f = {view.buf, view.len};
    int flexible = version >= 9;
    int64_t p = offset, topics, error = 0, first;
    PyObject *names = PyList_New(0), *result = NULL;
    if (names == NULL)
        goto done;
    if (offset < 0) {
        fail("negative body offset");
        goto done;
    }
    if (length(&f, &p, flexible, &topics))
        goto done;
    for (int64_t t = 0; t < topics; t++) {
        int64_t start = p;
        if (version >= 13) {
            p += 16;
        } else {
            if (skip_string(&f, &p, flexible) || append_span(names, start, p))
                goto done;
        }
        int clean = response_partitions(&f, &p, version, flexible, &first);
        if (clean < 0)
            goto done;
        if (error == 0)
            error = first;
        if (!clean) {
            result = Py_BuildValue("(LOOLO)", (long long)error, Py_False,
                                   names, -1LL, Py_False);
            goto done;
        }
    }
    p += 4;  /* throttle time */
    if (!flexible) {
        if (p != f.n) {
            char why[80];
            PyOS_snprintf(why, sizeof why, "produce response: %lld bytes unaccounted for",
                          (long long)(f.n - p));
            fail(why);
            goto done;
        }
        result = Py_BuildValue("(LOOLO)", (long long)error, Py_True, names, -1LL,
                               Py_True);
        goto done;
    }
    int64_t tags = p;
    if (skip_tags(&f, &tags))
        goto done;
    if (tags != f.n) {
        fail("produce response: bytes after its tagged fields");
        goto done;
    }
    result = Py_BuildValue("(LOOLO)", (long long)error, Py_True, names,
                           (long long)p, f.b[p] == 0 ? Py_True : Py_False);
done:
    Py_XDECREF(names);
    PyBuffer_Release(&view);
    return result;
}

/* The broker's answer whose payload is *f*, at byte *base* of *frame*, to
 * a lane request of *version* and *correlation_id*: (frame for the client,
 * its first error, 0 records), Py_None when the lane declines it, NULL when
 * raised.  From v13 the frame for the client is *frame* itself (*base* 0)
 * or a slice of *view*, a memoryview of *frame* made the first time one is
 * needed. */
static PyObject *
answer_one(Buf f, int version, long long correlation_id, PyObject *names,
           PyObject *frame, Py_ssize_t base, PyObject **view)
{
    PyObject *pieces = NULL, *result = NULL;
    int64_t p = 5, topics, error = 0, first, copied = 0;
    if (version < 9 || version > 13 || f.n < 5 || be32(f.b) != correlation_id ||
            f.b[4] != 0)
        goto decline;
    if (version < 13 && (pieces = PyList_New(0)) == NULL)
        goto done;
    if (length(&f, &p, 1, &topics))
        goto malformed;
    for (int64_t t = 0; t < topics; t++) {
        int64_t start = p;
        if (version >= 13) {
            if (p + 16 > f.n)
                goto decline;
            p += 16;
        } else {
            if (skip_string(&f, &p, 1))
                goto malformed;
            if (p > f.n)
                goto decline;
            PyObject *to;
            int found = renamed(names, PyBytes_FromStringAndSize(
                (const char *)f.b + start, (Py_ssize_t)(p - start)), &to);
            if (found < 0)
                goto done;
            if (!found)
                goto decline;
            PyObject *before = PyBytes_FromStringAndSize((const char *)f.b + copied,
                                                         (Py_ssize_t)(start - copied));
            int failed = before == NULL || PyList_Append(pieces, before) < 0 ||
                         PyList_Append(pieces, to) < 0;
            Py_XDECREF(before);
            if (failed)
                goto done;
            copied = p;
        }
        int clean = response_partitions(&f, &p, version, 1, &first);
        if (clean < 0)
            goto malformed;
        if (!clean)
            goto decline;
        if (error == 0)
            error = first;
    }
    p += 4;  /* throttle time */
    if (p + 1 != f.n || f.b[p] != 0)
        goto decline;  /* top-level tags (node_endpoints), or bytes after them */
    if (pieces == NULL) {
        PyObject *as_came = NULL;
        if (base == 0)
            as_came = Py_NewRef(frame);  /* the whole frame */
        else if (*view != NULL || (*view = PyMemoryView_FromObject(frame)) != NULL)
            as_came = PySequence_GetSlice(*view, base, base + f.n);
        PyObject *items[3] = {as_came, PyLong_FromLongLong(error), PyLong_FromLong(0)};
        result = tuple_taking(3, items);
        goto done;
    }
    PyObject *rest = PyBytes_FromStringAndSize((const char *)f.b + copied,
                                               (Py_ssize_t)(f.n - copied));
    if (rest == NULL || PyList_Append(pieces, rest) < 0) {
        Py_XDECREF(rest);
        goto done;
    }
    Py_DECREF(rest);
    PyObject *items[3] = {joined_bytes(pieces), PyLong_FromLongLong(error), PyLong_FromLong(0)};
    result = tuple_taking(3, items);
    goto done;
malformed:
    PyErr_Clear();
decline:
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(pieces);
    return result;
}

PyDoc_STRVAR(produce_answer_lane_doc,
"produce_answer_lane(frame, version, correlation_id, names)\n"
"-> (frame for the client, its first error, 0 records), or None\n\n"
"The broker's answer to a Produce that came by the lane (filters/lane.py),\n"
"in one call: v9-v13, *correlation_id*, no header or top-level tags (no\n"
"node_endpoints), no record error or error message; from v13 as it came,\n"
"before it with each topic's name field replaced by its value in *names*.\n"
"None for anything else, malformed bytes included: the rule table's path\n"
"decides those (and raises where it must).");

static PyObject *
produce_answer_lane(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *frame, *names;
    Py_ssize_t version;
    long long correlation_id;
    if (arguments("produce_answer_lane", nargs, 4) < 0 || ssize_from(args[1], &version) < 0)
        return NULL;
    frame = args[0];
    names = args[3];
    correlation_id = PyLong_AsLongLong(args[2]);
    if (correlation_id == -1 && PyErr_Occurred())
        return NULL;
    if (!PyDict_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "produce_answer_lane: names must be a dict");
        return NULL;
    }
    if (version < 0 || version > INT32_MAX)
        version = -1;  /* declined by answer_one */
    Py_buffer view;
    if (PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Buf f = {view.buf, view.len};
    PyObject *result = answer_one(f, (int)version, correlation_id, names, frame, 0, NULL);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(produce_answer_lane_many_doc,
"produce_answer_lane_many(read, limit, owed, names)\n"
"-> ([(frame for the client, its first error, 0 records), ...], end, out)\n\n"
"The broker's answers in *read* (frames with their size prefixes) from its\n"
"start, each as produce_answer_lane takes it, to the requests *owed* in\n"
"turn (a list of what has their .api_version and .correlation_id), while\n"
"each is whole, at most *limit* bytes and taken; *end*: where the first not\n"
"taken starts.  From v13 a frame for the client is a view of the read.\n"
"*out*: what the client is sent for them all, in one sendmsg: the read's\n"
"own bytes for answers passed as they came (the read itself when that is\n"
"all of it), a size prefix and the frame for each renamed one.");

typedef struct {
    PyObject *owed, *names;
} Answers;

static PyObject *
answer_take(void *how, Buf f, PyObject *read, Py_ssize_t base, Py_ssize_t index,
            PyObject **view)
{
    const Answers *answers = how;
    PyObject *request = PyList_GET_ITEM(answers->owed, index);
    PyObject *v = PyObject_GetAttr(request, api_version_name);
    PyObject *c = v == NULL ? NULL : PyObject_GetAttr(request, correlation_id_name);
    long version = v == NULL ? -1 : PyLong_AsLong(v);
    long long correlation_id = c == NULL ? -1 : PyLong_AsLongLong(c);
    Py_XDECREF(v);
    Py_XDECREF(c);
    if (PyErr_Occurred())
        return NULL;
    return answer_one(f, (int)version, correlation_id, answers->names, read, base, view);
}

/* Append to *out* the bytes [*from*, *to*) of *read* (of *size* bytes, its
 * memoryview *view* made when first needed): the read itself when that is
 * all of it. */
static int
append_run(PyObject *out, PyObject *read, Py_ssize_t size, PyObject **view,
           Py_ssize_t from, Py_ssize_t to)
{
    if (from >= to)
        return 0;
    PyObject *run;
    if (from == 0 && to == size && PyBytes_CheckExact(read))
        run = Py_NewRef(read);
    else if (*view == NULL && (*view = PyMemoryView_FromObject(read)) == NULL)
        return -1;
    else
        run = PySequence_GetSlice(*view, from, to);
    if (run == NULL)
        return -1;
    int failed = PyList_Append(out, run);
    Py_DECREF(run);
    return failed;
}

/* What goes to the client for the answers *taken* from the start of *read*:
 * the read's own bytes for each run of answers passed as they came (v13),
 * a size prefix and the renamed frame for each other. */
static PyObject *
answers_out(PyObject *read, PyObject *taken)
{
    Py_buffer buffer;
    if (PyObject_GetBuffer(read, &buffer, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = PyList_New(0), *view = NULL;
    Py_ssize_t at = 0, run = 0;
    if (out == NULL)
        goto failed;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(taken); i++) {
        PyObject *frame = PyTuple_GET_ITEM(PyList_GET_ITEM(taken, i), 0);
        Py_ssize_t next = at + 4 + be32((const unsigned char *)buffer.buf + at);
        if (PyMemoryView_Check(frame)) {  /* as it came (a view of the read): in the run */
            at = next;
            continue;
        }
        PyObject *head = size_prefix(PyBytes_GET_SIZE(frame));
        int failed = append_run(out, read, buffer.len, &view, run, at) < 0 ||
                     head == NULL || PyList_Append(out, head) < 0 ||
                     PyList_Append(out, frame) < 0;
        Py_XDECREF(head);
        if (failed)
            goto failed;
        at = run = next;
    }
    if (append_run(out, read, buffer.len, &view, run, at) < 0)
        goto failed;
    Py_XDECREF(view);
    PyBuffer_Release(&buffer);
    return out;
failed:
    Py_XDECREF(out);
    Py_XDECREF(view);
    PyBuffer_Release(&buffer);
    return NULL;
}

static PyObject *
produce_answer_lane_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit;
    Answers answers;
    if (arguments("produce_answer_lane_many", nargs, 4) < 0 ||
            ssize_from(args[1], &limit) < 0)
        return NULL;
    answers.owed = args[2];
    answers.names = args[3];
    if (!PyList_Check(answers.owed) || !PyDict_Check(answers.names)) {
        PyErr_SetString(PyExc_TypeError,
                        "produce_answer_lane_many: owed a list, names a dict");
        return NULL;
    }
    PyObject *result = frames_while(args[0], limit, PyList_GET_SIZE(answers.owed),
                                    answer_take, &answers);
    if (result == NULL)
        return NULL;
    PyObject *items[3] = {Py_NewRef(PyTuple_GET_ITEM(result, 0)),
                          Py_NewRef(PyTuple_GET_ITEM(result, 1)),
                          answers_out(args[0], PyTuple_GET_ITEM(result, 0))};
    Py_DECREF(result);
    return tuple_taking(3, items);
}

PyDoc_STRVAR(maybe_huge_doc,
"maybe_huge(frame, offset) -> bool\n\n"
"Whether *frame* from *offset* holds four bytes of 0x80 or more and then one\n"
"of 0x10-0x7f: the pattern of lengths.py, found in one pass (the regex there\n"
"takes ~11 ns a byte, a second for a 100 MB request).");

static PyObject *
maybe_huge(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*n", &view, &offset))
        return NULL;
    const unsigned char *b = view.buf;
    Py_ssize_t run = 0, found = 0;
    for (Py_ssize_t i = offset < 0 ? 0 : offset; i < view.len; i++) {
        unsigned char c = b[i];
        if (c >= 0x80) {
            run++;
        } else {
            if (run >= 4 && c >= 0x10) {
                found = 1;
                break;
            }
            run = 0;
        }
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(found);
}

/*
 * The Fetch response scan of fetch_stream.FetchStream, chunk by chunk.
 *
 * A large Fetch answer is forwarded while it arrives (proxy/streaming.py) and
 * scanned as its chunks pass, however they are cut: its first error, its
 * records, where its top-level tags start, its session and its topic ids,
 * each id given to check_id before any byte after it is forwarded.  In
 * Python the walk's generator steps were a third of the consumer path's own
 * work (~0.2 s a GB of 16 KB batches); here it is a loop per chunk.  The
 * walk is a program counter (pc) and the counts of the arrays it is in; a
 * field cut across chunks waits in `carry`, a batch header in `head`.
 * FetchStream stays the reference: tests/test_walk.py feeds both the same
 * answers, cut and poked.
 */

enum {
    F_HEADER_TAGS, F_HEAD, F_TOPICS, F_TOPIC, F_TOPIC_ID, F_TOPIC_NAME,
    F_PARTITIONS, F_PARTITION, F_FIXED, F_ABORTED, F_ABORT, F_PREFERRED,
    F_RECORDS_LENGTH, F_RECORDS, F_PARTITION_END, F_MARK, F_TAGS, F_TAG,
    F_TAG_SIZE, F_END,
};

typedef struct {
    PyObject_HEAD
    int version, flexible;
    int pc, after_tags;        /* where the walk is; where it goes after tags */
    int64_t at;                /* bytes fed so far (from the size prefix) */
    int64_t skip;              /* bytes to pass before pc goes on */
    unsigned char carry[32];   /* a field cut across chunks */
    int carried;
    uint64_t varint;           /* a varint cut across chunks */
    int shift;
    int64_t topics, partitions, aborted, tags;  /* left in each array */
    int64_t region_end;        /* where the current records region ends */
    int64_t batch_at;          /* where its next batch starts; -1: not counting */
    unsigned char head[BATCH_HEADER];  /* a batch header cut across chunks */
    int headed;
    int64_t error, session_id, records, tags_at;
    int tags_empty;
    PyObject *topic_ids;       /* list of 16-byte ids */
    PyObject *check_id;        /* None, or called with each id */
} FetchScan;

/* The next n bytes (n <= 32), from *pos or completing carry; NULL when the
 * chunk ends first (what there was is carried). */
static const unsigned char *
take(FetchScan *s, const unsigned char *b, int64_t *pos, int64_t end, int n)
{
    if (s->carried == 0 && end - *pos >= n) {
        *pos += n;
        return b + *pos - n;
    }
    int64_t k = n - s->carried < end - *pos ? n - s->carried : end - *pos;
    memcpy(s->carry + s->carried, b + *pos, (size_t)k);
    s->carried += (int)k;
    *pos += k;
    if (s->carried < n)
        return NULL;
    s->carried = 0;
    return s->carry;
}

/* 1: *out is the next uvarint; 0: the chunk ended in it; -1: raised. */
static int
next_uvarint(FetchScan *s, const unsigned char *b, int64_t *pos, int64_t end,
             int64_t *out)
{
    while (*pos < end) {
        unsigned char byte = b[(*pos)++];
        s->varint |= (uint64_t)(byte & 0x7f) << s->shift;
        if (byte < 0x80) {
            *out = (int64_t)s->varint;
            s->varint = 0;
            s->shift = 0;
            return 1;
        }
        s->shift += 7;
        if (s->shift > 28)
            return fail("varint too long");
    }
    return 0;
}

/* An array, bytes or (string) string length, -1 null: as next_uvarint. */
static int
next_length(FetchScan *s, const unsigned char *b, int64_t *pos, int64_t end,
            int string, int64_t *out)
{
    if (s->flexible) {
        int r = next_uvarint(s, b, pos, end, out);
        if (r == 1)
            *out -= 1;
        return r;
    }
    const unsigned char *q = take(s, b, pos, end, string ? 2 : 4);
    if (q == NULL)
        return 0;
    *out = string ? be16(q) : be32(q);
    return 1;
}

/* Count the batches of the records region that start in this chunk (at
 * base, end bytes long), as records.walk_batches does. */
static void
count_batches(FetchScan *s, const unsigned char *b, int64_t base, int64_t end)
{
    while (s->batch_at >= 0) {
        int64_t rel = s->batch_at - base;
        const unsigned char *h;
        if (rel < 0) {  /* a header begun in an earlier chunk */
            int64_t k = BATCH_HEADER - s->headed < end ? BATCH_HEADER - s->headed : end;
            memcpy(s->head + s->headed, b, (size_t)k);
            s->headed += (int)k;
            if (s->headed < BATCH_HEADER)
                return;
            s->headed = 0;
            h = s->head;
        } else if (rel + BATCH_HEADER > end) {
            if (rel < end) {
                memcpy(s->head, b + rel, (size_t)(end - rel));
                s->headed = (int)(end - rel);
            }
            return;
        } else {
            h = b + rel;
        }
        int64_t length = be32(h + 8), after = s->batch_at + 12 + length;
        if (length < 49 || after > s->region_end || h[16] != 2) {
            s->batch_at = -1;
            return;
        }
        int64_t count = be32(h + 57);
        if (count > 0)
            s->records += count;
        s->batch_at = s->region_end - after >= BATCH_HEADER ? after : -1;
    }
}

#define NEED(r) do { int r_ = (r); if (r_ < 0) return -1; if (r_ == 0) goto more; } while (0)
#define TAGS_THEN(next) do { s->after_tags = (next); s->pc = F_TAGS; } while (0)

/* Walk this chunk; 0, or -1 with an exception set. */
static int
scan_chunk(FetchScan *s, const unsigned char *b, int64_t end)
{
    int64_t base = s->at, pos = 0, n;
    const unsigned char *q;
    for (;;) {
        if (s->skip) {
            int64_t k = s->skip < end - pos ? s->skip : end - pos;
            s->skip -= k;
            pos += k;
            if (s->skip)
                goto more;
        }
        switch (s->pc) {
        case F_HEADER_TAGS:
            if (s->flexible)
                TAGS_THEN(F_HEAD);
            else
                s->pc = F_HEAD;
            break;
        case F_HEAD:
            q = take(s, b, &pos, end, s->version >= 7 ? 10 : 4);
            if (q == NULL)
                goto more;
            if (s->version >= 7) {
                s->error = be16(q + 4);
                s->session_id = be32(q + 6);
            }
            s->pc = F_TOPICS;
            break;
        case F_TOPICS:
            NEED(next_length(s, b, &pos, end, 0, &n));
            s->topics = n > 0 ? n : 0;
            s->pc = F_TOPIC;
            break;
        case F_TOPIC:
            if (s->topics == 0)
                s->pc = s->flexible ? F_MARK : F_END;
            else
                s->pc = s->version >= 13 ? F_TOPIC_ID : F_TOPIC_NAME;
            break;
        case F_TOPIC_ID: {
            q = take(s, b, &pos, end, 16);
            if (q == NULL)
                goto more;
            PyObject *id = PyBytes_FromStringAndSize((const char *)q, 16);
            if (id == NULL)
                return -1;
            if (s->check_id != Py_None) {
                PyObject *r = PyObject_CallOneArg(s->check_id, id);
                if (r == NULL) {
                    Py_DECREF(id);
                    return -1;
                }
                Py_DECREF(r);
            }
            int appended = PyList_Append(s->topic_ids, id);
            Py_DECREF(id);
            if (appended < 0)
                return -1;
            s->pc = F_PARTITIONS;
            break;
        }
        case F_TOPIC_NAME:
            NEED(next_length(s, b, &pos, end, 1, &n));
            s->skip = n > 0 ? n : 0;
            s->pc = F_PARTITIONS;
            break;
        case F_PARTITIONS:
            NEED(next_length(s, b, &pos, end, 0, &n));
            s->partitions = n > 0 ? n : 0;
            s->pc = F_PARTITION;
            break;
        case F_PARTITION:
            if (s->partitions > 0) {
                s->pc = F_FIXED;
            } else {  /* the topic's end */
                s->topics--;
                if (s->flexible)
                    TAGS_THEN(F_TOPIC);
                else
                    s->pc = F_TOPIC;
            }
            break;
        case F_FIXED:  /* index, error, high watermark, last stable, log start */
            q = take(s, b, &pos, end, s->version >= 5 ? 30 : 22);
            if (q == NULL)
                goto more;
            if (s->error == 0)
                s->error = be16(q + 4);
            s->pc = F_ABORTED;
            break;
        case F_ABORTED:
            NEED(next_length(s, b, &pos, end, 0, &n));
            s->aborted = n > 0 ? n : 0;
            s->pc = F_ABORT;
            break;
        case F_ABORT:
            if (s->aborted == 0) {
                s->pc = F_PREFERRED;
            } else {
                s->aborted--;
                s->skip = 16;  /* producer id, first offset */
                if (s->flexible)
                    TAGS_THEN(F_ABORT);
            }
            break;
        case F_PREFERRED:
            if (s->version >= 11)
                s->skip = 4;
            s->pc = F_RECORDS_LENGTH;
            break;
        case F_RECORDS_LENGTH:
            NEED(next_length(s, b, &pos, end, 0, &n));
            if (n > 0) {
                s->region_end = base + pos + n;
                s->batch_at = n >= BATCH_HEADER ? base + pos : -1;
                s->pc = F_RECORDS;
            } else {
                s->pc = F_PARTITION_END;
            }
            break;
        case F_RECORDS:
            if (s->batch_at >= 0)
                count_batches(s, b, base, end);
            if (s->region_end - base > end) {
                pos = end;
                goto more;
            }
            pos = s->region_end - base;
            s->pc = F_PARTITION_END;
            break;
        case F_PARTITION_END:
            s->partitions--;
            if (s->flexible)
                TAGS_THEN(F_PARTITION);
            else
                s->pc = F_PARTITION;
            break;
        case F_MARK:  /* the top-level tagged fields */
            if (pos == end)
                goto more;
            s->tags_at = base + pos;
            s->tags_empty = b[pos] == 0;
            TAGS_THEN(F_END);
            break;
        case F_TAGS:
            NEED(next_uvarint(s, b, &pos, end, &n));
            s->tags = n;
            s->pc = F_TAG;
            break;
        case F_TAG:
            if (s->tags == 0) {
                s->pc = s->after_tags;
            } else {
                NEED(next_uvarint(s, b, &pos, end, &n));  /* its number */
                s->pc = F_TAG_SIZE;
            }
            break;
        case F_TAG_SIZE:
            NEED(next_uvarint(s, b, &pos, end, &n));
            s->skip = n;
            s->tags--;
            s->pc = F_TAG;
            break;
        default:  /* F_END */
            if (pos < end)
                return fail("fetch response: bytes after its end");
            goto more;
        }
    }
more:
    s->at = base + end;
    return 0;
}

static int
fetch_scan_init(FetchScan *s, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"version", "check_id", NULL};
    int version;
    PyObject *check_id = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|O", keywords, &version,
                                     &check_id))
        return -1;
    PyObject *ids = PyList_New(0);
    if (ids == NULL)
        return -1;
    Py_XSETREF(s->topic_ids, ids);
    Py_INCREF(check_id);
    Py_XSETREF(s->check_id, check_id);
    s->version = version;
    s->flexible = version >= 12;
    s->pc = F_HEADER_TAGS;
    s->skip = 8;  /* size, correlation id (checked by the caller) */
    s->at = s->carried = s->shift = s->headed = 0;
    s->varint = 0;
    s->topics = s->partitions = s->aborted = s->tags = 0;
    s->region_end = 0;
    s->batch_at = -1;
    s->error = s->session_id = s->records = 0;
    s->tags_at = -1;
    s->tags_empty = 1;
    return 0;
}

static int
fetch_scan_traverse(FetchScan *s, visitproc visit, void *arg)
{
    Py_VISIT(s->topic_ids);
    Py_VISIT(s->check_id);
    return 0;
}

static int
fetch_scan_clear(FetchScan *s)
{
    Py_CLEAR(s->topic_ids);
    Py_CLEAR(s->check_id);
    return 0;
}

static void
fetch_scan_dealloc(FetchScan *s)
{
    PyObject_GC_UnTrack(s);
    fetch_scan_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

PyDoc_STRVAR(fetch_scan_feed_doc,
"feed(chunk): scan the response's next bytes (any bytes-like object).\n"
"Raises HeaderError (a Malformed) where FetchStream.feed raises, or what\n"
"check_id raises.");

static PyObject *
fetch_scan_feed(FetchScan *s, PyObject *chunk)
{
    Py_buffer view;
    if (s->topic_ids == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FetchScan not initialised");
        return NULL;
    }
    if (PyObject_GetBuffer(chunk, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int r = scan_chunk(s, view.buf, view.len);
    PyBuffer_Release(&view);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fetch_scan_finish_doc,
"finish() -> (error, records, tags_empty, tags_at, session_id, topic_ids):\n"
"once every byte was fed, the fields of fastpath.Scan; raises HeaderError\n"
"if the response is truncated.");

static PyObject *
fetch_scan_finish(FetchScan *s, PyObject *unused)
{
    if (s->topic_ids == NULL || s->pc != F_END || s->skip || s->carried)
        return fail("truncated fetch response"), NULL;
    PyObject *ids = PyList_AsTuple(s->topic_ids);
    if (ids == NULL)
        return NULL;
    return Py_BuildValue("LLNLLN", (long long)s->error, (long long)s->records,
                         PyBool_FromLong(s->tags_empty), (long long)s->tags_at,
                         (long long)s->session_id, ids);
}

static PyMethodDef fetch_scan_methods[] = {
    {"feed", (PyCFunction)fetch_scan_feed, METH_O, fetch_scan_feed_doc},
    {"finish", (PyCFunction)fetch_scan_finish, METH_NOARGS, fetch_scan_finish_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef fetch_scan_members[] = {
    {"at", T_LONGLONG, offsetof(FetchScan, at), READONLY, "bytes fed so far"},
    {"records", T_LONGLONG, offsetof(FetchScan, records), READONLY,
     "records in the whole batches so far"},
    {NULL},
};

PyDoc_STRVAR(fetch_scan_doc,
"FetchScan(version, check_id=None): fetch_stream.FetchStream's scan, compiled.");

static PyTypeObject FetchScanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vkafka.protocol._walk.FetchScan",
    .tp_basicsize = sizeof(FetchScan),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = fetch_scan_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)fetch_scan_init,
    .tp_dealloc = (destructor)fetch_scan_dealloc,
    .tp_traverse = (traverseproc)fetch_scan_traverse,
    .tp_clear = (inquiry)fetch_scan_clear,
    .tp_methods = fetch_scan_methods,
    .tp_members = fetch_scan_members,
};

static PyMethodDef methods[] = {
    {"maybe_huge", maybe_huge, METH_VARARGS, maybe_huge_doc},
    {"produce_request", produce_request, METH_VARARGS, produce_request_doc},
    {"produce_lane", (PyCFunction)(void (*)(void))produce_lane, METH_FASTCALL, produce_lane_doc},
    {"produce_lane_many", (PyCFunction)(void (*)(void))produce_lane_many, METH_FASTCALL, produce_lane_many_doc},
    {"produce_answer_lane", (PyCFunction)(void (*)(void))produce_answer_lane, METH_FASTCALL, produce_answer_lane_doc},
    {"produce_answer_lane_many", (PyCFunction)(void (*)(void))produce_answer_lane_many, METH_FASTCALL,
     produce_answer_lane_many_doc},
    {"produce_response", produce_response, METH_VARARGS, produce_response_doc},
    {"fetch_request", fetch_request, METH_VARARGS, fetch_request_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_walk",
    "The produce path's walks by lengths, a consumer's Fetch request's and the "
    "streamed Fetch answer's scan, compiled (see produce.py, fastpath.py and "
    "fetch_stream.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__walk(void)
{
    PyObject *headers = PyImport_ImportModule("vkafka.protocol.headers");
    if (headers == NULL)
        return NULL;
    header_error = PyObject_GetAttrString(headers, "HeaderError");
    Py_DECREF(headers);
    api_version_name = PyUnicode_InternFromString("api_version");
    correlation_id_name = PyUnicode_InternFromString("correlation_id");
    if (header_error == NULL || api_version_name == NULL || correlation_id_name == NULL
            || PyType_Ready(&FetchScanType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FetchScanType);
    if (PyModule_AddObject(m, "FetchScan", (PyObject *)&FetchScanType) < 0) {
        Py_DECREF(&FetchScanType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
