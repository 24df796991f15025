/* The reactor's per-event loop compiled (tuning.lean_dispatch).
 *
 * Every read of a tenant's Produce and of its answer is a wake-up of the
 * epoll reactor: a turn of Twisted's mainLoop (runUntilCurrent, timeout),
 * epoll_wait, then for each ready socket a recv and the protocol's
 * dataReceived.  Done in Python, that is what a Twisted forwarder with no
 * Kafka logic pays over a threaded one (1.18 x its CPU per GB produced,
 * docs/performance.md session 42).  Here epoll_wait fills a C array (the
 * GIL released while it waits), a plain read calls recv and dataReceived
 * with nothing between them, and the next wake-up is served at once while
 * mainLoop has nothing to do (wait_again).  Everything else (accepts,
 * writes, hang-ups, a transport whose doRead Twisted replaced) and every
 * error is handed to the Python callbacks tuning.py gives, which are the
 * Python loop's own branches.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <sys/epoll.h>
#include <time.h>

#define MAX_EVENTS 1024 /* per wake-up; more ready sockets wait one turn */

static PyObject *s_recv, *s_dataReceived, *s_socket, *s_bufferSize, *s_protocol,
    *s_doRead, *s_started, *s_running, *s_justStopped, *s_threadCallQueue,
    *s_newTimedCalls, *s_pendingTimedCalls, *s_time, *s_seconds, *s_TLS,
    *s_connected, *s_disconnecting, *s_writeDisconnected, *s_tempDataLen,
    *s_offset, *s_dataBuffer;

/* The exception being raised, with its traceback, cleared: a new reference. */
static PyObject *
caught(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value != NULL ? value : Py_NewRef(Py_None);
}

/* Hand the exception being raised to *escaped*(selectable, error): it logs
 * it, or raises it again (KeyboardInterrupt: then this returns -1). */
static int
escape(PyObject *escaped, PyObject *selectable)
{
    PyObject *args[2] = {selectable, caught()};
    PyObject *r = PyObject_Vectorcall(escaped, args, 2, NULL);
    Py_DECREF(args[1]);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Call *fn*(args...); an exception goes to *escaped*.  -1: stop the loop. */
static int
call(PyObject *fn, PyObject *const *args, Py_ssize_t n, PyObject *escaped,
     PyObject *selectable)
{
    PyObject *r = PyObject_Vectorcall(fn, args, n, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    return escape(escaped, selectable);
}

/* *selectable*.*attribute*.*method*(*arg*): a new reference, or NULL. */
static PyObject *
call_on(PyObject *selectable, PyObject *attribute, PyObject *method, PyObject *arg)
{
    PyObject *target = PyObject_GetAttr(selectable, attribute);
    if (target == NULL)
        return NULL;
    PyObject *args[2] = {target, arg};
    PyObject *result = PyObject_VectorcallMethod(method, args, 2, NULL);
    Py_DECREF(target);
    return result;
}

/* A plain read of *selectable*, as tcp.Connection.doRead does it. */
static int
plain_read(PyObject *selectable, PyObject *const *cfg)
{
    PyObject *disconnect = cfg[4], *failed = cfg[5], *escaped = cfg[6];
    PyObject *size = PyObject_GetAttr(selectable, s_bufferSize);
    if (size == NULL)
        return escape(escaped, selectable);
    PyObject *data = call_on(selectable, s_socket, s_recv, size);
    Py_DECREF(size);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError)) {
            PyErr_Clear();
            return 0;
        }
        if (!PyErr_ExceptionMatches(PyExc_OSError))
            return escape(escaped, selectable);
        PyErr_Clear();
        PyObject *args[3] = {selectable, cfg[8], Py_True}; /* CONNECTION_LOST */
        return call(disconnect, args, 3, escaped, selectable);
    }
    if (PyBytes_Check(data) && PyBytes_GET_SIZE(data) == 0) {
        Py_DECREF(data);
        PyObject *args[3] = {selectable, cfg[7], Py_True}; /* CONNECTION_DONE */
        return call(disconnect, args, 3, escaped, selectable);
    }
    PyObject *r = call_on(selectable, s_protocol, s_dataReceived, data);
    Py_DECREF(data);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    /* the protocol failed: *failed* logs it and ends the connection */
    PyObject *fargs[2] = {selectable, caught()};
    int result = call(failed, fargs, 2, escaped, selectable);
    Py_DECREF(fargs[1]);
    return result;
}

/* Is *selectable* a plain TCP connection whose doRead is its class's? */
static int
is_plain(PyObject *selectable, PyObject *types)
{
    Py_ssize_t n = PyTuple_GET_SIZE(types);
    int found = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((PyObject *)Py_TYPE(selectable) == PyTuple_GET_ITEM(types, i))
            found = 1;
    if (!found)
        return 0;
    PyObject **dict = _PyObject_GetDictPtr(selectable);
    if (dict == NULL || *dict == NULL)
        return 1;
    return PyDict_Contains(*dict, s_doRead) == 0;
}

static double
monotonic(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec + now.tv_nsec / 1e9;
}

/* epoll_wait without the GIL: the count of events, 0 for a timeout or a
 * signal (whose handler runs here), -1 with an exception set. */
static int
wait_events(int epfd, struct epoll_event *events, int room, int ms)
{
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = epoll_wait(epfd, events, room, ms);
    Py_END_ALLOW_THREADS
    if (n >= 0)
        return n;
    if (errno == EINTR)
        return PyErr_CheckSignals() < 0 ? -1 : 0;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* Serve *n* ready *events*; -1 when an exception ends the loop. */
static int
serve(PyObject *const *cfg, struct epoll_event *events, int n)
{
    PyObject *selectables = cfg[1], *types = cfg[2], *handle = cfg[3];
    for (int i = 0; i < n; i++) {
        PyObject *fd = PyLong_FromLong(events[i].data.fd);
        if (fd == NULL)
            return -1;
        PyObject *selectable = PyDict_GetItemWithError(selectables, fd);
        if (selectable == NULL) {
            Py_DECREF(fd);
            if (PyErr_Occurred())
                return -1;
            continue;
        }
        Py_INCREF(selectable); /* a callback may drop it from the dict */
        int failed;
        int plain = events[i].events == EPOLLIN ? is_plain(selectable, types) : 0;
        if (plain < 0)
            failed = escape(cfg[6], selectable);
        else if (plain)
            failed = plain_read(selectable, cfg);
        else {
            PyObject *event = PyLong_FromUnsignedLong(events[i].events);
            PyObject *r = NULL;
            if (event != NULL) {
                PyObject *hargs[3] = {selectable, fd, event};
                r = PyObject_Vectorcall(handle, hargs, 3, NULL);
                Py_DECREF(event);
            }
            failed = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        Py_DECREF(selectable);
        Py_DECREF(fd);
        if (failed < 0)
            return -1;
    }
    return 0;
}

/* Events to ask for: one per selectable, as Twisted asks, at most MAX_EVENTS. */
static int
room(PyObject *selectables)
{
    Py_ssize_t most = PyDict_GET_SIZE(selectables);
    return most < 1 ? 1 : most > MAX_EVENTS ? MAX_EVENTS : (int)most;
}

/* 1 if *reactor*'s attribute *name* is true, 0 if false, -1 on error. */
static int
truth(PyObject *reactor, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(reactor, name);
    if (value == NULL)
        return -1;
    int result = PyObject_IsTrue(value);
    Py_DECREF(value);
    return result;
}

/* What mainLoop would do next, if *reactor* needs nothing of it: the
 * milliseconds to wait again (-1: until an event), bounded by *until*
 * (monotonic seconds, negative: no bound).  -3: back to mainLoop (it is
 * stopping, a call from a thread or a new timed call waits, a timed call
 * is due, or *until* has passed); -2: an exception. */
static int
wait_again(PyObject *reactor, double until)
{
    PyObject *const names[] = {s_started, s_running};
    for (int i = 0; i < 2; i++) {
        int on = truth(reactor, names[i]);
        if (on <= 0)
            return on < 0 ? -2 : -3;
    }
    PyObject *const waiting[] = {s_justStopped, s_threadCallQueue, s_newTimedCalls};
    for (int i = 0; i < 3; i++) {
        int some = truth(reactor, waiting[i]);
        if (some != 0)
            return some < 0 ? -2 : -3;
    }
    double delay = -1.0;
    PyObject *heap = PyObject_GetAttr(reactor, s_pendingTimedCalls);
    if (heap == NULL)
        return -2;
    if (PyList_Check(heap) && PyList_GET_SIZE(heap) > 0) {
        PyObject *at = PyObject_GetAttr(PyList_GET_ITEM(heap, 0), s_time);
        PyObject *now = at == NULL ? NULL : PyObject_CallMethodNoArgs(reactor, s_seconds);
        delay = at == NULL || now == NULL ? -2.0 :
            PyFloat_AsDouble(at) - PyFloat_AsDouble(now);
        Py_XDECREF(at);
        Py_XDECREF(now);
        if (PyErr_Occurred()) {
            Py_DECREF(heap);
            return -2;
        }
        if (delay <= 0) {
            Py_DECREF(heap);
            return -3;
        }
    } else if (!PyList_Check(heap)) {
        Py_DECREF(heap);
        return -3; /* not Twisted's heap: leave it to mainLoop */
    }
    Py_DECREF(heap);
    if (until >= 0) {
        double left = until - monotonic();
        if (left <= 0)
            return -3;
        if (delay < 0 || left < delay)
            delay = left;
    }
    if (delay < 0)
        return -1;
    return delay >= 2147483.0 ? 2147483000 : (int)ceil(delay * 1000.0);
}

PyDoc_STRVAR(poll_doc,
"poll(config, timeout)\n\n"
"One wake-up of an epoll reactor: wait at most *timeout* seconds (None or\n"
"negative: until an event) and serve the ready sockets.  *config*: the\n"
"tuple (poller, selectables, plain types, handle, disconnect, failed,\n"
"escaped, CONNECTION_DONE, CONNECTION_LOST, reactor): an EPOLLIN alone on a\n"
"plain type whose instance has no doRead of its own is read here (recv,\n"
"then the protocol's dataReceived; nothing read or a socket error call\n"
"disconnect(selectable, why, True); the protocol's exception calls\n"
"failed(selectable, error)); any other event calls handle(selectable, fd,\n"
"event).  An exception from a callback of the read goes to\n"
"escaped(selectable, error); one from handle or escaped ends this call.\n"
"Then, while *reactor* has nothing else to do (running, no call from a\n"
"thread queued, no timed call new or due) and *timeout* has not passed,\n"
"it waits and serves again, without a turn of Twisted's mainLoop.");

static PyObject *
poll_once(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != 10) {
        PyErr_SetString(PyExc_TypeError, "poll(config: a 10-tuple, timeout)");
        return NULL;
    }
    PyObject *const *cfg = &PyTuple_GET_ITEM(args[0], 0);
    PyObject *selectables = cfg[1];
    if (!PyDict_Check(selectables) || !PyTuple_Check(cfg[2])) {
        PyErr_SetString(PyExc_TypeError, "poll: selectables a dict, types a tuple");
        return NULL;
    }
    int ms = -1;
    if (args[1] != Py_None) {
        double timeout = PyFloat_AsDouble(args[1]);
        if (timeout == -1.0 && PyErr_Occurred())
            return NULL;
        if (timeout != timeout)
            ms = 0; /* NaN: a poll, as for a timeout already passed */
        else if (timeout >= 0)
            ms = timeout * 1000.0 >= INT_MAX ? INT_MAX : (int)ceil(timeout * 1000.0);
    }
    int epfd = PyObject_AsFileDescriptor(cfg[0]);
    if (epfd < 0)
        return NULL;
    struct epoll_event events[MAX_EVENTS];
    double until = ms < 0 ? -1.0 : monotonic() + ms / 1000.0;
    for (;;) {
        int n = wait_events(epfd, events, room(selectables), ms);
        if (n <= 0)
            return n < 0 ? NULL : Py_NewRef(Py_None);
        if (serve(cfg, events, n) < 0)
            return NULL;
        ms = wait_again(cfg[9], until);
        if (ms == -2)
            return NULL;
        if (ms == -3)
            break;
    }
    Py_RETURN_NONE;
}

/* Whether *name* of *transport* is true (want 1) or false (want 0):
 * 1 it is, 0 not, -1 raised. */
static int
attribute_is(PyObject *transport, PyObject *name, int want)
{
    PyObject *value = PyObject_GetAttr(transport, name);
    if (value == NULL)
        return -1;
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth < 0 ? -1 : truth == want;
}

PyDoc_STRVAR(sendable_doc,
"sendable(transport, plain_types) -> bool\n\n"
"tuning.sendable compiled (the Python there the reference): *transport*\n"
"is of one of *plain_types* (exactly), not TLS, connected, not\n"
"disconnecting, and Twisted holds nothing of it to send.  The produce\n"
"lane's bookkeeping (proxy/_lane.c) asks it at each send.");

static PyObject *
sendable(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "sendable(transport, plain_types: tuple)");
        return NULL;
    }
    PyObject *transport = args[0];
    int plain = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[1]); i++)
        plain |= (PyObject *)Py_TYPE(transport) == PyTuple_GET_ITEM(args[1], i);
    int ok = plain;
    if (ok == 1)
        ok = attribute_is(transport, s_TLS, 0);
    if (ok == 1)
        ok = attribute_is(transport, s_connected, 1);
    if (ok == 1)
        ok = attribute_is(transport, s_disconnecting, 0);
    if (ok == 1)
        ok = attribute_is(transport, s_writeDisconnected, 0);
    if (ok == 1)
        ok = attribute_is(transport, s_tempDataLen, 0);
    if (ok == 1) {  /* transport.offset == len(transport.dataBuffer) */
        PyObject *offset = PyObject_GetAttr(transport, s_offset), *buffer = NULL,
            *size = NULL;
        if (offset != NULL && (buffer = PyObject_GetAttr(transport, s_dataBuffer)) != NULL) {
            Py_ssize_t n = PyObject_Length(buffer);
            if (n >= 0 && (size = PyLong_FromSsize_t(n)) != NULL)
                ok = PyObject_RichCompareBool(offset, size, Py_EQ);
            else
                ok = -1;
        }
        else
            ok = -1;
        Py_XDECREF(offset);
        Py_XDECREF(buffer);
        Py_XDECREF(size);
    }
    if (ok < 0)
        return NULL;
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"poll", (PyCFunction)(void (*)(void))poll_once, METH_FASTCALL, poll_doc},
    {"sendable", (PyCFunction)(void (*)(void))sendable, METH_FASTCALL, sendable_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_dispatch",
    "The epoll reactor's per-event loop compiled (vkafka/tuning.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__dispatch(void)
{
    s_recv = PyUnicode_InternFromString("recv");
    s_dataReceived = PyUnicode_InternFromString("dataReceived");
    s_socket = PyUnicode_InternFromString("socket");
    s_bufferSize = PyUnicode_InternFromString("bufferSize");
    s_protocol = PyUnicode_InternFromString("protocol");
    s_doRead = PyUnicode_InternFromString("doRead");
    s_started = PyUnicode_InternFromString("_started");
    s_running = PyUnicode_InternFromString("running");
    s_justStopped = PyUnicode_InternFromString("_justStopped");
    s_threadCallQueue = PyUnicode_InternFromString("threadCallQueue");
    s_newTimedCalls = PyUnicode_InternFromString("_newTimedCalls");
    s_pendingTimedCalls = PyUnicode_InternFromString("_pendingTimedCalls");
    s_time = PyUnicode_InternFromString("time");
    s_seconds = PyUnicode_InternFromString("seconds");
    s_TLS = PyUnicode_InternFromString("TLS");
    s_connected = PyUnicode_InternFromString("connected");
    s_disconnecting = PyUnicode_InternFromString("disconnecting");
    s_writeDisconnected = PyUnicode_InternFromString("_writeDisconnected");
    s_tempDataLen = PyUnicode_InternFromString("_tempDataLen");
    s_offset = PyUnicode_InternFromString("offset");
    s_dataBuffer = PyUnicode_InternFromString("dataBuffer");
    if (!s_recv || !s_dataReceived || !s_socket || !s_bufferSize || !s_protocol
        || !s_doRead || !s_started || !s_running || !s_justStopped
        || !s_threadCallQueue || !s_newTimedCalls || !s_pendingTimedCalls || !s_time
        || !s_seconds || !s_TLS || !s_connected || !s_disconnecting
        || !s_writeDisconnected || !s_tempDataLen || !s_offset || !s_dataBuffer)
        return NULL;
    return PyModule_Create(&module);
}
