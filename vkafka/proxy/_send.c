/* The outbox's one compiled step: pieces sent with sendmsg(2), no Python
 * between them (proxy/outbox.py, write_all).
 *
 * A tenant's Produce request and its answer each leave the gateway as a few
 * pieces (a size prefix, renamed names, the records as they came).  Sending
 * them from Python (a slice per batch, their lengths summed, the socket's
 * sendmsg, the comparison) took about 4,600 instructions a write, two writes
 * a request: ~8% of the lane's cost per request.  Here they are handed to
 * the kernel as they are; what the socket does not take is given back, in
 * order, for Twisted's queue.  No GIL release: the socket is non-blocking.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define IOV_BATCH 256 /* pieces per sendmsg, well under IOV_MAX (1024) */

/* What the socket did not take of *seq*'s items from *first* on, *sent*
 * bytes of the first of them taken: a list, the first a view past them. */
static PyObject *
rest(PyObject *seq, Py_ssize_t first, Py_ssize_t sent)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n - first);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = first; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_INCREF(item);
        PyList_SET_ITEM(out, i - first, item);
    }
    if (sent > 0) {
        PyObject *view = PyMemoryView_FromObject(PyList_GET_ITEM(out, 0));
        PyObject *tail = NULL;
        if (view != NULL) {
            tail = PySequence_GetSlice(view, sent, PY_SSIZE_T_MAX);
            Py_DECREF(view);
        }
        if (tail == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SetItem(out, 0, tail); /* steals tail, drops the piece */
    }
    return out;
}

PyDoc_STRVAR(send_parts_doc,
"send_parts(socket, parts) -> None or list\n\n"
"Send *parts* (bytes-like objects, in a list or tuple) on *socket* (a\n"
"non-blocking stream socket, or anything with a fileno()), in one sendmsg\n"
"per 256 of them.  None: all of it was sent.  Else what was not, in order:\n"
"the first piece the socket did not take whole (a memoryview past what it\n"
"took) and those after it; a socket error sends nothing more and gives back\n"
"the rest too (Twisted's queue then meets it and reports it).");

static PyObject *
send_parts(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send_parts(socket, parts)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[1], "send_parts: parts must be a list or tuple");
    if (seq == NULL)
        return NULL;
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            Py_DECREF(seq);
            return NULL; /* not a socket at all */
        }
        PyErr_Clear(); /* closed (fileno() -1): as a socket error, all given back */
        PyObject *result = rest(seq, 0, 0);
        Py_DECREF(seq);
        return result;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), at = 0;
    Py_buffer views[IOV_BATCH];
    struct iovec iov[IOV_BATCH];
    PyObject *result = NULL;
    while (at < n) {
        Py_ssize_t count = n - at < IOV_BATCH ? n - at : IOV_BATCH, got = 0, total = 0;
        for (; got < count; got++) {
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, at + got),
                                   &views[got], PyBUF_SIMPLE) < 0)
                break;
            iov[got].iov_base = views[got].buf;
            iov[got].iov_len = (size_t)views[got].len;
            total += views[got].len;
        }
        ssize_t sent = -1;
        if (got == count) {
            struct msghdr msg = {0};
            msg.msg_iov = iov;
            msg.msg_iovlen = (size_t)count;
            do {
                sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
            } while (sent < 0 && errno == EINTR);
        }
        for (Py_ssize_t i = 0; i < got; i++)
            PyBuffer_Release(&views[i]);
        if (got < count)
            goto done; /* not bytes-like: the TypeError stands */
        if (sent == total) {
            at += count;
            continue;
        }
        if (sent < 0)
            sent = 0; /* EAGAIN, or an error Twisted's queue will report */
        Py_ssize_t first = at;
        while ((Py_ssize_t)iov[first - at].iov_len <= sent) {
            sent -= (Py_ssize_t)iov[first - at].iov_len;
            first++;
        }
        result = rest(seq, first, sent);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"send_parts", (PyCFunction)(void (*)(void))send_parts, METH_FASTCALL, send_parts_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_send", "The outbox's sendmsg of pieces (proxy/outbox.py).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__send(void)
{
    return PyModule_Create(&module);
}
