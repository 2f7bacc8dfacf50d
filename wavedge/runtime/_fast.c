/* wavedge.runtime._fast: the per-sample path of Stream.push in C.
 *
 * A push of the bundled model is a 5 us LiteRT call (10 us on ONNX Runtime) plus about 2 us
 * of Python around it: the sample's checks, the copy into the bound input buffer, the guard on
 * the output, the counters and the Result. Everything here has a Python twin beside its use
 * (stream.py, backend_litert.py, backend_onnxruntime.py), which is the reference: it runs
 * wherever this module was not built, and the tests run both and compare them.
 *
 * Types:
 *   LiteRT1(set, get, invoke, xi, si, so, yi, x, state): a LiteRT step of one input, output
 *       and state tensor through the interpreter wrapper's entry points (LiteRTRunner1._call1).
 *   OrtPair(run, binding0, binding1, outputs, rows, owner): an ONNX Runtime step over two
 *       IOBindings ping-ponging the state (OrtRunner.run / run_row); owner keeps the bound
 *       buffers alive.
 *   Guard(runner, run_row, poisoned, guards, limits, every): Stream._run_step: one step, its
 *       first output tested finite and, every `every`th step, the runner's states against
 *       their limits ([(index, limit)]); a non-finite output or a state past its limit goes
 *       to poisoned(values, finite) in Python (reset, rerun, drop).
 *   Push(fallback, guard, lo, hi, radius, x, result, heads, stats, refill): Stream.push for
 *       a 1-D float32 sample; anything else (a problem given, another type, a bad value) is
 *       handed to fallback, the Python push, which applies the stream's policy. refill zeros
 *       the noise inputs' buffers, when Python set `stale` (a sample carried its own noise).
 * No numpy C API: arrays are read through the head of numpy's array struct (checked by
 * setup(numpy.ndarray, numpy.dtype('float32'), numpy.arange(3, dtype='float32')) before
 * anything is made) or the buffer protocol, so the module builds against Python's headers
 * alone and does not depend on the numpy it was built with.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#define CALL_OFFSET PY_VECTORCALL_ARGUMENTS_OFFSET

static PyObject *str_copy, *str_state, *str_samples, *str_step, *str_values, *str_heads;

/* The head of numpy's PyArrayObject_fields (numpy/ndarraytypes.h), unchanged since numpy 1.7:
 * reading it is 100-200 ns less per array than the buffer protocol. setup() checks it on a
 * known array, so a numpy that changed it refuses the module and streams keep their Python
 * path. */
typedef struct {
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
    int flags;
} ArrayHead;
#define ARRAY_C_CONTIGUOUS 0x0001
#define ARRAY_ALIGNED 0x0100
static PyTypeObject *ndarray_type;  /* numpy.ndarray, set by setup() */
static PyObject *float32_descr;     /* numpy.dtype('float32'), the native one */

/* The values of `a` when it is an aligned C-contiguous float32 ndarray (their number in
 * *size), else NULL (no error set). */
static const float *float32_values(PyObject *a, Py_ssize_t *size) {
    if (Py_TYPE(a) != ndarray_type)
        return NULL;
    ArrayHead *h = (ArrayHead *)a;
    if (h->descr != float32_descr
        || (h->flags & (ARRAY_C_CONTIGUOUS | ARRAY_ALIGNED)) != (ARRAY_C_CONTIGUOUS | ARRAY_ALIGNED))
        return NULL;
    Py_ssize_t n = 1;
    for (int i = 0; i < h->nd; i++)
        n *= h->dimensions[i];
    *size = n;
    return (const float *)h->data;
}

static PyObject *setup(PyObject *module, PyObject *args) {
    PyObject *type, *descr, *probe;
    if (!PyArg_ParseTuple(args, "O!OO", &PyType_Type, &type, &descr, &probe))
        return NULL;
    Py_XSETREF(ndarray_type, (PyTypeObject *)Py_NewRef(type));
    Py_XSETREF(float32_descr, Py_NewRef(descr));
    /* probe: numpy.arange(3, dtype=float32) */
    Py_ssize_t n = 0;
    const float *v = float32_values(probe, &n);
    ArrayHead *h = (ArrayHead *)probe;
    if (v == NULL || h->nd != 1 || n != 3 || v[0] != 0.0f || v[1] != 1.0f || v[2] != 2.0f) {
        Py_CLEAR(ndarray_type);
        PyErr_SetString(PyExc_ImportError, "this numpy's array layout is not the one "
                        "wavedge.runtime._fast was written for");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* 1 when an object's __init__ has run (its first field is set), else 0 with an error. */
static int ready(const void *first_field) {
    if (first_field != NULL)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "wavedge.runtime._fast: object used before __init__");
    return 0;
}

/* Call f(a, b), discarding the result; -1 on error. */
static int call2(PyObject *f, PyObject *a, PyObject *b) {
    PyObject *args[3] = {NULL, a, b};
    PyObject *r = PyObject_Vectorcall(f, args + 1, 2 | CALL_OFFSET, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* [item], stealing the reference to item (NULL passes through). */
static PyObject *list_of(PyObject *item) {
    if (item == NULL)
        return NULL;
    PyObject *out = PyList_New(1);
    if (out == NULL) {
        Py_DECREF(item);
        return NULL;
    }
    PyList_SET_ITEM(out, 0, item);
    return out;
}

/* A new list of obj.copy() for each obj in the list `arrays`. */
static PyObject *copies_of(PyObject *arrays) {
    Py_ssize_t n = PyList_GET_SIZE(arrays);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyObject_CallMethodNoArgs(PyList_GET_ITEM(arrays, i), str_copy);
        if (c == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, c);
    }
    return out;
}

/* A writable C-contiguous float32 buffer of `size` values behind `obj`, or NULL (error set). */
static float *float_buffer(PyObject *obj, Py_ssize_t size, const char *what) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0)
        return NULL;
    int ok = view.itemsize == 4 && view.len == size * 4 && view.format != NULL
             && strcmp(view.format, "f") == 0;
    float *data = view.buf;
    PyBuffer_Release(&view);  /* the caller holds obj, which keeps its data */
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd contiguous float32 values", what, size);
        return NULL;
    }
    return data;
}

/* ---------------------------------------------------------------------------------------- */
/* LiteRT1                                                                                   */

typedef struct {
    PyObject_HEAD
    PyObject *set, *get, *invoke;  /* SetTensor, GetTensor, Invoke of the interpreter wrapper */
    PyObject *xi, *si, *so, *yi;   /* tensor indices */
    PyObject *x, *state, *prev;    /* the input buffer; the state and the one before it */
    PyObject *zero;                /* GetTensor's subgraph */
} LiteRT1;

/* Set the input and the state, invoke, take the new state; the output (new reference). */
static PyObject *litert1_call(LiteRT1 *s) {
    if (!ready(s->set) || call2(s->set, s->xi, s->x) < 0 || call2(s->set, s->si, s->state) < 0)
        return NULL;
    PyObject *r = PyObject_Vectorcall(s->invoke, NULL, 0, NULL);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    PyObject *args[3] = {NULL, s->so, s->zero};
    PyObject *state = PyObject_Vectorcall(s->get, args + 1, 2 | CALL_OFFSET, NULL);
    if (state == NULL)
        return NULL;
    Py_SETREF(s->prev, s->state);  /* GetTensor returns fresh arrays: no copy needed */
    s->state = state;
    args[1] = s->yi;
    return PyObject_Vectorcall(s->get, args + 1, 2 | CALL_OFFSET, NULL);
}

static PyObject *litert1_run(LiteRT1 *s, PyObject *unused) {
    return list_of(litert1_call(s));
}

static PyObject *litert1_run_row(LiteRT1 *s, PyObject *unused) {
    PyObject *y = litert1_call(s);
    if (y == NULL)
        return NULL;
    PyObject *row = PySequence_GetItem(y, 0);
    Py_DECREF(y);
    return list_of(row);
}

static PyObject *litert1_rewind(LiteRT1 *s, PyObject *unused) {
    if (!ready(s->prev))
        return NULL;
    Py_INCREF(s->prev);
    Py_SETREF(s->state, s->prev);
    Py_RETURN_NONE;
}

static int litert1_init(LiteRT1 *s, PyObject *args, PyObject *kw) {
    PyObject *f[9];
    if (!PyArg_UnpackTuple(args, "LiteRT1", 9, 9, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5],
                           &f[6], &f[7], &f[8]))
        return -1;
    PyObject **dst[9] = {&s->set, &s->get, &s->invoke, &s->xi, &s->si, &s->so, &s->yi,
                         &s->x, &s->state};
    for (int i = 0; i < 9; i++) {
        Py_INCREF(f[i]);
        Py_XSETREF(*dst[i], f[i]);
    }
    Py_INCREF(s->state);
    Py_XSETREF(s->prev, s->state);
    Py_XSETREF(s->zero, PyLong_FromLong(0));
    return s->zero == NULL ? -1 : 0;
}

static int litert1_traverse(LiteRT1 *s, visitproc visit, void *arg) {
    Py_VISIT(s->set); Py_VISIT(s->get); Py_VISIT(s->invoke);
    Py_VISIT(s->xi); Py_VISIT(s->si); Py_VISIT(s->so); Py_VISIT(s->yi);
    Py_VISIT(s->x); Py_VISIT(s->state); Py_VISIT(s->prev); Py_VISIT(s->zero);
    return 0;
}

static int litert1_clear(LiteRT1 *s) {
    Py_CLEAR(s->set); Py_CLEAR(s->get); Py_CLEAR(s->invoke);
    Py_CLEAR(s->xi); Py_CLEAR(s->si); Py_CLEAR(s->so); Py_CLEAR(s->yi);
    Py_CLEAR(s->x); Py_CLEAR(s->state); Py_CLEAR(s->prev); Py_CLEAR(s->zero);
    return 0;
}

static PyObject *litert1_get_state(LiteRT1 *s, void *unused) {
    return ready(s->state) ? Py_NewRef(s->state) : NULL;
}

static int litert1_set_state(LiteRT1 *s, PyObject *value, void *unused) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "the state cannot be deleted");
        return -1;
    }
    Py_XSETREF(s->state, Py_NewRef(value));
    return 0;
}

static PyMethodDef litert1_methods[] = {
    {"run", (PyCFunction)litert1_run, METH_NOARGS, "One call: [output]."},
    {"run_row", (PyCFunction)litert1_run_row, METH_NOARGS, "One call: [output[0]]."},
    {"rewind", (PyCFunction)litert1_rewind, METH_NOARGS, "The state before the last call."},
    {NULL}};

static PyGetSetDef litert1_getset[] = {
    {"state", (getter)litert1_get_state, (setter)litert1_set_state, "The state array.", NULL},
    {NULL}};

/* ---------------------------------------------------------------------------------------- */
/* OrtPair                                                                                   */

typedef struct {
    PyObject_HEAD
    PyObject *run;              /* the session's run_with_iobinding */
    PyObject *bindings[2];      /* binding k reads state buffer k, writes the other */
    PyObject *outputs, *rows;   /* lists: the bound output buffers and their row 0 */
    PyObject *owner;            /* what owns the bound input and state buffers */
    int k;
} OrtPair;

static int ortpair_call(OrtPair *s) {
    if (!ready(s->run) || call2(s->run, s->bindings[s->k], Py_None) < 0)
        return -1;
    s->k ^= 1;
    return 0;
}

static PyObject *ortpair_run(OrtPair *s, PyObject *unused) {
    return ortpair_call(s) < 0 ? NULL : copies_of(s->outputs);
}

static PyObject *ortpair_run_row(OrtPair *s, PyObject *unused) {
    return ortpair_call(s) < 0 ? NULL : copies_of(s->rows);
}

static PyObject *ortpair_rewind(OrtPair *s, PyObject *unused) {
    s->k ^= 1;
    Py_RETURN_NONE;
}

static int ortpair_init(OrtPair *s, PyObject *args, PyObject *kw) {
    PyObject *run, *b0, *b1, *outputs, *rows, *owner;
    if (!PyArg_ParseTuple(args, "OOOO!O!O", &run, &b0, &b1, &PyList_Type, &outputs,
                          &PyList_Type, &rows, &owner))
        return -1;
    Py_XSETREF(s->owner, Py_NewRef(owner));
    Py_XSETREF(s->run, Py_NewRef(run));
    Py_XSETREF(s->bindings[0], Py_NewRef(b0));
    Py_XSETREF(s->bindings[1], Py_NewRef(b1));
    Py_XSETREF(s->outputs, Py_NewRef(outputs));
    Py_XSETREF(s->rows, Py_NewRef(rows));
    s->k = 0;
    return 0;
}

static int ortpair_traverse(OrtPair *s, visitproc visit, void *arg) {
    Py_VISIT(s->run); Py_VISIT(s->bindings[0]); Py_VISIT(s->bindings[1]);
    Py_VISIT(s->outputs); Py_VISIT(s->rows); Py_VISIT(s->owner);
    return 0;
}

static int ortpair_clear(OrtPair *s) {
    Py_CLEAR(s->run); Py_CLEAR(s->bindings[0]); Py_CLEAR(s->bindings[1]);
    Py_CLEAR(s->outputs); Py_CLEAR(s->rows); Py_CLEAR(s->owner);
    return 0;
}

static PyObject *ortpair_get_k(OrtPair *s, void *unused) {
    return PyLong_FromLong(s->k);
}

static PyMethodDef ortpair_methods[] = {
    {"run", (PyCFunction)ortpair_run, METH_NOARGS, "One call: copies of the outputs."},
    {"run_row", (PyCFunction)ortpair_run_row, METH_NOARGS, "One call: copies of row 0."},
    {"rewind", (PyCFunction)ortpair_rewind, METH_NOARGS, "The state before the last call."},
    {NULL}};

static PyGetSetDef ortpair_getset[] = {
    {"k", (getter)ortpair_get_k, NULL, "Which state buffer the next call reads.", NULL},
    {NULL}};

/* ---------------------------------------------------------------------------------------- */
/* Guard                                                                                     */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *runner, *run_row, *poisoned;
    int guards;
    Py_ssize_t nlimits, *limit_index;  /* the states with a limit: their index... */
    double *limit;                     /* ...and limit */
    long every, checked;
} Guard;

static int finite_sum(const float *v, Py_ssize_t n) {
    double sum = 0.0;
    for (Py_ssize_t i = 0; i < n; i++)
        sum += v[i];
    return isfinite(sum);
}

/* Every value of a float32 array finite, by one double sum (as stream.all_finite; float32
 * values cannot overflow it); -1 when `y` is not a float32 buffer (error set). */
static int all_finite(PyObject *y) {
    Py_ssize_t n;
    const float *values = float32_values(y, &n);
    if (values != NULL)
        return finite_sum(values, n);
    Py_buffer view;
    if (PyObject_GetBuffer(y, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    int ok = view.itemsize == 4 && view.format != NULL && strcmp(view.format, "f") == 0;
    int finite = ok && finite_sum(view.buf, view.len / 4);
    PyBuffer_Release(&view);
    if (!ok)
        PyErr_SetString(PyExc_TypeError, "the guarded output is not float32");
    return ok ? finite : -1;
}

/* Every value in [-limit, limit] (a NaN is not). */
static int all_within(const float *v, Py_ssize_t n, double limit) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(v[i] <= limit && -limit <= v[i]))
            return 0;
    return 1;
}

/* Some state with a limit has a value outside [-limit, limit] or NaN (as
 * stream.past_limit): 1, also for a state that is not a float32 array (the Python check then
 * decides); 0 when none; -1 on error. Two numpy reductions per state cost 3 us in Python. */
static int past_limits(Guard *g) {
    PyObject *states = PyObject_GetAttr(g->runner, str_state);
    if (states == NULL)
        return -1;
    int past = 0;
    for (Py_ssize_t k = 0; k < g->nlimits && !past; k++) {
        PyObject *a = PySequence_GetItem(states, g->limit_index[k]);
        if (a == NULL) {
            past = -1;
            break;
        }
        Py_ssize_t n;
        const float *v = float32_values(a, &n);
        past = v == NULL || !all_within(v, n, g->limit[k]);
        Py_DECREF(a);
    }
    Py_DECREF(states);
    return past;
}

static PyObject *guard_step(Guard *g) {
    if (!ready(g->runner))
        return NULL;
    PyObject *values = PyObject_Vectorcall(g->run_row, NULL, 0, NULL);
    if (values == NULL || !g->guards)
        return values;
    long checked = ++g->checked;
    if (!PyList_Check(values) || PyList_GET_SIZE(values) < 1) {
        Py_DECREF(values);
        PyErr_SetString(PyExc_TypeError, "run_row() must return a list of outputs");
        return NULL;
    }
    int finite = all_finite(PyList_GET_ITEM(values, 0));
    int past = finite > 0 && g->nlimits && checked % g->every == 0 ? past_limits(g) : 0;
    if (finite < 0 || past < 0) {
        Py_DECREF(values);
        return NULL;
    }
    if (finite && !past)
        return values;
    PyObject *args[3] = {NULL, values, finite ? Py_True : Py_False};
    PyObject *out = PyObject_Vectorcall(g->poisoned, args + 1, 2 | CALL_OFFSET, NULL);
    Py_DECREF(values);
    return out;
}

static PyObject *guard_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Guard() takes no arguments");
        return NULL;
    }
    return guard_step((Guard *)self);
}

static void guard_free_limits(Guard *g) {
    PyMem_Free(g->limit_index);
    PyMem_Free(g->limit);
    g->limit_index = NULL;
    g->limit = NULL;
    g->nlimits = 0;
}

static int guard_init(Guard *g, PyObject *args, PyObject *kw) {
    PyObject *runner, *run_row, *poisoned, *limits;
    int guards;
    long every;
    if (!PyArg_ParseTuple(args, "OOOpO!l", &runner, &run_row, &poisoned, &guards,
                          &PyList_Type, &limits, &every))
        return -1;
    if (every < 1) {
        PyErr_SetString(PyExc_ValueError, "every must be at least 1");
        return -1;
    }
    guard_free_limits(g);
    Py_ssize_t n = PyList_GET_SIZE(limits);
    g->limit_index = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    g->limit = PyMem_Malloc((size_t)(n + 1) * sizeof(double));
    if (g->limit_index == NULL || g->limit == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!PyArg_ParseTuple(PyList_GET_ITEM(limits, k), "nd;limits: (index, limit) pairs",
                              &g->limit_index[k], &g->limit[k]))
            return -1;
    }
    g->nlimits = n;
    Py_XSETREF(g->runner, Py_NewRef(runner));
    Py_XSETREF(g->run_row, Py_NewRef(run_row));
    Py_XSETREF(g->poisoned, Py_NewRef(poisoned));
    g->checked = 0;
    g->guards = guards;
    g->every = every;
    g->vectorcall = guard_vectorcall;
    return 0;
}

static int guard_traverse(Guard *g, visitproc visit, void *arg) {
    Py_VISIT(g->runner); Py_VISIT(g->run_row); Py_VISIT(g->poisoned);
    return 0;
}

static int guard_clear(Guard *g) {
    Py_CLEAR(g->runner); Py_CLEAR(g->run_row); Py_CLEAR(g->poisoned);
    return 0;
}

static PyObject *guard_get_checked(Guard *g, void *unused) {
    return PyLong_FromLong(g->checked);
}

static PyGetSetDef guard_getset[] = {
    {"checked", (getter)guard_get_checked, NULL, "Steps guarded so far.", NULL},
    {NULL}};

/* ---------------------------------------------------------------------------------------- */
/* Push                                                                                      */

static PyTypeObject GuardType;

/* The offset of the __slots__ member `name` of `type` in its instances, or -1 (error set): a
 * slot written through its offset costs 10 ns against 40 for a setattr, and a push writes
 * four. */
static Py_ssize_t slot_offset(PyTypeObject *type, PyObject *name) {
    PyObject *d = PyObject_GetAttr((PyObject *)type, name);  /* the descriptor itself */
    Py_ssize_t offset = -1;
    if (d != NULL && Py_TYPE(d) == &PyMemberDescr_Type
        && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX)
        offset = ((PyMemberDescrObject *)d)->d_member->offset;
    else if (d != NULL)
        PyErr_Format(PyExc_TypeError, "%s.%U is not a __slots__ member", type->tp_name, name);
    Py_XDECREF(d);
    return offset;
}

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fallback, *guard, *x, *result, *heads, *stats;
    float *xdata;
    Py_ssize_t n;
    double *lo, *hi;  /* NULL: no bounds (finite is enough) */
    double radius;    /* the ball about 0 inside every channel's range; < 0: none */
    Py_ssize_t step_at, values_at, heads_at, samples_at;  /* slot offsets (slot_offset) */
    PyObject *refill;  /* zeros the noise inputs' buffers (None: the model has none) */
    int stale;         /* set from Python when a pushed sample left its own noise in them */
} Push;

/* The sample's values inside the input's bounds (finite, when it has none): as
 * Stream._plain, the ball about 0 first, one channel at a time only outside it. */
static int plain(Push *p, const float *v) {
    Py_ssize_t n = p->n;
    if (p->lo == NULL) {
        double sum = 0.0;
        for (Py_ssize_t i = 0; i < n; i++)
            sum += v[i];
        return isfinite(sum);
    }
    double ss = 0.0;
    for (Py_ssize_t i = 0; i < n; i++)
        ss += (double)v[i] * v[i];
    if (sqrt(ss) <= p->radius)  /* false for NaN */
        return 1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(p->lo[i] <= v[i] && v[i] <= p->hi[i]))  /* false for NaN; inf is out of range */
            return 0;
    return 1;
}

/* Copy a plain 1-D float32 sample of the input's length into the bound input buffer:
 * 1 when done, 0 when the sample is anything else (the Python push decides). */
static int take(Push *p, PyObject *sample) {
    Py_ssize_t n;
    const float *v = float32_values(sample, &n);
    if (v == NULL || ((ArrayHead *)sample)->nd != 1 || n != p->n || !plain(p, v))
        return 0;
    memcpy(p->xdata, v, (size_t)n * 4);
    return 1;
}

/* Result(step, values, heads) without its __init__ (a Python frame, 0.2 us): the three
 * slots written in place; steals the reference to step. */
static PyObject *make_result(Push *p, PyObject *step, PyObject *values) {
    PyTypeObject *type = (PyTypeObject *)p->result;
    PyObject *r = type->tp_alloc(type, 0);
    if (r == NULL) {
        Py_DECREF(step);
        return NULL;
    }
    SLOT(r, p->step_at) = step;
    SLOT(r, p->values_at) = Py_NewRef(values);
    SLOT(r, p->heads_at) = Py_NewRef(p->heads);
    return r;
}

static PyObject *push_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames) {
    Push *p = (Push *)self;
    if (!ready(p->fallback))
        return NULL;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int taken = kwnames == NULL && (nargs == 1 || (nargs == 2 && args[1] == Py_None))
                && take(p, args[0]);
    if (!taken)
        return PyObject_Vectorcall(p->fallback, args, nargsf, kwnames);
    if (p->stale) {  /* as the Python push: the stream's own noise (zeros) again */
        PyObject *r = PyObject_Vectorcall(p->refill, NULL, 0, NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        p->stale = 0;
    }
    PyObject *values = Py_TYPE(p->guard) == &GuardType
                           ? guard_step((Guard *)p->guard)
                           : PyObject_Vectorcall(p->guard, NULL, 0, NULL);
    if (values == NULL)
        return NULL;
    /* the stats' sample count is the step index: read, and one more written */
    PyObject *step = SLOT(p->stats, p->samples_at);
    Py_ssize_t count = step == NULL ? -1 : PyLong_AsSsize_t(step);
    PyObject *next = count < 0 ? NULL : PyLong_FromSsize_t(count + 1);
    if (next == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "the stream's sample count is not a count");
        Py_DECREF(values);
        return NULL;
    }
    SLOT(p->stats, p->samples_at) = next;  /* its reference to step moves to the Result */
    PyObject *result = make_result(p, step, values);
    Py_DECREF(values);
    return result;
}

static double *doubles(PyObject *seq, Py_ssize_t n, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return NULL;
    double *out = NULL;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd values", what, n);
    } else if ((out = PyMem_Malloc((size_t)n * sizeof(double))) == NULL) {
        PyErr_NoMemory();
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
            if (out[i] == -1.0 && PyErr_Occurred()) {
                PyMem_Free(out);
                out = NULL;
                break;
            }
        }
    }
    Py_DECREF(fast);
    return out;
}

static int push_init(Push *p, PyObject *args, PyObject *kw) {
    PyObject *fallback, *guard, *lo, *hi, *x, *result, *heads, *stats, *refill;
    double radius;
    if (ndarray_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "wavedge.runtime._fast.setup() was not called");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOOOdOO!OOO", &fallback, &guard, &lo, &hi, &radius, &x,
                          &PyType_Type, &result, &heads, &stats, &refill))
        return -1;
    Py_buffer view;  /* x: the input buffer, of any shape: its length in float32 values */
    if (PyObject_GetBuffer(x, &view, PyBUF_SIMPLE) < 0)
        return -1;
    Py_ssize_t n = view.len / 4;
    PyBuffer_Release(&view);
    float *xdata = float_buffer(x, n, "Push: the input buffer");
    if (xdata == NULL)
        return -1;
    PyMem_Free(p->lo);
    PyMem_Free(p->hi);
    p->lo = p->hi = NULL;
    if (lo != Py_None) {
        if ((p->lo = doubles(lo, n, "Push: low bounds")) == NULL
            || (p->hi = doubles(hi, n, "Push: high bounds")) == NULL)
            return -1;
    }
    Py_XSETREF(p->fallback, Py_NewRef(fallback));
    Py_XSETREF(p->guard, Py_NewRef(guard));
    Py_XSETREF(p->x, Py_NewRef(x));
    Py_XSETREF(p->result, Py_NewRef(result));
    Py_XSETREF(p->heads, Py_NewRef(heads));
    PyTypeObject *rt = (PyTypeObject *)result;
    if ((p->step_at = slot_offset(rt, str_step)) < 0
        || (p->values_at = slot_offset(rt, str_values)) < 0
        || (p->heads_at = slot_offset(rt, str_heads)) < 0
        || (p->samples_at = slot_offset(Py_TYPE(stats), str_samples)) < 0)
        return -1;
    Py_XSETREF(p->stats, Py_NewRef(stats));
    Py_XSETREF(p->refill, Py_NewRef(refill));
    p->stale = 0;
    p->xdata = xdata;
    p->n = n;
    p->radius = radius;
    p->vectorcall = push_vectorcall;
    return 0;
}

static int push_traverse(Push *p, visitproc visit, void *arg) {
    Py_VISIT(p->fallback); Py_VISIT(p->guard); Py_VISIT(p->x);
    Py_VISIT(p->result); Py_VISIT(p->heads); Py_VISIT(p->stats); Py_VISIT(p->refill);
    return 0;
}

static int push_clear(Push *p) {
    Py_CLEAR(p->fallback); Py_CLEAR(p->guard); Py_CLEAR(p->x);
    Py_CLEAR(p->result); Py_CLEAR(p->heads); Py_CLEAR(p->stats); Py_CLEAR(p->refill);
    return 0;
}

static void push_free_bounds(Push *p) {
    PyMem_Free(p->lo);
    PyMem_Free(p->hi);
    p->lo = p->hi = NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* types and module                                                                          */

#define DEALLOC(name, type, extra)                 \
    static void name(type *s) {                   \
        PyObject_GC_UnTrack(s);                    \
        extra;                                     \
        Py_TYPE(s)->tp_clear((PyObject *)s);       \
        Py_TYPE(s)->tp_free((PyObject *)s);        \
    }

DEALLOC(litert1_dealloc, LiteRT1, (void)0)
DEALLOC(ortpair_dealloc, OrtPair, (void)0)
DEALLOC(guard_dealloc, Guard, guard_free_limits(s))
DEALLOC(push_dealloc, Push, push_free_bounds(s))

#define GC_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC)

static PyTypeObject LiteRT1Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wavedge.runtime._fast.LiteRT1",
    .tp_basicsize = sizeof(LiteRT1),
    .tp_flags = GC_FLAGS,
    .tp_doc = "A LiteRT step of one input, output and state tensor.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)litert1_init,
    .tp_dealloc = (destructor)litert1_dealloc,
    .tp_traverse = (traverseproc)litert1_traverse,
    .tp_clear = (inquiry)litert1_clear,
    .tp_methods = litert1_methods,
    .tp_getset = litert1_getset,
};

static PyTypeObject OrtPairType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wavedge.runtime._fast.OrtPair",
    .tp_basicsize = sizeof(OrtPair),
    .tp_flags = GC_FLAGS,
    .tp_doc = "An ONNX Runtime step over two IOBindings ping-ponging the state.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ortpair_init,
    .tp_dealloc = (destructor)ortpair_dealloc,
    .tp_traverse = (traverseproc)ortpair_traverse,
    .tp_clear = (inquiry)ortpair_clear,
    .tp_methods = ortpair_methods,
    .tp_getset = ortpair_getset,
};

static PyTypeObject GuardType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wavedge.runtime._fast.Guard",
    .tp_basicsize = sizeof(Guard),
    .tp_flags = GC_FLAGS | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Guard, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_doc = "Stream._run_step: one step with its output guarded.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)guard_init,
    .tp_dealloc = (destructor)guard_dealloc,
    .tp_traverse = (traverseproc)guard_traverse,
    .tp_clear = (inquiry)guard_clear,
    .tp_getset = guard_getset,
};

static PyMemberDef push_members[] = {
    {"stale", T_INT, offsetof(Push, stale), 0,
     "Set when a sample left its own noise in the input buffers: the next push zeros them."},
    {NULL}};

static PyTypeObject PushType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wavedge.runtime._fast.Push",
    .tp_basicsize = sizeof(Push),
    .tp_flags = GC_FLAGS | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Push, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_doc = "Stream.push for a plain 1-D float32 sample; the rest to the Python push.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)push_init,
    .tp_dealloc = (destructor)push_dealloc,
    .tp_traverse = (traverseproc)push_traverse,
    .tp_clear = (inquiry)push_clear,
    .tp_members = push_members,
};

/* finite(a): every value finite (True/False), or None when `a` is not an aligned
 * C-contiguous float32 ndarray (the caller's numpy check decides). */
static PyObject *finite_py(PyObject *module, PyObject *a) {
    Py_ssize_t n;
    const float *v = float32_values(a, &n);
    if (v == NULL)
        Py_RETURN_NONE;
    return PyBool_FromLong(finite_sum(v, n));
}

/* within(a, limit): every value in [-limit, limit] (NaN is not), or None as for finite(). */
static PyObject *within_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "within(a, limit)");
        return NULL;
    }
    double limit = PyFloat_AsDouble(args[1]);
    if (limit == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n;
    const float *v = float32_values(args[0], &n);
    if (v == NULL)
        Py_RETURN_NONE;
    return PyBool_FromLong(all_within(v, n, limit));
}

static PyMethodDef module_methods[] = {
    {"finite", finite_py, METH_O,
     "finite(a): every value of a float32 array finite; None for any other array."},
    {"within", (PyCFunction)(void (*)(void))within_py, METH_FASTCALL,
     "within(a, limit): every value of a float32 array in [-limit, limit]; None for any "
     "other array."},
    {"setup", setup, METH_VARARGS,
     "setup(numpy.ndarray, numpy.dtype('float32'), numpy.arange(3, dtype='float32')): check "
     "numpy's array layout; raises ImportError where it is not the expected one."},
    {NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wavedge.runtime._fast",
    "The per-sample path of Stream.push in C (stream.py holds its Python reference).", -1,
    module_methods};

PyMODINIT_FUNC PyInit__fast(void) {
    PyTypeObject *types[] = {&LiteRT1Type, &OrtPairType, &GuardType, &PushType};
    const char *names[] = {"LiteRT1", "OrtPair", "Guard", "Push"};
    if (!(str_copy = PyUnicode_InternFromString("copy"))
        || !(str_state = PyUnicode_InternFromString("state"))
        || !(str_samples = PyUnicode_InternFromString("samples"))
        || !(str_step = PyUnicode_InternFromString("step"))
        || !(str_values = PyUnicode_InternFromString("values"))
        || !(str_heads = PyUnicode_InternFromString("_heads")))
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    for (int i = 0; i < 4; i++) {
        if (PyType_Ready(types[i]) < 0 || PyModule_AddObjectRef(m, names[i],
                                                                (PyObject *)types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
