/*
 * The produce path's two walks by lengths, compiled (issue 24).
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
 * walks do (or struct.error, which callers catch alike).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_ENTRIES 100000  /* headers.MAX_ENTRIES */
#define BATCH_HEADER 61     /* records.HEADER */

static PyObject *header_error = NULL;

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

static int
int16_at(const Buf *f, int64_t p, int64_t *out)
{
    if (p + 2 > f->n)
        return fail("truncated int16");
    *out = (int16_t)((uint16_t)f->b[p] << 8 | f->b[p + 1]);
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

static int
append_span(PyObject *list, int64_t start, int64_t end)
{
    PyObject *item = Py_BuildValue("(LL)", (long long)start, (long long)end);
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

static PyMethodDef methods[] = {
    {"maybe_huge", maybe_huge, METH_VARARGS, maybe_huge_doc},
    {"produce_request", produce_request, METH_VARARGS, produce_request_doc},
    {"produce_response", produce_response, METH_VARARGS, produce_response_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_walk",
    "The produce path's walks by lengths, compiled (see produce.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__walk(void)
{
    PyObject *headers = PyImport_ImportModule("vkafka.protocol.headers");
    if (headers == NULL)
        return NULL;
    header_error = PyObject_GetAttrString(headers, "HeaderError");
    Py_DECREF(headers);
    if (header_error == NULL)
        return NULL;
    return PyModule_Create(&module);
}
