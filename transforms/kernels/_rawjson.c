/* Raw events (schemas/raw.py) -> column buffers, without a Python object per field.
 *
 * parse(payloads: list[bytes]) -> tuple of bytes, laid out as transforms/kernels/rawjson.py reads them.
 * A payload is taken only in the strict common case: a JSON object, valid UTF-8, whose known
 * fields have the expected JSON types (text fields strings, ts/server_ts integers within the
 * years 0..9999 or strings, metric_value a string or number, maps objects with distinct keys
 * whose values are strings, numbers, booleans or null, the latter kept as their JSON text),
 * each field once; unknown fields may hold any JSON. Anything else is marked for the msgspec
 * path (transforms/kernels/raw.py), which decides and explains it, so this parser never has to agree
 * with msgspec on anything but the common case.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_MS 253402300799999LL /* 9999-12-31T23:59:59.999Z */
#define MAX_DEPTH 64
#define MAX_KEYS 256 /* per map: duplicate keys are checked pairwise */

typedef struct { char *p; Py_ssize_t len, cap; } Buf;

static int reserve(Buf *b, Py_ssize_t extra) {
  if (b->len + extra <= b->cap) return 0;
  Py_ssize_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra) cap *= 2;
  char *p = PyMem_Realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int put(Buf *b, const void *src, Py_ssize_t n) {
  if (reserve(b, n)) return -1;
  memcpy(b->p + b->len, src, n);
  b->len += n;
  return 0;
}

static int put_i32(Buf *b, int32_t v) { return put(b, &v, 4); }
static int put_i64(Buf *b, int64_t v) { return put(b, &v, 8); }
static int put_u8(Buf *b, uint8_t v) { return put(b, &v, 1); }

/* Buffers, in the order of the returned tuple. */
enum {
  STATUS,                                   /* u8 per row: 0 taken, 1 for the msgspec path */
  TEXT0 = 1,                                /* 3 text fields x (offsets i32, data, valid u8) */
  TS0 = TEXT0 + 9,                          /* 2 instants x (kind u8, ms i64, offsets, data) */
  METRIC0 = TS0 + 8,                        /* kind u8, offsets, data */
  MAP0 = METRIC0 + 3,                       /* 4 maps x (entries i32, key offs, key data, value offs,
                                               value data, value kind u8) */
  NBUF = MAP0 + 24
};
enum { F_INSERT_ID, F_EVENT_KEY, F_ENVIRONMENT, F_TS, F_SERVER_TS, F_METRIC, F_MAP0, NFIELD = F_MAP0 + 4 };
static const char *FIELDS[NFIELD] = {"insert_id", "event_key", "environment", "ts", "server_ts",
                                     "metric_value", "identifiers", "user_properties",
                                     "event_properties", "hackle_properties"};

typedef struct { const unsigned char *s, *end; } In;

#define FAIL return -1
#define OOM return -2

static void ws(In *in) {
  while (in->s < in->end && (*in->s == ' ' || *in->s == '\t' || *in->s == '\n' || *in->s == '\r')) in->s++;
}

/* One UTF-8 sequence at s (s[0] >= 0x80) -> its length, or 0 if not valid UTF-8. */
static int utf8_len(const unsigned char *s, const unsigned char *end) {
  unsigned c = s[0];
  int n;
  unsigned min;
  if (c >= 0xC2 && c <= 0xDF) { n = 2; min = 0x80; }
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; min = 0x800; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; min = 0x10000; }
  else return 0;
  if (end - s < n) return 0;
  unsigned cp = c & (0x3F >> (n - 1));
  for (int i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

static int hex4(const unsigned char *s, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = s[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = (v << 4) | d;
  }
  *out = v;
  return 0;
}

/* A JSON string at in->s (at the opening quote), unescaped into `out` (NULL: only checked). */
static int string(In *in, Buf *out) {
  const unsigned char *s = in->s + 1, *end = in->end;
  for (;;) {
    const unsigned char *run = s;
    while (s < end && *s != '"' && *s != '\\' && *s >= 0x20 && *s < 0x80) s++;
    if (out && s > run && put(out, run, s - run)) OOM;
    if (s >= end) FAIL;
    unsigned c = *s;
    if (c == '"') { in->s = s + 1; return 0; }
    if (c < 0x20) FAIL;
    if (c >= 0x80) {
      int n = utf8_len(s, end);
      if (!n) FAIL;
      if (out && put(out, s, n)) OOM;
      s += n;
      continue;
    }
    /* a backslash */
    if (end - s < 2) FAIL;
    char e = (char)s[1], ch;
    s += 2;
    switch (e) {
      case '"': ch = '"'; break;
      case '\\': ch = '\\'; break;
      case '/': ch = '/'; break;
      case 'b': ch = '\b'; break;
      case 'f': ch = '\f'; break;
      case 'n': ch = '\n'; break;
      case 'r': ch = '\r'; break;
      case 't': ch = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (end - s < 4 || hex4(s, &cp)) FAIL;
        s += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF) FAIL;            /* a lone low surrogate */
        if (cp >= 0xD800 && cp <= 0xDBFF) {                 /* needs its low half */
          if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4(s + 2, &lo)
              || lo < 0xDC00 || lo > 0xDFFF) FAIL;
          s += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        unsigned char u[4];
        int n;
        if (cp < 0x80) { u[0] = cp; n = 1; }
        else if (cp < 0x800) { u[0] = 0xC0 | (cp >> 6); u[1] = 0x80 | (cp & 0x3F); n = 2; }
        else if (cp < 0x10000) {
          u[0] = 0xE0 | (cp >> 12); u[1] = 0x80 | ((cp >> 6) & 0x3F); u[2] = 0x80 | (cp & 0x3F); n = 3;
        } else {
          u[0] = 0xF0 | (cp >> 18); u[1] = 0x80 | ((cp >> 12) & 0x3F);
          u[2] = 0x80 | ((cp >> 6) & 0x3F); u[3] = 0x80 | (cp & 0x3F); n = 4;
        }
        if (out && put(out, u, n)) OOM;
        continue;
      }
      default: FAIL;
    }
    if (out && put(out, &ch, 1)) OOM;
  }
}

/* A JSON number at in->s -> 1 integer, 2 with a fraction or exponent; -1 not a JSON number. */
static int number(In *in) {
  const unsigned char *s = in->s, *end = in->end;
  int kind = 1;
  if (s < end && *s == '-') s++;
  if (s >= end) FAIL;
  if (*s == '0') s++;
  else if (*s >= '1' && *s <= '9') while (s < end && *s >= '0' && *s <= '9') s++;
  else FAIL;
  if (s < end && *s == '.') {
    kind = 2;
    s++;
    if (s >= end || *s < '0' || *s > '9') FAIL;
    while (s < end && *s >= '0' && *s <= '9') s++;
  }
  if (s < end && (*s == 'e' || *s == 'E')) {
    kind = 2;
    s++;
    if (s < end && (*s == '+' || *s == '-')) s++;
    if (s >= end || *s < '0' || *s > '9') FAIL;
    while (s < end && *s >= '0' && *s <= '9') s++;
  }
  in->s = s;
  return kind;
}

static int literal(In *in, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(in->end - in->s) < n || memcmp(in->s, word, n)) FAIL;
  in->s += n;
  return 0;
}

/* At '{' or '[': enters it; 1 if it is empty (then consumed), 0 if an element follows. */
static int open_(In *in, char open, char close) {
  if (in->s >= in->end || *in->s != open) FAIL;
  in->s++;
  ws(in);
  if (in->s < in->end && *in->s == close) { in->s++; return 1; }
  return 0;
}

/* After an element: 1 at the end (then consumed), 0 if another element follows. */
static int next_(In *in, char close) {
  ws(in);
  if (in->s >= in->end) FAIL;
  if (*in->s == close) { in->s++; return 1; }
  if (*in->s != ',') FAIL;
  in->s++;
  ws(in);
  return 0;
}

/* A member's name, unescaped into `out` (NULL: only checked), then its colon; `raw_end`, if
 * given, is set to the name's closing quote. */
static int name_(In *in, Buf *out, const unsigned char **raw_end) {
  int r;
  if (in->s >= in->end || *in->s != '"') FAIL;
  if ((r = string(in, out))) return r;
  if (raw_end) *raw_end = in->s - 1;
  ws(in);
  if (in->s >= in->end || *in->s != ':') FAIL;
  in->s++;
  ws(in);
  return 0;
}

/* Any JSON value, checked and skipped (an unknown field's). */
static int skip(In *in, int depth) {
  if (depth > MAX_DEPTH || in->s >= in->end) FAIL;
  int r;
  switch (*in->s) {
    case '"': return string(in, NULL);
    case 't': return literal(in, "true");
    case 'f': return literal(in, "false");
    case 'n': return literal(in, "null");
    case '{': case '[': {
      char open = *in->s, close = open == '{' ? '}' : ']';
      for (r = open_(in, open, close); r == 0; r = next_(in, close)) {
        if (open == '{' && (r = name_(in, NULL, NULL))) return r;
        if ((r = skip(in, depth + 1))) return r;
      }
      return r < 0 ? r : 0;
    }
    default:
      return number(in) < 0 ? -1 : 0;
  }
}

static int is_null(In *in) {
  return in->end - in->s >= 4 && !memcmp(in->s, "null", 4) ? (in->s += 4, 1) : 0;
}

static int text_field(In *in, Buf *b) {   /* offsets, data, valid */
  int r;
  if (is_null(in)) return put_i32(&b[0], (int32_t)b[1].len) || put_u8(&b[2], 0) ? -2 : 0;
  if (in->s >= in->end || *in->s != '"') FAIL;
  if ((r = string(in, &b[1]))) return r;
  if (b[1].len > INT32_MAX) FAIL;
  return put_i32(&b[0], (int32_t)b[1].len) || put_u8(&b[2], 1) ? -2 : 0;
}

static int instant_field(In *in, Buf *b) {   /* kind, ms, offsets, data */
  int r;
  if (is_null(in)) {
    return put_u8(&b[0], 0) || put_i64(&b[1], 0) || put_i32(&b[2], (int32_t)b[3].len) ? -2 : 0;
  }
  if (in->s < in->end && *in->s == '"') {
    if ((r = string(in, &b[3]))) return r;
    if (b[3].len > INT32_MAX) FAIL;
    return put_u8(&b[0], 2) || put_i64(&b[1], 0) || put_i32(&b[2], (int32_t)b[3].len) ? -2 : 0;
  }
  const unsigned char *start = in->s;
  if (number(in) != 1 || in->s - start > 16) FAIL;   /* 16 characters hold any |ms| <= MAX_MS */
  int64_t v = 0;
  for (const unsigned char *s = start + (*start == '-'); s < in->s; s++) v = v * 10 + (*s - '0');
  if (v > MAX_MS) FAIL;
  if (*start == '-') v = -v;
  return put_u8(&b[0], 1) || put_i64(&b[1], v) || put_i32(&b[2], (int32_t)b[3].len) ? -2 : 0;
}

static int metric_field(In *in, Buf *b) {   /* kind (0 null, 1 string, 2 integer, 3 other number), offsets, data */
  int r;
  uint8_t kind;
  if (is_null(in)) kind = 0;
  else if (in->s < in->end && *in->s == '"') {
    if ((r = string(in, &b[2]))) return r;
    kind = 1;
  } else {
    const unsigned char *start = in->s;
    int n = number(in);
    if (n < 0) FAIL;
    if (n == 1 && in->s - start == 2 && start[0] == '-' && start[1] == '0') FAIL;   /* -0 is 0 */
    if (n == 1 && in->s - start > 19) FAIL;   /* beyond 64 bits: msgspec's own rules */
    if (put(&b[2], start, in->s - start)) OOM;
    kind = n == 1 ? 2 : 3;
  }
  if (b[2].len > INT32_MAX) FAIL;
  return put_u8(&b[0], kind) || put_i32(&b[1], (int32_t)b[2].len) ? -2 : 0;
}

/* A map value: a string unescaped, anything else its JSON text as sent (true, 1e3, 0.000001),
 * and its kind: 0 text, 1 null. Objects and arrays: msgspec path. */
static int map_value(In *in, Buf *data, uint8_t *kind) {
  if (in->s >= in->end) FAIL;
  unsigned char c = *in->s;
  const unsigned char *start = in->s;
  *kind = 0;
  if (c == '"') return string(in, data);
  if (c == 'n') { *kind = 1; return literal(in, "null"); }
  if (c == 't' || c == 'f') {
    if (literal(in, c == 't' ? "true" : "false")) FAIL;
  } else if (number(in) < 0) FAIL;
  return put(data, start, in->s - start) ? -2 : 0;
}

static int map_field(In *in, Buf *b) {   /* entries, key offsets, key data, value offsets, value data, value kind */
  int r;
  int32_t first = (int32_t)(b[1].len / 4 - 1);   /* this row's first key: index into key offsets */
  if (!is_null(in)) {
    for (r = open_(in, '{', '}'); r == 0; r = next_(in, '}')) {
      if ((r = name_(in, &b[2], NULL))) return r;
      if (b[2].len > INT32_MAX) FAIL;
      int32_t *koff = (int32_t *)b[1].p;
      int32_t k = (int32_t)(b[1].len / 4 - 1), kstart = koff[k], klen = (int32_t)b[2].len - kstart;
      if (k - first >= MAX_KEYS) FAIL;
      for (int32_t j = first; j < k; j++)   /* a repeated key: msgspec keeps the last value */
        if (koff[j + 1] - koff[j] == klen && !memcmp(b[2].p + koff[j], b[2].p + kstart, klen)) FAIL;
      if (put_i32(&b[1], (int32_t)b[2].len)) OOM;
      uint8_t kind;
      if ((r = map_value(in, &b[4], &kind))) return r;
      if (b[4].len > INT32_MAX) FAIL;
      if (put_i32(&b[3], (int32_t)b[4].len) || put_u8(&b[5], kind)) OOM;
    }
    if (r < 0) return r;
  }
  return put_i32(&b[0], (int32_t)(b[1].len / 4 - 1)) ? -2 : 0;
}

static int field_of(const unsigned char *key, Py_ssize_t n) {
  for (int f = 0; f < NFIELD; f++)
    if ((Py_ssize_t)strlen(FIELDS[f]) == n && !memcmp(FIELDS[f], key, n)) return f;
  return -1;
}

static Buf *column(Buf *bufs, int f) {
  if (f <= F_ENVIRONMENT) return &bufs[TEXT0 + 3 * f];
  if (f <= F_SERVER_TS) return &bufs[TS0 + 4 * (f - F_TS)];
  if (f == F_METRIC) return &bufs[METRIC0];
  return &bufs[MAP0 + 6 * (f - F_MAP0)];
}

static int value(In *in, Buf *bufs, int f) {
  Buf *b = column(bufs, f);
  if (f <= F_ENVIRONMENT) return text_field(in, b);
  if (f <= F_SERVER_TS) return instant_field(in, b);
  if (f == F_METRIC) return metric_field(in, b);
  return map_field(in, b);
}

static int missing(Buf *bufs, int f) {   /* an absent field: null (maps: empty) */
  In none = {(const unsigned char *)"null", (const unsigned char *)"null" + 4};
  return value(&none, bufs, f);
}

/* One payload -> one row in every column; -1: not taken (nothing written), -2: out of memory. */
static int row(In *in, Buf *bufs) {
  int seen[NFIELD] = {0}, r;
  ws(in);
  for (r = open_(in, '{', '}'); r == 0; r = next_(in, '}')) {
    const unsigned char *key = in->s + 1, *key_end;
    if ((r = name_(in, NULL, &key_end))) return r;
    if (memchr(key, '\\', key_end - key)) FAIL;   /* an escaped name may still name a field */
    int f = field_of(key, key_end - key);
    if (f < 0) r = skip(in, 0);
    else if (seen[f]) FAIL;
    else { seen[f] = 1; r = value(in, bufs, f); }
    if (r) return r;
  }
  if (r < 0) return r;
  ws(in);
  if (in->s != in->end) FAIL;
  for (int f = 0; f < NFIELD; f++)
    if (!seen[f] && (r = missing(bufs, f))) return r;
  return 0;
}

static PyObject *parse(PyObject *self, PyObject *payloads) {
  (void)self;
  if (!PyList_Check(payloads)) {
    PyErr_SetString(PyExc_TypeError, "parse() takes a list of bytes");
    return NULL;
  }
  Buf bufs[NBUF];
  memset(bufs, 0, sizeof bufs);
  PyObject *result = NULL;
  int oom = 0;
  /* offsets start at 0: text, instants' text, metric, and maps' entries, keys and values */
  for (int i = 0; i < 3 && !oom; i++) oom = put_i32(&bufs[TEXT0 + 3 * i], 0);
  for (int i = 0; i < 2 && !oom; i++) oom = put_i32(&bufs[TS0 + 4 * i + 2], 0);
  if (!oom) oom = put_i32(&bufs[METRIC0 + 1], 0);
  for (int i = 0; i < 4 && !oom; i++)
    oom = put_i32(&bufs[MAP0 + 6 * i], 0) || put_i32(&bufs[MAP0 + 6 * i + 1], 0)
          || put_i32(&bufs[MAP0 + 6 * i + 3], 0);
  Py_ssize_t n = PyList_GET_SIZE(payloads), saved[NBUF];
  for (Py_ssize_t i = 0; i < n && !oom; i++) {
    PyObject *item = PyList_GET_ITEM(payloads, i);
    if (!PyBytes_Check(item)) {
      PyErr_SetString(PyExc_TypeError, "parse() takes a list of bytes");
      goto done;
    }
    for (int k = 0; k < NBUF; k++) saved[k] = bufs[k].len;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(item);
    In in = {s, s + PyBytes_GET_SIZE(item)};
    int r = row(&in, bufs);
    if (r == -2) oom = 1;
    else if (r) {   /* not taken: roll back, then an empty row keeps the columns aligned */
      for (int k = 0; k < NBUF; k++) bufs[k].len = saved[k];
      for (int f = 0; f < NFIELD && !oom; f++) oom = missing(bufs, f) != 0;
      if (!oom) oom = put_u8(&bufs[STATUS], 1);
    } else oom = put_u8(&bufs[STATUS], 0);
  }
  if (oom) {
    PyErr_NoMemory();
    goto done;
  }
  result = PyTuple_New(NBUF);
  for (int k = 0; result && k < NBUF; k++) {
    PyObject *b = PyBytes_FromStringAndSize(bufs[k].p ? bufs[k].p : "", bufs[k].len);
    if (!b) Py_CLEAR(result);
    else PyTuple_SET_ITEM(result, k, b);
  }
done:
  for (int k = 0; k < NBUF; k++) PyMem_Free(bufs[k].p);
  return result;
}

static PyMethodDef METHODS[] = {
    {"parse", parse, METH_O, "list[bytes] -> column buffers of the raw events (transforms/kernels/rawjson.py)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_rawjson", NULL, -1, METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rawjson(void) { return PyModule_Create(&MODULE); }
