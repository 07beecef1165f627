/* JSON text from Arrow string and map<string,string> buffers, in one pass over the bytes.
 *
 * maps(n, maps, keys, items, offsets, text) -> length: one JSON object per row
 * quote(n, strings, offsets, text) -> length: each value as a JSON string, in quotes (null: empty)
 *
 * An array is given as a tuple of its buffers and its offset (Arrow's slicing):
 * maps (validity|None, offsets, offset), keys (offsets, data|None, offset),
 * items and strings (validity|None, offsets, data|None, offset). The results go into the writable
 * buffers offsets (n + 1 int32) and text, those of a string array of n rows starting at 0, and
 * the text's length is returned (see Out); transforms/kernels/jsonify.py wraps them and holds the
 * Python path that this must equal byte for byte (tests/test_jsonify.py compares them): a row
 * `{"k": "v", "k2": null}`, `{}` for an empty or null map; RFC 8259 escapes as json.dumps with
 * ensure_ascii=False writes them (\" \\ \b \f \n \r \t, other bytes below 0x20 as \u00xx),
 * every other byte as it is.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Per byte: 0 copied as is, 'u' written as \u00xx, else the letter after the backslash. */
static unsigned char ESCAPE[256];

static void init_escape(void) {
  for (int c = 0; c < 0x20; c++) ESCAPE[c] = 'u';
  ESCAPE['"'] = '"';
  ESCAPE['\\'] = '\\';
  ESCAPE['\b'] = 'b';
  ESCAPE['\f'] = 'f';
  ESCAPE['\n'] = 'n';
  ESCAPE['\r'] = 'r';
  ESCAPE['\t'] = 't';
}

/* The output text goes into a buffer the caller allocated from Arrow's memory pool, which keeps
 * its pages between batches (pipelines/__init__.py: ALLOCATOR_ENV): fresh pages from malloc cost
 * the kernel's zeroing, about a third of the time. What does not fit is only counted, so that
 * the caller can grow the buffer to the size returned and call again (only escapes make the
 * text longer than the caller's estimate). */
typedef struct { char *p; Py_ssize_t len, cap; } Out;

static inline void emit(Out *o, const void *s, Py_ssize_t n) {
  if (o->len + n <= o->cap) memcpy(o->p + o->len, s, (size_t)n);
  o->len += n;
}

/* Whether any of 8 bytes is below 0x20, '"' or '\\' (the bit tricks of "Bit Twiddling Hacks":
 * exact for "any", which is all the scan asks before it looks byte by byte). */
static inline int special8(uint64_t w) {
  const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
  uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
  return (((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & high ? 1 : 0;
}

/* Appends s[0..n) escaped. The common value holds nothing to escape: one scan, one copy. */
static void put_escaped(Out *o, const unsigned char *s, Py_ssize_t n) {
  static const char HEX[] = "0123456789abcdef";
  Py_ssize_t i = 0, from = 0;
  for (;;) {
    uint64_t w;
    for (; i + 8 <= n; i += 8) {
      memcpy(&w, s + i, 8);
      if (special8(w)) break;
    }
    if (i < n && i + 8 > n && n >= 8) {   /* the tail: the last 8 bytes, some seen already */
      memcpy(&w, s + n - 8, 8);
      if (!special8(w)) i = n;
    }
    while (i < n && !ESCAPE[s[i]]) i++;
    if (i > from) emit(o, s + from, i - from);   /* s may be NULL when n is 0 */
    if (i == n) return;
    unsigned char c = s[i], e = ESCAPE[c];
    char esc[6] = {'\\', (char)e, '0', '0', HEX[c >> 4], HEX[c & 15]};
    if (e == 'u') emit(o, esc, 6);
    else emit(o, esc, 2);
    from = ++i;
  }
}

/* A string array's buffers, checked against its length so that no row reads out of bounds. */
typedef struct {
  Py_buffer valid, offsets, data;
  Py_ssize_t offset;
} Strings;

static const int32_t *offs(const Strings *a) { return (const int32_t *)a->offsets.buf + a->offset; }

static int is_valid(const Strings *a, Py_ssize_t i) {
  if (!a->valid.buf) return 1;
  Py_ssize_t bit = a->offset + i;
  return (((const unsigned char *)a->valid.buf)[bit >> 3] >> (bit & 7)) & 1;
}

static void release(Strings *a) {
  if (a->valid.obj) PyBuffer_Release(&a->valid);
  if (a->offsets.obj) PyBuffer_Release(&a->offsets);
  if (a->data.obj) PyBuffer_Release(&a->data);
}

/* n + 1 offsets from a->offset fit the offsets buffer, and the validity bits fit theirs. */
static int check(const Strings *a, Py_ssize_t n, const char *what) {
  if (a->offset < 0 || a->offsets.len / 4 < a->offset + n + 1
      || (a->valid.buf && a->valid.len * 8 < a->offset + n)) {
    PyErr_Format(PyExc_ValueError, "%s: buffers shorter than the array", what);
    return -1;
  }
  return 0;
}

/* Row i's text, escaped; -1 (with the error set) if its offsets lie outside the data. Checked
 * here, as each row is read, rather than in a pass of its own over the offsets. */
static int put_value(Out *o, const Strings *a, Py_ssize_t i) {
  const int32_t *x = offs(a);
  if (x[i] < 0 || x[i] > x[i + 1] || x[i + 1] > (a->data.buf ? a->data.len : 0)) {
    PyErr_SetString(PyExc_ValueError, "string offsets outside the data");
    return -1;
  }
  put_escaped(o, (const unsigned char *)a->data.buf + x[i], x[i + 1] - x[i]);
  return 0;
}

/* The caller's output buffers: n + 1 int32 offsets, and the text. */
static int output(Py_buffer *offsets, Py_buffer *text, Py_ssize_t n, Out *o, int32_t **out) {
  if (offsets->len / 4 < n + 1) {
    PyErr_SetString(PyExc_ValueError, "offsets buffer shorter than the array");
    return -1;
  }
  *out = (int32_t *)offsets->buf;
  (*out)[0] = 0;
  o->p = text->buf;
  o->len = 0;
  o->cap = text->len;
  return 0;
}

/* The text's length (larger than the text buffer: it did not fit); it must fit int32 offsets. */
static PyObject *length(const Out *o) {
  if (o->len > INT32_MAX) {
    PyErr_SetString(PyExc_OverflowError, "JSON text over 2 GiB in one array: use smaller batches");
    return NULL;
  }
  return PyLong_FromSsize_t(o->len);
}

static PyObject *maps(PyObject *self, PyObject *args) {
  (void)self;
  Py_ssize_t n;
  Strings m = {0}, k = {0}, v = {0};
  Py_buffer offsets = {0}, text = {0};
  PyObject *r = NULL;
  Out o;
  int32_t *out;
  if (!PyArg_ParseTuple(args, "n(z*y*n)(y*z*n)(z*y*z*n)w*w*", &n, &m.valid, &m.offsets, &m.offset,
                        &k.offsets, &k.data, &k.offset, &v.valid, &v.offsets, &v.data, &v.offset,
                        &offsets, &text))
    return NULL;
  if (n < 0 || check(&m, n, "maps") || output(&offsets, &text, n, &o, &out)) goto done;
  const int32_t *entry = offs(&m);
  for (Py_ssize_t i = 0; i < n; i++)
    if (entry[i] < 0 || entry[i] > entry[i + 1]) {
      PyErr_SetString(PyExc_ValueError, "maps: offsets decrease");
      goto done;
    }
  /* keys and items are addressed from the first row's first entry: check that span only */
  k.offset += entry[0];
  v.offset += entry[0];
  if (check(&k, entry[n] - entry[0], "keys") || check(&v, entry[n] - entry[0], "items")) goto done;
  for (Py_ssize_t i = 0; i < n && o.len <= INT32_MAX; i++) {
    Py_ssize_t j = entry[i] - entry[0], end = entry[i + 1] - entry[0];
    if (j == end || !is_valid(&m, i)) emit(&o, "{}", 2);
    else {
      emit(&o, "{\"", 2);
      for (Py_ssize_t first = j; j < end; j++) {
        if (j > first) emit(&o, ", \"", 3);
        if (put_value(&o, &k, j)) goto done;
        if (is_valid(&v, j)) {
          emit(&o, "\": \"", 4);
          if (put_value(&o, &v, j)) goto done;
          emit(&o, "\"", 1);
        } else emit(&o, "\": null", 7);
      }
      emit(&o, "}", 1);
    }
    out[i + 1] = (int32_t)o.len;
  }
  r = length(&o);
done:
  release(&m);
  release(&k);
  release(&v);
  if (offsets.obj) PyBuffer_Release(&offsets);
  if (text.obj) PyBuffer_Release(&text);
  return r;
}

static PyObject *quote(PyObject *self, PyObject *args) {
  (void)self;
  Py_ssize_t n;
  Strings s = {0};
  Py_buffer offsets = {0}, text = {0};
  PyObject *r = NULL;
  Out o;
  int32_t *out;
  if (!PyArg_ParseTuple(args, "n(z*y*z*n)w*w*", &n, &s.valid, &s.offsets, &s.data, &s.offset,
                        &offsets, &text))
    return NULL;
  if (n < 0 || check(&s, n, "strings") || output(&offsets, &text, n, &o, &out)) goto done;
  for (Py_ssize_t i = 0; i < n && o.len <= INT32_MAX; i++) {
    if (is_valid(&s, i)) {   /* a null row stays empty: the caller keeps the validity */
      emit(&o, "\"", 1);
      if (put_value(&o, &s, i)) goto done;
      emit(&o, "\"", 1);
    }
    out[i + 1] = (int32_t)o.len;
  }
  r = length(&o);
done:
  release(&s);
  if (offsets.obj) PyBuffer_Release(&offsets);
  if (text.obj) PyBuffer_Release(&text);
  return r;
}

static PyMethodDef METHODS[] = {
    {"maps", maps, METH_VARARGS, "map<string,string> buffers -> JSON objects (see the file's top)"},
    {"quote", quote, METH_VARARGS, "string buffers -> JSON string literals (see the file's top)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_jsonify", NULL, -1, METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jsonify(void) {
  init_escape();
  return PyModule_Create(&MODULE);
}
