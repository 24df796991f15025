/* Watches: what a compiled read (proxy/_lane.c) was armed from, checked at
 * every read, most of it without looking anything up by name.
 *
 * The splice arms a read with triples: (object, name, value), "getattr
 * (object, name) is still value", and (dict, key, value), "dict.get(key)
 * is still value".  Looked up by name, the ~25 of a request and its answer
 * cost ~6 k instructions, as much as the walk of the request.  Most need no
 * lookup, because CPython says cheaply that nothing they depend on changed:
 *
 * - an attribute kept in a __slots__ member (a member descriptor on the
 *   type): the member read at its offset, the type the same;
 * - any other attribute of an object whose type looks attributes up the
 *   generic way, with no descriptor of that name that could answer
 *   otherwise: the object's type and __dict__ the same objects and the
 *   version tags of both unchanged.  CPython gives a dict a new version at
 *   every change of it, and a type (and its subclasses) a new one at every
 *   change of its attributes, so one check an object covers all its
 *   watched attributes;
 * - a dict's item: the dict's version unchanged.
 *
 * Anything else (a property, a __getattr__, a type without a version) is
 * looked up by name at every read, as before.  Dict versions
 * (ma_version_tag) are public in CPython 3.11 and deprecated from 3.12: on
 * other versions every triple is looked up.  Arming checks each triple
 * holds first: a watch can only be taken of what is so.
 */
#ifndef VKAFKA_WATCH_H
#define VKAFKA_WATCH_H

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define WATCH_VERSIONS 1
#else
#define WATCH_VERSIONS 0
#endif

enum { BY_NAME, BY_SLOT, BY_DICT, BY_ITEM };

typedef struct {
    int kind;
    PyObject *object, *name, *value; /* borrowed: Watches.keep holds them */
    PyTypeObject *type;              /* the object's, compared only */
    unsigned int type_version;
    Py_ssize_t offset;               /* BY_SLOT: the member's */
    PyObject *dict;                  /* BY_DICT: the object's __dict__ (or NULL) */
    uint64_t dict_version;           /* BY_DICT, BY_ITEM */
} Watch;

typedef struct {
    Py_ssize_t n;
    Watch *w;        /* n of them (PyMem) */
    PyObject *keep;  /* a list of what they borrow, or NULL: none armed */
    unsigned long generation; /* a new one at every clearing (or arming) */
} Watches;

static void
watches_clear(Watches *ws)
{
    PyMem_Free(ws->w);
    ws->w = NULL;
    ws->n = 0;
    Py_CLEAR(ws->keep);
    ws->generation++;
}

#if WATCH_VERSIONS
/* The version of *type* (0: none, or not valid: it may change unseen). */
static unsigned int
type_version(PyTypeObject *type)
{
    return (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? type->tp_version_tag : 0;
}

/* The __dict__ of *object* (borrowed; NULL: it has none yet), made if
 * CPython keeps its attributes without one (3.11's inline values), so that
 * every later change of them is a change of that dict. */
static PyObject *
dict_of(PyObject *object)
{
    PyObject **at = _PyObject_GetDictPtr(object);
    return at == NULL ? NULL : *at;
}
#endif

/* How *w* (object, name, value, type set) is best checked; -1 raised. */
static int
classify(Watches *ws, Watch *w)
{
    w->kind = BY_NAME;
#if WATCH_VERSIONS
    PyTypeObject *type = w->type;
    if (type->tp_getattro != PyObject_GenericGetAttr)
        return 0;
    PyObject *descr = _PyType_Lookup(type, w->name); /* borrowed; gives a version */
    w->type_version = type_version(type);
    if (w->type_version == 0)
        return 0;
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
        if ((m->type == T_OBJECT_EX || m->type == T_OBJECT) &&
                PyObject_TypeCheck(w->object, PyDescr_TYPE(descr))) {
            w->kind = BY_SLOT;
            w->offset = m->offset;
        }
        return 0;
    }
    PyObject *dict = dict_of(w->object);
    if (descr != NULL && Py_TYPE(descr)->tp_descr_get != NULL) {
        /* a descriptor answers unless the instance's dict does */
        int shadowed = Py_TYPE(descr)->tp_descr_set == NULL && dict != NULL ?
            PyDict_Contains(dict, w->name) : 0;
        if (shadowed <= 0)
            return shadowed;
    }
    for (Py_ssize_t i = 0; i < ws->n; i++)  /* one check an object */
        if (ws->w[i].kind == BY_DICT && ws->w[i].object == w->object) {
            w->kind = -1;
            return 0;
        }
    w->kind = BY_DICT;
    w->dict = dict;
    w->dict_version = dict == NULL ? 0 : ((PyDictObject *)dict)->ma_version_tag;
    return dict == NULL ? 0 : PyList_Append(ws->keep, dict);
#else
    return 0;
#endif
}

/* Arm *ws* with *attrs* ((object, name, value), ...) and *items* ((dict,
 * key, value), ...): 1, or 0 when one of them does not hold now (nothing
 * armed); -1 raised. */
static int
watches_arm(Watches *ws, PyObject *attrs, PyObject *items)
{
    watches_clear(ws);
    Py_ssize_t na = PyTuple_GET_SIZE(attrs), ni = PyTuple_GET_SIZE(items);
    if ((ws->keep = Py_BuildValue("[OO]", attrs, items)) == NULL)
        return -1;
    if ((ws->w = PyMem_New(Watch, na + ni + 1)) == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < na + ni; i++) {
        PyObject *t = i < na ? PyTuple_GET_ITEM(attrs, i) : PyTuple_GET_ITEM(items, i - na);
        Watch *w = &ws->w[ws->n];
        w->object = PyTuple_GET_ITEM(t, 0);
        w->name = PyTuple_GET_ITEM(t, 1);
        w->value = PyTuple_GET_ITEM(t, 2);
        w->type = Py_TYPE(w->object);
        w->dict = NULL;
        PyObject *now;
        if (i < na)
            now = PyObject_GetAttr(w->object, w->name);
        else if ((now = PyDict_GetItemWithError(w->object, w->name)) != NULL)
            Py_INCREF(now);
        if (now == NULL && PyErr_Occurred())
            goto fail;
        Py_XDECREF(now);
        if (now != w->value) {
            watches_clear(ws);
            return 0;
        }
        if (i < na) {
            if (classify(ws, w) < 0)
                goto fail;
            if (w->kind < 0)
                continue;  /* its object's dict is checked already */
        }
        else {
            w->kind = BY_ITEM;
#if WATCH_VERSIONS
            w->dict_version = ((PyDictObject *)w->object)->ma_version_tag;
#endif
        }
        ws->n++;
    }
    return 1;
fail:
    watches_clear(ws);
    return -1;
}

/* Whether each watch of an armed *ws* still holds; -1 raised. */
static int
watches_hold(Watches *ws)
{
    for (Py_ssize_t i = 0; i < ws->n; i++) {
        Watch *w = &ws->w[i];
        PyObject *now;
        switch (w->kind) {
#if WATCH_VERSIONS
        case BY_SLOT:
            if (Py_TYPE(w->object) != w->type ||
                    type_version(w->type) != w->type_version ||
                    *(PyObject **)((char *)w->object + w->offset) != w->value)
                return 0;
            break;
        case BY_DICT:
            if (Py_TYPE(w->object) != w->type ||
                    type_version(w->type) != w->type_version ||
                    dict_of(w->object) != w->dict || (w->dict != NULL &&
                    ((PyDictObject *)w->dict)->ma_version_tag != w->dict_version))
                return 0;
            break;
        case BY_ITEM:
            if (((PyDictObject *)w->object)->ma_version_tag != w->dict_version)
                return 0;
            break;
#else
        case BY_ITEM:
            now = PyDict_GetItemWithError(w->object, w->name);
            if (now != w->value)
                return now == NULL && PyErr_Occurred() ? -1 : 0;
            break;
#endif
        default: {
            /* Python may run (a property): held, and nothing more of *ws*
             * read if it was armed anew meanwhile */
            unsigned long generation = ws->generation;
            PyObject *object = Py_NewRef(w->object), *name = Py_NewRef(w->name);
            now = PyObject_GetAttr(object, name);
            Py_DECREF(object);
            Py_DECREF(name);
            Py_XDECREF(now);
            if (now == NULL)
                return -1;
            if (generation != ws->generation || now != w->value)
                return 0;
        }
        }
    }
    return 1;
}

/* Whether each (object, name, value) of *attrs* and (dict, key, value) of
 * *items* is a triple of those types; -1 raised otherwise. */
static int
watch_triples(PyObject *attrs, PyObject *items)
{
    for (int named = 1; named >= 0; named--) {
        PyObject *triples = named ? attrs : items;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(triples); i++) {
            PyObject *t = PyTuple_GET_ITEM(triples, i);
            if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3 ||
                    (named && !PyUnicode_Check(PyTuple_GET_ITEM(t, 1))) ||
                    (!named && !PyDict_CheckExact(PyTuple_GET_ITEM(t, 0)))) {
                PyErr_SetString(PyExc_TypeError, named ?
                                "arm: attrs are (object, name, value) triples" :
                                "arm: items are (dict, key, value) triples");
                return -1;
            }
        }
    }
    return 0;
}

#endif
