/* shared_queue._core: the ring's hot path, compiled.
 *
 * One `Ring` per queue handle does the whole of a put, a get and a view's claim in one call:
 * encode the items (the C pickler's try; the queue's Python hooks, shared_queue._base.Items, for
 * what it does not cover), take and post semaphore counts, lock a side, check the header, copy
 * the bytes, commit, sleep and try again until the caller's deadline, and decode what a get
 * took, after the unlock (docs/design.md#synchronisation-protocol is the protocol; this file
 * is its only implementation). Python keeps what is not hot: argument checks of the public
 * methods, views' arrays, and the asyncio layer, which makes non-blocking calls and waits for
 * the semaphores itself. Nothing calls into Python while a queue lock is held (only the
 * test-only crash points).
 *
 * The layout is not written here: every header offset, slot field offset and slot state comes
 * from shared_queue._layout (its numpy dtypes) when a Ring is made (`layout` below).
 *
 * Locks are process-shared robust pthread mutexes in the header (lock_kind ROBUST): an
 * uncontended lock is no system call, and a holder's death is reported to the next locker as
 * EOWNERDEAD, which then carries on (the protocol makes a dead holder's partial work
 * invisible; see _reclaim). A blocking wait for a lock or a count releases the GIL, is cut into
 * slices so that signal handlers run, and honours the caller's deadline.
 *
 * Memory ordering: the counters and slot words a peer of the other side reads (tail, head,
 * reserved, a slot's length|state word, its ring entry, pins) are stored with release and
 * loaded with acquire semantics; fields of one's own side, read under one's own lock, are
 * relaxed (the mutex orders them).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dlfcn.h>
#include <unistd.h>

#define BIG_COPY (256 * 1024) /* copies at least this large run without the GIL */
#define LOCK_SLICE 0.1        /* seconds a blocked lock waits before it looks at signals */

typedef struct {
    PyObject_HEAD
    Py_buffer buf;  /* the mapping, exported while the Ring lives */
    char *base;
    int open;
    /* geometry */
    Py_ssize_t capacity, pool, slot_size, slots_offset, ring_offset;
    /* header fields: byte offsets */
    Py_ssize_t tail, reserved, allocs, cursor, puts, bytes_in, high, room_wait, put_waits,
        put_wait_ns, head, gets, bytes_out, get_waits, get_wait_ns, releases, sweep, pmutex, cmutex;
    /* slot fields: byte offsets inside a slot record; length is at 0, state at 4 */
    Py_ssize_t s_owner, s_pin, s_blob;
    /* slot states */
    uint32_t FREE, WRITING, READY, READING, DONE;
    sem_t *free, *fill, *room;
    double interval;   /* recovery_interval: room_wait_until's horizon */
    int raw;           /* copies out are bytearrays (raw arrays are built on them in place) */
    /* Calls of other threads inside a stretch without the GIL (a wait, a large copy): close()
     * then only marks the Ring closing, and the last of them releases the mapping and the
     * semaphores, which they still use. Both change only with the GIL held. */
    int busy, closing, unmapping;
    int waiting[3]; /* of them, in a wait on free, fill, room: close() wakes them */
    /* items: the largest payload, and the queue's own Python hooks for what is not hot
     * (shared_queue._base.Items): encode an item the C pickler alone cannot, the errors for an
     * item or a batch too large, decode a payload that is not a plain pickle, and what a get
     * does with a payload that does not decode */
    Py_ssize_t item_size;
    uint64_t last_moved; /* when a call of this handle last moved an item (monotonic ns) */
    PyObject *encode, *too_large, *too_many, *decode, *decode_failed;
    PyObject *Full, *Empty, *full_msg, *empty_msg, *closed_msg; /* the errors, with the queue's name */
} Ring;

static void ring_release_resources(Ring *r);
/* Around a stretch without the GIL. */
#define NOGIL_BEGIN(r) do { (r)->busy++; Py_BEGIN_ALLOW_THREADS
#define NOGIL_END(r) Py_END_ALLOW_THREADS (r)->busy--; } while (0)
/* At the end of a call: release what close() left to the last call out. */
static void settle(Ring *r) {
    if (r->unmapping && !r->busy) ring_release_resources(r);
}

/* -- test-only crash points ------------------------------------------------------------------ */
/* tests/_crash_children.py switches one on with _crash_at(name, side, count, callback); the
 * callback reports, and the process stops there for good (the test SIGKILLs it) -- except at
 * no_room, a pause: the callback returns and the put goes on. Off, a point costs one compare
 * of a global. Names: after_acquire (took counts, before the lock), mid_copy (holding the lock,
 * `count` payloads and half the next copied, nothing committed), held_commit (committed,
 * holding the lock), before_post (committed and unlocked, before posting the other side),
 * no_room (a put found no room, holding the producer lock, before it asks for `room`). */
enum { CP_NONE, CP_AFTER_ACQUIRE, CP_MID_COPY, CP_HELD_COMMIT, CP_BEFORE_POST, CP_NO_ROOM };
static int crash_point = CP_NONE;
static int crash_side;           /* 0 put, 1 get */
static Py_ssize_t crash_count;   /* mid_copy: payloads copied whole before it */
static PyObject *crash_callback; /* called with the GIL; does not return */

static void crash(int point, int side) {
    if (crash_point == point && crash_side == side && crash_callback) {
        PyObject *r = PyObject_CallNoArgs(crash_callback);
        Py_XDECREF(r);
        PyErr_Clear();
        if (point == CP_NO_ROOM) {
            crash_point = CP_NONE; /* once */
            return;
        }
        for (;;) pause();
    }
}

/* -- memory --------------------------------------------------------------------------------- */
#define P64(r, off) ((uint64_t *)((r)->base + (off)))
#define P32(r, off) ((uint32_t *)((r)->base + (off)))
static inline uint64_t acq(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t rlx(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void set(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void add(uint64_t *p, uint64_t v) { set(p, rlx(p) + v); }

static inline char *slot(Ring *r, Py_ssize_t s) { return r->base + r->slots_offset + s * r->slot_size; }
static inline uint32_t *ring_entry(Ring *r, uint64_t k) {
    return (uint32_t *)(r->base + r->ring_offset) + (k % (uint64_t)r->capacity);
}
static inline uint32_t state_of(char *sl) { return __atomic_load_n((uint32_t *)(sl + 4), __ATOMIC_ACQUIRE); }
static inline void set_state(char *sl, uint32_t st) { __atomic_store_n((uint32_t *)(sl + 4), st, __ATOMIC_RELEASE); }
static inline uint64_t *owner_of(Ring *r, char *sl) { return (uint64_t *)(sl + r->s_owner); }
static inline uint64_t *pin_of(Ring *r, char *sl) { return (uint64_t *)(sl + r->s_pin); }
/* What the ring and a slot say, kept inside the mapping even if another process of the same
 * user scribbled on it: an entry past the pool reads slot 0, a length past the blob is cut. */
static inline Py_ssize_t entry(Ring *r, uint64_t k) {
    uint32_t s = __atomic_load_n(ring_entry(r, k), __ATOMIC_ACQUIRE);
    return s < (uint64_t)r->pool ? (Py_ssize_t)s : 0;
}
static inline Py_ssize_t length_of(Ring *r, char *sl) {
    Py_ssize_t n = (Py_ssize_t)(acq((uint64_t *)sl) & 0xffffffffu);
    return n <= r->slot_size - r->s_blob ? n : r->slot_size - r->s_blob;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}
/* Timed waits. glibc >= 2.30 has CLOCK_MONOTONIC ones (pthread_mutex_clocklock,
 * sem_clockwait); wheels are built against glibc 2.17, so they are looked up at import and the
 * CLOCK_REALTIME ones used where they are missing (a wall-clock step then stretches a wait by
 * its size; every wait here is a slice of at most one recovery_interval). */
typedef int (*clocklock_fn)(pthread_mutex_t *, clockid_t, const struct timespec *);
typedef int (*clockwait_fn)(sem_t *, clockid_t, const struct timespec *);
static clocklock_fn mutex_clocklock;
static clockwait_fn sem_clockwait_;

static struct timespec after(clockid_t clock, double seconds) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    if (seconds > 1e6) seconds = 1e6; /* a slice; the callers loop */
    long long ns = ts.tv_nsec + (long long)(seconds * 1e9);
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    return ts;
}
static int mutex_timedwait(pthread_mutex_t *m, double seconds) {
    if (mutex_clocklock) {
        struct timespec ts = after(CLOCK_MONOTONIC, seconds);
        return mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
    }
    struct timespec ts = after(CLOCK_REALTIME, seconds);
    return pthread_mutex_timedlock(m, &ts);
}
static int sem_timedwait_for(sem_t *s, double seconds) { /* -1 and errno, as sem_timedwait */
    if (sem_clockwait_) {
        struct timespec ts = after(CLOCK_MONOTONIC, seconds);
        return sem_clockwait_(s, CLOCK_MONOTONIC, &ts);
    }
    struct timespec ts = after(CLOCK_REALTIME, seconds);
    return sem_timedwait(s, &ts);
}

/* -- liveness -------------------------------------------------------------------------------- */
/* The start time (clock ticks since boot) of process `pid`: 0 if it is gone or a zombie,
 * UNKNOWN if /proc could not tell (no descriptor free, no /proc): only positive evidence of
 * death may free what a process holds. */
#define UNKNOWN (~0ULL)
static unsigned long long start_time(long pid) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ESRCH ? 0 : UNKNOWN;
    ssize_t n = read(fd, text, sizeof text - 1);
    int err = errno;
    close(fd);
    if (n < 0) return err == ESRCH ? 0 : UNKNOWN;
    if (n == 0) return 0;
    text[n] = 0;
    char *p = strrchr(text, ')'); /* the command name may hold spaces and parentheses */
    if (!p || p[1] != ' ') return 0;
    p += 2;
    if (*p == 'Z' || *p == 'X') return 0;
    for (int field = 3; field < 22; field++) { /* field 3 is the state, 22 the start time */
        p = strchr(p, ' ');
        if (!p) return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}
/* An owner id is pid | (start time & 0xffffffff) << 32 (shared_queue._queue.owner_id). The
 * processes sharing a queue must share a PID namespace (docs/design.md#platform-notes). */
static int owner_alive(uint64_t owner) {
    unsigned long long st = start_time((long)(owner & 0xffffffffu));
    return st == UNKNOWN || (st != 0 && (st & 0xffffffffu) == (owner >> 32));
}

/* -- locks ----------------------------------------------------------------------------------- */
static pthread_mutex_t *mutex(Ring *r, int side) { return (pthread_mutex_t *)(r->base + (side ? r->cmutex : r->pmutex)); }

/* Lock a side by `deadline` (monotonic seconds; < 0: none). 1 locked, 0 timed out, -1 error.
 * With `signals`, Python signal handlers run between slices of the wait (and may raise);
 * without, none runs: for a caller that already holds the other lock, or must not fail. */
static int lock(Ring *r, int side, double deadline, int signals) {
    pthread_mutex_t *m = mutex(r, side);
    int rc = pthread_mutex_trylock(m);
    for (;;) {
        if (rc == 0) return 1;
        if (rc == EOWNERDEAD) { /* its holder died inside: carry on (see _reclaim) */
            pthread_mutex_consistent(m);
            return 1;
        }
        if (rc != EBUSY && rc != ETIMEDOUT && rc != EINTR) {
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (rc != EBUSY && signals) {
            if (PyErr_CheckSignals() < 0) return -1;
            if (r->closing) { /* a signal handler closed the handle */
                PyErr_SetObject(PyExc_ValueError, r->closed_msg);
                return -1;
            }
        }
        double wait = LOCK_SLICE;
        if (deadline >= 0) {
            double left = deadline - mono();
            if (left <= 0) return 0;
            if (left < wait) wait = left;
        }
        NOGIL_BEGIN(r);
        rc = mutex_timedwait(m, wait);
        NOGIL_END(r);
        if (r->closing) { /* the handle was closed meanwhile */
            if (rc == 0 || rc == EOWNERDEAD) {
                if (rc == EOWNERDEAD) pthread_mutex_consistent(m);
                pthread_mutex_unlock(m);
            }
            PyErr_SetObject(PyExc_ValueError, r->closed_msg);
            return -1;
        }
    }
}
static void unlock(Ring *r, int side) { pthread_mutex_unlock(mutex(r, side)); }

/* Take up to `want` counts of `sem` without waiting, on top of `have`. */
static Py_ssize_t take_counts(sem_t *sem, Py_ssize_t have, Py_ssize_t want) {
    while (have < want && sem_trywait(sem) == 0) have++;
    return have;
}
static void post(sem_t *sem, Py_ssize_t n) {
    while (n-- > 0) sem_post(sem);
}

/* An attempt's start: take up to `want` counts of the side's own semaphore on top of *tokens,
 * then lock the side by `deadline`. 1 locked, 0 timed out (*tokens holds the counts), -1 error
 * (the counts taken here are posted back; those the caller passed in stay the caller's). */
static int begin(Ring *r, int side, Py_ssize_t want, Py_ssize_t *tokens, double deadline) {
    sem_t *own = side ? r->fill : r->free;
    Py_ssize_t had = *tokens;
    *tokens = take_counts(own, had, want);
    if (*tokens > had) crash(CP_AFTER_ACQUIRE, side);
    int locked = lock(r, side, deadline, 1);
    if (locked < 0) {
        post(own, *tokens - had);
        *tokens = had;
    }
    return locked;
}

/* After a get or a released slot: wake a put that sleeps for room, if one asked lately. */
static void wake_room(Ring *r) {
    /* Pairs with ask_room: the waiter stores the flag then reads the counters; this side stores
     * the counters then reads the flag. Only a full fence on both sides orders that. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t until = acq(P64(r, r->room_wait));
    if (until && until > mono_ns()) {
        int v = 1;
        if (sem_getvalue(r->room, &v) == 0 && v == 0) sem_post(r->room);
    }
}

/* -- the pool -------------------------------------------------------------------------------- */
static Py_ssize_t pool_free(Ring *r) {
    return r->pool - (Py_ssize_t)(acq(P64(r, r->allocs)) - acq(P64(r, r->releases)));
}
static Py_ssize_t ring_room(Ring *r) {
    return r->capacity - (Py_ssize_t)(acq(P64(r, r->tail)) + acq(P64(r, r->reserved)) - acq(P64(r, r->head)));
}

/* Find `n` FREE slots from the cursor into `out` (producer lock); 0 if there are not n. */
static int find_free(Ring *r, Py_ssize_t n, Py_ssize_t *out) {
    if (pool_free(r) < n) return 0;
    Py_ssize_t s = (Py_ssize_t)rlx(P64(r, r->cursor)), found = 0;
    for (Py_ssize_t i = 0; i < r->pool; i++, s++) {
        if (s >= r->pool) s = 0;
        if (state_of(slot(r, s)) == r->FREE) {
            out[found++] = s;
            if (found == n) {
                set(P64(r, r->cursor), (uint64_t)(s + 1));
                return 1;
            }
        }
    }
    return 0; /* the counters were off: a process died mid-put (see _reclaim) */
}

/* Give a consumed slot back to the pool, or mark it DONE if a put_view array pins it
 * (consumer lock). Returns 1 if it went to the pool. */
static int free_slot(Ring *r, char *sl) {
    if (acq(pin_of(r, sl))) {
        set_state(sl, r->DONE);
        return 0;
    }
    set_state(sl, r->FREE);
    return 1;
}

/* Free the DONE slots nothing pins any more (consumer lock). */
static Py_ssize_t sweep(Ring *r) {
    __atomic_exchange_n(P64(r, r->sweep), 0, __ATOMIC_ACQ_REL); /* before the scan, not after */
    Py_ssize_t n = 0;
    for (Py_ssize_t s = 0; s < r->pool; s++) {
        char *sl = slot(r, s);
        if (state_of(sl) == r->DONE && !acq(pin_of(r, sl))) {
            set_state(sl, r->FREE);
            n++;
        }
    }
    rel(P64(r, r->releases), rlx(P64(r, r->releases)) + n);
    return n;
}

/* Give back every slot that nothing in the ring or alive refers to (both locks). With
 * `recover`, views and pins of dead processes go too and `reserved` is recounted. Returns
 * > 0 if the pool or the ring gained room. */
static Py_ssize_t reclaim(Ring *r, int recover) {
    Py_ssize_t before = pool_free(r); /* before the sweep: what it frees counts too */
    sweep(r);
    uint64_t head = acq(P64(r, r->head)), tail = acq(P64(r, r->tail));
    char *queued = calloc((size_t)r->pool, 1);
    if (!queued) return 0;
    for (uint64_t k = head; k < tail; k++) {
        uint32_t s = __atomic_load_n(ring_entry(r, k), __ATOMIC_ACQUIRE);
        if (s < (uint64_t)r->pool) queued[s] = 1;
    }
    Py_ssize_t nfree = 0, writing = 0;
    for (Py_ssize_t s = 0; s < r->pool; s++) {
        char *sl = slot(r, s);
        uint32_t st = state_of(sl);
        uint64_t pin = acq(pin_of(r, sl));
        if (recover && pin && !owner_alive(pin)) {
            rel(pin_of(r, sl), 0); /* its put_view array died with its process */
            pin = 0;
        }
        if (st == r->FREE) { nfree++; continue; }
        if (queued[s]) continue;
        if (st == r->WRITING || st == r->READING) {
            if (!recover || owner_alive(acq(owner_of(r, sl)))) {
                writing += st == r->WRITING;
                continue;
            }
        } else if (st == r->DONE && pin) {
            continue;
        }
        /* READY outside the ring (a put died before its commit, or a get after its own), a
         * DONE slot nothing pins, or a view of a dead process */
        if (pin) {
            set_state(sl, r->DONE);
        } else {
            set_state(sl, r->FREE);
            nfree++;
        }
    }
    free(queued);
    Py_ssize_t gained = nfree - before;
    uint64_t allocs = rlx(P64(r, r->allocs));
    if (allocs < (uint64_t)(r->pool - nfree)) { /* a put died between its slot stores and its count */
        allocs = (uint64_t)(r->pool - nfree);
        set(P64(r, r->allocs), allocs);
    }
    rel(P64(r, r->releases), allocs - (uint64_t)(r->pool - nfree));
    if (recover) {
        uint64_t reserved = rlx(P64(r, r->reserved));
        gained += (Py_ssize_t)reserved - writing;
        rel(P64(r, r->reserved), (uint64_t)writing);
    }
    return gained;
}

/* -- payloads -------------------------------------------------------------------------------- */
/* A put's payloads, each bytes or a tuple of buffers written back to back, gathered before the
 * lock: nothing under the lock calls into Python. */
typedef struct {
    Py_ssize_t n, nparts;
    Py_ssize_t *sizes;  /* per payload */
    Py_ssize_t *first;  /* per payload: index of its first part */
    const char **ptr;   /* per part */
    Py_ssize_t *len;    /* per part */
    Py_buffer *views;   /* per part; obj NULL for bytes */
    Py_ssize_t total;
    /* The usual put (a few items of a part or two) needs no allocation: these hold it. */
#define SMALL 4
    Py_ssize_t sizes_[SMALL + 1], first_[SMALL + 1], len_[SMALL + 1];
    const char *ptr_[SMALL + 1];
    Py_buffer views_[SMALL + 1];
} Payloads;

static void payloads_free(Payloads *p) {
    if (p->views)
        for (Py_ssize_t i = 0; i < p->nparts; i++)
            if (p->views[i].obj) PyBuffer_Release(&p->views[i]);
    if (p->sizes != p->sizes_) PyMem_Free(p->sizes);
    if (p->first != p->first_) PyMem_Free(p->first);
    if (p->ptr != p->ptr_) PyMem_Free(p->ptr);
    if (p->len != p->len_) PyMem_Free(p->len);
    if (p->views != p->views_) PyMem_Free(p->views);
}

static int payloads_get(PyObject *const *xs, Py_ssize_t n, Payloads *p) {
    p->n = n;
    p->nparts = p->total = 0;
    p->sizes = p->first = p->len = NULL;
    p->ptr = NULL;
    p->views = NULL;
    Py_ssize_t parts = 0;
    for (Py_ssize_t i = 0; i < p->n; i++) {
        PyObject *x = xs[i];
        parts += PyBytes_CheckExact(x) ? 1 : (PyTuple_Check(x) ? PyTuple_GET_SIZE(x) : 1);
    }
    if (p->n <= SMALL && parts <= SMALL) {
        p->sizes = p->sizes_, p->first = p->first_, p->ptr = p->ptr_, p->len = p->len_;
        p->views = p->views_;
        memset(p->sizes, 0, (size_t)(p->n + 1) * sizeof *p->sizes);
        memset(p->views, 0, (size_t)(parts + 1) * sizeof *p->views);
    } else {
        p->sizes = PyMem_Calloc(p->n + 1, sizeof *p->sizes);
        p->first = PyMem_Calloc(p->n + 1, sizeof *p->first);
        p->ptr = PyMem_Calloc(parts + 1, sizeof *p->ptr);
        p->len = PyMem_Calloc(parts + 1, sizeof *p->len);
        p->views = PyMem_Calloc(parts + 1, sizeof *p->views);
    }
    if (!p->sizes || !p->first || !p->ptr || !p->len || !p->views) {
        payloads_free(p);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < p->n; i++) {
        PyObject *x = xs[i];
        p->first[i] = j;
        if (PyBytes_CheckExact(x)) {
            p->ptr[j] = PyBytes_AS_STRING(x);
            p->len[j] = PyBytes_GET_SIZE(x);
            p->sizes[i] = p->len[j++];
        } else {
            Py_ssize_t m = PyTuple_Check(x) ? PyTuple_GET_SIZE(x) : 1;
            for (Py_ssize_t q = 0; q < m; q++) {
                PyObject *part = PyTuple_Check(x) ? PyTuple_GET_ITEM(x, q) : x;
                if (PyObject_GetBuffer(part, &p->views[j], PyBUF_C_CONTIGUOUS) < 0) {
                    p->nparts = j;
                    payloads_free(p);
                    return -1;
                }
                p->ptr[j] = p->views[j].buf;
                p->len[j] = p->views[j].len;
                p->sizes[i] += p->len[j++];
            }
        }
        p->total += p->sizes[i];
    }
    p->first[p->n] = j;
    p->nparts = j;
    return 0;
}


/* Copy payload i into the blob at `dst`; with `half`, only the first half of it. */
static void copy_payload(Payloads *p, Py_ssize_t i, char *dst, int half) {
    Py_ssize_t limit = half ? p->sizes[i] / 2 : p->sizes[i], done = 0;
    for (Py_ssize_t j = p->first[i]; j < p->first[i + 1] && done < limit; j++) {
        Py_ssize_t m = p->len[j] < limit - done ? p->len[j] : limit - done;
        memcpy(dst + done, p->ptr[j], (size_t)m);
        done += m;
    }
}

/* -- results ---------------------------------------------------------------------------------- */
/* A tuple of two integers: cheaper than Py_BuildValue, which parses its format on every call. */
static PyObject *pair(Py_ssize_t a, Py_ssize_t b) {
    PyObject *x = PyLong_FromSsize_t(a), *y = PyLong_FromSsize_t(b), *t = NULL;
    if (x && y) t = PyTuple_Pack(2, x, y);
    Py_XDECREF(x);
    Py_XDECREF(y);
    return t;
}

/* -- the Ring type --------------------------------------------------------------------------- */
static int ring_check(Ring *r) {
    if (!r->open) {
        PyErr_SetObject(PyExc_ValueError, r->closed_msg ? r->closed_msg : Py_None);
        return -1;
    }
    return 0;
}

static void record_wait(Ring *r, Py_ssize_t waits_off, Py_ssize_t ns_off, uint64_t waited_ns) {
    if (waited_ns) {
        add(P64(r, waits_off), 1);
        add(P64(r, ns_off), waited_ns);
    }
}

static void ask_room(Ring *r) {
    uint64_t until = mono_ns() + (uint64_t)(r->interval * 1e9);
    if (until > rlx(P64(r, r->room_wait))) rel(P64(r, r->room_wait), until);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* see wake_room */
}

/* -- attempts -------------------------------------------------------------------------------- */
/* What one call moves, and what it got. An attempt takes counts, locks its side, checks the
 * header (the truth; the counts are a sleepable estimate), moves, commits, unlocks and posts. */
enum { OP_PUT, OP_GET, OP_CLAIM_PUT, OP_CLAIM_GET };
typedef struct {
    int op;
    int will_wait;          /* puts: ask for `room` when there is none (the caller will wait) */
    Payloads *p;            /* OP_PUT */
    Py_ssize_t want, limit; /* counts to hold; OP_GET: the most items to take */
    uint64_t owner;         /* claims: this process's owner id */
    PyObject *got;          /* OP_GET: the payloads taken (a new list) */
    Py_ssize_t off, size;   /* claims: the slot's offset; OP_CLAIM_GET: the item's size */
} Op;

/* Each attempt returns 1 moved, 0 not (no items, no room), -2 the lock was not had by
 * `deadline`, -1 error; *tokens is what the caller holds afterwards, *on_room says why a put
 * found no room: 1 a batch the ring has no room for, 2 the pool has too few FREE slots. */
static int put_attempt(Ring *r, Op *op, Py_ssize_t *tokens, uint64_t waited, double deadline,
                       int roomed, int *on_room) {
    Payloads *p = op->p;
    Py_ssize_t n = p->n, moved = 0;
    Py_ssize_t local[8], *slots = n <= 8 ? local : PyMem_Malloc(sizeof *slots * n);
    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    int locked = begin(r, 0, n, tokens, deadline);
    if (locked <= 0) {
        if (slots != local) PyMem_Free(slots);
        return locked < 0 ? -1 : -2;
    }
    uint64_t tail = rlx(P64(r, r->tail));
    Py_ssize_t used = (Py_ssize_t)(tail + rlx(P64(r, r->reserved)) - acq(P64(r, r->head)));
    Py_ssize_t room = r->capacity - used;
    if (room < n) {
        *on_room = n > 1;       /* a batch waits for room on `room` */
    } else if (!find_free(r, n, slots)) {
        *on_room = 2;           /* the ring has room, the pool not: views hold the slots */
    } else {
        int nogil = p->total >= BIG_COPY && crash_point == CP_NONE;
        if (nogil) r->busy++;
        PyThreadState *ts = nogil ? PyEval_SaveThread() : NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            char *blob = slot(r, slots[i]) + r->s_blob;
            if (crash_point == CP_MID_COPY && crash_side == 0 && i == crash_count) {
                copy_payload(p, i, blob, 1);
                crash(CP_MID_COPY, 0);
            }
            copy_payload(p, i, blob, 0);
        }
        if (ts) {
            PyEval_RestoreThread(ts);
            r->busy--;
        }
        /* The slots leave the pool only now, so a put killed while copying leaves them FREE. */
        for (Py_ssize_t i = 0; i < n; i++) {
            rel((uint64_t *)slot(r, slots[i]), (uint64_t)p->sizes[i] | (uint64_t)r->READY << 32);
            __atomic_store_n(ring_entry(r, tail + i), (uint32_t)slots[i], __ATOMIC_RELEASE);
        }
        add(P64(r, r->allocs), n);
        rel(P64(r, r->tail), tail + n); /* commit point: the items are visible from here on */
        crash(CP_HELD_COMMIT, 0);
        add(P64(r, r->puts), n);
        add(P64(r, r->bytes_in), p->total);
        if ((uint64_t)(used + n) > rlx(P64(r, r->high))) set(P64(r, r->high), used + n);
        record_wait(r, r->put_waits, r->put_wait_ns, waited);
        moved = n;
        room -= n;
    }
    if (!moved) crash(CP_NO_ROOM, 0);
    if (!moved && *on_room && op->will_wait) ask_room(r);
    unlock(r, 0);
    if (slots != local) PyMem_Free(slots);
    if (moved) {
        crash(CP_BEFORE_POST, 0);
        post(r->fill, n);
        if (roomed && rlx(P64(r, r->room_wait)) && pool_free(r) > 0) wake_room(r); /* pass it on */
        *tokens = 0; /* used, or surplus counts that the header did not back */
        return 1;
    }
    if (*tokens > room) *tokens = room < 0 ? 0 : room; /* the rest were surplus */
    return 0;
}

static int get_attempt(Ring *r, Op *op, Py_ssize_t *tokens, uint64_t waited, double deadline) {
    Py_ssize_t had = *tokens;
    int locked = begin(r, 1, op->want, tokens, deadline);
    if (locked <= 0) return locked < 0 ? -1 : -2;
    uint64_t head = rlx(P64(r, r->head));
    Py_ssize_t avail = (Py_ssize_t)(acq(P64(r, r->tail)) - head);
    Py_ssize_t k = avail < op->limit ? avail : op->limit;
    if (k < 1) {
        unlock(r, 1);
        *tokens = 0; /* surplus: the header has no item for them */
        return 0;
    }
    /* The list is made after the unlock: making it may run the garbage collector, and so
     * finalizers (Python code) -- never under a lock. The copies' bytes objects cannot. */
    PyObject *xlocal[8], **xs = k <= 8 ? xlocal : PyMem_Calloc(k, sizeof *xs);
    char *local[8], **sls = k <= 8 ? local : PyMem_Malloc(sizeof *sls * k);
    Py_ssize_t made = 0;
    if (!xs || !sls) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_ssize_t nbytes = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        if (crash_point == CP_MID_COPY && crash_side == 1 && i == crash_count) crash(CP_MID_COPY, 1);
        char *sl = slot(r, entry(r, head + i));
        Py_ssize_t size = length_of(r, sl);
        char *blob = sl + r->s_blob;
        PyObject *x = (!r->raw && size && (unsigned char)blob[0] == 0x80)
                          ? PyBytes_FromStringAndSize(NULL, size)
                          : PyByteArray_FromStringAndSize(NULL, size); /* writable: arrays live in it */
        if (!x) goto fail;
        char *dst = PyBytes_CheckExact(x) ? PyBytes_AS_STRING(x) : PyByteArray_AS_STRING(x);
        if (size >= BIG_COPY) {
            NOGIL_BEGIN(r);
            memcpy(dst, blob, (size_t)size);
            NOGIL_END(r);
        } else {
            memcpy(dst, blob, (size_t)size);
        }
        xs[made++] = x;
        sls[i] = sl;
        nbytes += size;
    }
    rel(P64(r, r->head), head + k); /* commit point: the items are taken */
    crash(CP_HELD_COMMIT, 1);
    Py_ssize_t freed = 0;
    for (Py_ssize_t i = 0; i < k; i++) freed += free_slot(r, sls[i]);
    rel(P64(r, r->releases), rlx(P64(r, r->releases)) + freed); /* after the stores */
    add(P64(r, r->gets), k);
    add(P64(r, r->bytes_out), nbytes);
    record_wait(r, r->get_waits, r->get_wait_ns, waited);
    if (acq(P64(r, r->sweep))) sweep(r); /* wake_room below tells waiters */
    unlock(r, 1);
    if (sls != local) PyMem_Free(sls);
    crash(CP_BEFORE_POST, 1);
    post(r->free, k);
    wake_room(r);
    *tokens = 0;
    PyObject *items = PyList_New(k);
    if (!items) {
        for (Py_ssize_t i = 0; i < k; i++) Py_DECREF(xs[i]); /* taken, and lost: out of memory */
        if (xs != xlocal) PyMem_Free(xs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < k; i++) PyList_SET_ITEM(items, i, xs[i]);
    if (xs != xlocal) PyMem_Free(xs);
    op->got = items;
    return 1;
fail:
    unlock(r, 1); /* nothing committed: the items stay */
    for (Py_ssize_t i = 0; i < made; i++) Py_DECREF(xs[i]);
    if (xs && xs != xlocal) PyMem_Free(xs);
    if (sls && sls != local) PyMem_Free(sls);
    post(r->fill, *tokens - had);
    *tokens = had;
    return -1;
}

/* A FREE slot for a put_view (WRITING, owned by op->owner) and a reserved ring entry. */
static int claim_put_attempt(Ring *r, Op *op, Py_ssize_t *tokens, uint64_t waited, double deadline,
                             int *on_room) {
    int locked = begin(r, 0, 1, tokens, deadline);
    if (locked <= 0) return locked < 0 ? -1 : -2;
    Py_ssize_t used = (Py_ssize_t)(rlx(P64(r, r->tail)) + rlx(P64(r, r->reserved)) - acq(P64(r, r->head)));
    Py_ssize_t room = r->capacity - used, s = -1;
    int moved = 0;
    if (room >= 1) {
        if (find_free(r, 1, &s)) {
            char *sl = slot(r, s);
            rel(owner_of(r, sl), op->owner);
            set_state(sl, r->WRITING);
            add(P64(r, r->allocs), 1);
            rel(P64(r, r->reserved), rlx(P64(r, r->reserved)) + 1); /* the claim */
            if ((uint64_t)(used + 1) > rlx(P64(r, r->high))) set(P64(r, r->high), used + 1);
            record_wait(r, r->put_waits, r->put_wait_ns, waited);
            op->off = sl - r->base;
            moved = 1;
            room -= 1;
        } else {
            *on_room = 2;
            if (op->will_wait) ask_room(r);
        }
    }
    unlock(r, 0);
    if (moved) *tokens = 0;
    else if (*tokens > room) *tokens = room < 0 ? 0 : room;
    return moved;
}

/* The item at the head, for a get_view (READING, owned by op->owner). */
static int claim_get_attempt(Ring *r, Op *op, Py_ssize_t *tokens, uint64_t waited, double deadline) {
    int locked = begin(r, 1, 1, tokens, deadline);
    if (locked <= 0) return locked < 0 ? -1 : -2;
    uint64_t head = rlx(P64(r, r->head));
    Py_ssize_t avail = (Py_ssize_t)(acq(P64(r, r->tail)) - head);
    int moved = 0;
    if (avail >= 1) {
        char *sl = slot(r, entry(r, head));
        rel(owner_of(r, sl), op->owner);
        set_state(sl, r->READING);
        rel(P64(r, r->head), head + 1); /* commit point: the item is taken */
        op->size = length_of(r, sl);
        add(P64(r, r->gets), 1);
        add(P64(r, r->bytes_out), op->size);
        record_wait(r, r->get_waits, r->get_wait_ns, waited);
        op->off = sl - r->base;
        moved = 1;
    }
    Py_ssize_t swept = acq(P64(r, r->sweep)) ? sweep(r) : 0;
    unlock(r, 1);
    if (moved) post(r->free, 1);
    if (moved || swept) wake_room(r);
    *tokens = 0;
    return moved;
}

/* _reclaim under both locks, producer first: > 0 if the pool or the ring gained room, 0 if not
 * (or the locks were not had by `deadline`), -1 error. */
static Py_ssize_t catch_up(Ring *r, int recover, double deadline) {
    int locked = lock(r, 0, deadline, 1);
    if (locked <= 0) return locked;
    locked = lock(r, 1, deadline, 0); /* holding the producer lock: no signal handler runs */
    if (locked <= 0) {
        unlock(r, 0);
        return locked;
    }
    Py_ssize_t gained = reclaim(r, recover);
    unlock(r, 1);
    unlock(r, 0);
    if (gained > 0) wake_room(r); /* other puts may wait for what came back */
    return gained > 0 ? gained : 0;
}

/* -- waiting --------------------------------------------------------------------------------- */
/* Test only (tests/_crash_children.py): called, with the GIL, before each sleep on a semaphore. */
static PyObject *wait_hook;

/* A call about to sleep first polls the semaphore for up to SPIN_NS, yielding the CPU between
 * polls (without the GIL), while its handle moved an item within SPIN_AFTER_NS: in a busy
 * exchange the other side posts within microseconds, and a kernel sleep and wake-up cost tens.
 * sched_yield rather than a pause: when processes outnumber cores the poller gives its core to
 * one that may post (a pause-spin cost 20-30 % of the throughput of 4 producers and 4 consumers
 * on 2 cores; docs/benchmarks.md has the measurements). After an idle spell it sleeps at once. */
#ifndef SPIN_NS /* a build may say otherwise, to measure (CFLAGS=-DSPIN_NS=0: no spin) */
#define SPIN_NS 20000
#endif
#define SPIN_AFTER_NS 100000

/* Take one count of free (0), fill (1) or room (2), waiting at most `timeout` seconds without
 * the GIL; signal handlers run (and may raise) as they come. 1 taken, 0 not, -1 error. */
static int wait_sem(Ring *r, int which, double timeout) {
    sem_t *sem = which == 0 ? r->free : which == 1 ? r->fill : r->room;
    if (sem_trywait(sem) == 0) return 1;
    if (SPIN_NS > 0 && mono_ns() - r->last_moved < SPIN_AFTER_NS) { /* the other side may post soon */
        int got = 0;
        NOGIL_BEGIN(r);
        uint64_t until = mono_ns() + SPIN_NS;
        do {
            sched_yield();
            got = sem_trywait(sem) == 0;
        } while (!got && mono_ns() < until);
        NOGIL_END(r);
        if (got) {
            if (!r->closing) return 1;
            post(sem, 1); /* closed meanwhile: not this call's to keep */
        }
        if (r->closing) {
            PyErr_SetObject(PyExc_ValueError, r->closed_msg);
            return -1;
        }
    }
    if (wait_hook) {
        PyObject *res = PyObject_CallNoArgs(wait_hook);
        if (!res) return -1;
        Py_DECREF(res);
        if (r->closing) {
            PyErr_SetObject(PyExc_ValueError, r->closed_msg);
            return -1;
        }
    }
    double deadline = mono() + timeout;
    for (;;) {
        double left = deadline - mono();
        if (left <= 0) return 0;
        int rc, err;
        r->waiting[which]++;
        NOGIL_BEGIN(r);
        rc = sem_timedwait_for(sem, left);
        err = errno;
        NOGIL_END(r);
        r->waiting[which]--;
        if (r->closing) { /* woken by close(), which posted for this wait (or by a peer) */
            PyErr_SetObject(PyExc_ValueError, r->closed_msg);
            return -1;
        }
        if (rc == 0) return 1;
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0) return -1;
            if (r->closing) { /* a signal handler closed the handle */
                PyErr_SetObject(PyExc_ValueError, r->closed_msg);
                return -1;
            }
            continue;
        }
        if (err == ETIMEDOUT) continue; /* the loop decides on the monotonic clock */
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
}

/* -- the transfer ---------------------------------------------------------------------------- */
/* Every put, get and view claim: attempts, and between them a sleep on a semaphore of at most
 * recovery_interval, after which an attempt also recovers what dead processes left (see
 * docs/design.md). A put holds counts of `free` and posts `fill`, a get the reverse; a put the
 * pool or the ring is short for waits on `room`, holding no counts. `timeout` < 0: none;
 * `since`: when the caller started waiting (monotonic ns; the async path), for the metrics.
 * 1 moved, 0 the time ran out (or !block and nothing to do), -1 error. */
static int transfer(Ring *r, Op *op, int block, double timeout, uint64_t since) {
    if (ring_check(r) < 0) return -1;
    int put = op->op == OP_PUT || op->op == OP_CLAIM_PUT;
    if (timeout == 0) block = 0; /* "don't wait", as put_nowait/get_nowait (the lock still gets its grace) */
    op->will_wait = op->will_wait || block;
    /* The lock is waited for until the caller's deadline; a call that does not wait for items
     * or room still waits up to one recovery_interval for a busy lock. */
    double deadline, lock_deadline;
    if (block && timeout < 0) {
        deadline = 1e300;
        lock_deadline = -1;
    } else {
        deadline = lock_deadline = mono() + (block ? timeout : r->interval);
    }
    uint64_t started = since;
    Py_ssize_t tokens = 0; /* counts of the side's semaphore this call holds */
    int recover = 0, roomed = 0, rc;
    for (;;) {
        uint64_t waited = started ? mono_ns() - started : 0;
        int on_room = 0;
        switch (op->op) {
        case OP_PUT: rc = put_attempt(r, op, &tokens, waited, lock_deadline, roomed, &on_room); break;
        case OP_GET: rc = get_attempt(r, op, &tokens, waited, lock_deadline); break;
        case OP_CLAIM_PUT: rc = claim_put_attempt(r, op, &tokens, waited, lock_deadline, &on_room); break;
        default: rc = claim_get_attempt(r, op, &tokens, waited, lock_deadline); break;
        }
        if (rc == -2) {
            rc = 0;
            break;
        }
        if (rc != 0) {
            if (rc == 1) r->last_moved = mono_ns();
            break;
        }
        /* A put that the ring had room for found the pool short of free slots (views hold
         * them, or a dead process leaked some); or an open put_view of a dead process holds a
         * ring entry: reclaim under both locks, then look again. */
        if (put && (on_room == 2 || recover)) {
            Py_ssize_t gained = catch_up(r, 1, lock_deadline);
            if (gained < 0) {
                rc = -1;
                break;
            }
            if (gained > 0) continue;
        }
        if (on_room) {
            /* It waits for `room`, holding no counts: single puts may use that room meanwhile.
             * A get that freed room after the check, but read room_wait_until before it was
             * set, posted no `room`: look again. */
            post(r->free, tokens);
            tokens = 0;
            if (block && ring_room(r) >= op->want && pool_free(r) >= op->want) continue;
        }
        if (!block) break;
        double now = mono();
        if (!started) started = mono_ns();
        if (now >= deadline) break;
        roomed = on_room != 0;
        double left = deadline - now;
        int got = wait_sem(r, on_room ? 2 : put ? 0 : 1, left < r->interval ? left : r->interval);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got) {
            tokens += !on_room;
            recover = 0;
        } else {
            recover = 1; /* a whole interval without a post: check for the dead */
        }
    }
    if (tokens && r->free) post(put ? r->free : r->fill, tokens);
    return rc;
}

/* -- items ------------------------------------------------------------------------------------ */
/* The C pickler's try at an item (pickle mode; the rules are in shared_queue/_serialize.py):
 * its pickle (a new reference) with *buffers set to the buffers protocol 5 handed out of band, or
 * to NULL if none; NULL without an error if cloudpickle must pickle it by value (the C pickler
 * failed, the pickle mentions __main__, or modules are registered to be pickled by value). */
/* pickle.dumps and pickle.loads are looked up on the module at each call, as Python code
 * would: what patches or instruments them sees these calls too (a dict lookup each). */
static PyObject *pickle_mod, *by_value, *protocol, *kw_buffer_callback, *str_append, *str_dumps, *str_loads;

static PyObject *dumps_try(PyObject *obj, PyObject **buffers) {
    *buffers = NULL;
    if (!protocol) {
        PyErr_SetString(PyExc_RuntimeError, "shared_queue._serialize set no pickle rules");
        return NULL;
    }
    if (by_value) {
        Py_ssize_t n = PyObject_Size(by_value);
        if (n != 0) return NULL; /* n < 0: an error, which the caller passes on */
    }
    PyObject *sink = PyList_New(0);
    if (!sink) return NULL;
    PyObject *append = PyObject_GetAttr(sink, str_append);
    if (!append) {
        Py_DECREF(sink);
        return NULL;
    }
    PyObject *args[3] = {obj, protocol, append};
    PyObject *fn = PyObject_GetAttr(pickle_mod, str_dumps);
    PyObject *data = fn ? PyObject_Vectorcall(fn, args, 2, kw_buffer_callback) : NULL;
    Py_XDECREF(fn);
    Py_DECREF(append);
    if (!data || !PyBytes_Check(data) ||
        memmem(PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data), "__main__", 8)) {
        Py_DECREF(sink);
        if (!data && !PyErr_ExceptionMatches(PyExc_Exception)) return NULL; /* KeyboardInterrupt */
        PyErr_Clear();
        Py_XDECREF(data);
        return NULL;
    }
    if (PyList_GET_SIZE(sink)) *buffers = sink;
    else Py_DECREF(sink);
    return data;
}

/* What dumps_try made as (pickle or None, out-of-band buffers), the form PickleCodec.finish
 * takes; it takes over the references to `data` and `buffers` (either may be NULL). */
static PyObject *tried(PyObject *data, PyObject *buffers) {
    PyObject *t = NULL;
    if (buffers || (buffers = PyList_New(0))) t = PyTuple_Pack(2, data ? data : Py_None, buffers);
    Py_XDECREF(data);
    Py_XDECREF(buffers);
    return t;
}

/* _core.dumps(obj) -> (pickle or None, out-of-band buffers): dumps_try for PickleCodec.encode. */
static PyObject *dumps(PyObject *mod, PyObject *obj) {
    PyObject *buffers, *data = dumps_try(obj, &buffers);
    if (!data && PyErr_Occurred()) return NULL;
    return tried(data, buffers);
}

/* Raise the exception a hook made (`make(n)`), as its own type. */
static void raise_made(PyObject *make, Py_ssize_t n) {
    PyObject *exc = PyObject_CallFunction(make, "n", n);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

/* The payload of an item, checked against item_size (a new reference): the C pickler's try when
 * that is the whole story, else the queue's own encoder (Items.dumps), which also checks; it
 * gets what the C pickler made, (pickle or None, buffers), so that nothing is pickled twice. */
static PyObject *encode(Ring *r, PyObject *item) {
    if (r->raw) return PyObject_CallOneArg(r->encode, item);
    PyObject *buffers, *data = dumps_try(item, &buffers);
    if (data && !buffers) {
        if (PyBytes_GET_SIZE(data) <= r->item_size) return data;
        raise_made(r->too_large, PyBytes_GET_SIZE(data));
        Py_DECREF(data);
        return NULL;
    }
    if (!data && PyErr_Occurred()) return NULL;
    PyObject *made = tried(data, buffers);
    if (!made) return NULL;
    PyObject *out = PyObject_CallFunctionObjArgs(r->encode, item, made, NULL);
    Py_DECREF(made);
    return out;
}

/* The items of the payloads a get took (a list), or with `single` the one item itself. A
 * payload that does not decode goes to Items.decode_failed with the items before it, which
 * keeps the rest for this handle's next gets and returns the items or raises. */
static PyObject *decode(Ring *r, PyObject *payloads, int single) {
    Py_ssize_t n = PyList_GET_SIZE(payloads), i = 0;
    PyObject *items = NULL;
    if (!single && !(items = PyList_New(0))) return NULL;
    for (; i < n; i++) {
        PyObject *x = PyList_GET_ITEM(payloads, i);
        PyObject *v = NULL;
        if (!PyBytes_CheckExact(x)) {
            v = PyObject_CallOneArg(r->decode, x);
        } else {
            PyObject *fn = PyObject_GetAttr(pickle_mod, str_loads);
            v = fn ? PyObject_CallOneArg(fn, x) : NULL;
            Py_XDECREF(fn);
        }
        if (!v) break;
        if (single) return v;
        int err = PyList_Append(items, v);
        Py_DECREF(v);
        if (err < 0) {
            Py_DECREF(items);
            return NULL;
        }
    }
    if (i == n) return items;
    if (!PyErr_ExceptionMatches(PyExc_Exception) || (!items && !(items = PyList_New(0)))) {
        Py_XDECREF(items);
        return NULL;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb) PyException_SetTraceback(value, tb);
    PyObject *res = PyObject_CallFunction(r->decode_failed, "OOnO", items, payloads, i, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    Py_DECREF(items);
    if (res && single) { /* not reached: decode_failed raises when no item came before */
        PyObject *first = PyList_GET_SIZE(res) ? Py_NewRef(PyList_GET_ITEM(res, 0)) : NULL;
        Py_DECREF(res);
        if (!first) PyErr_SetString(PyExc_RuntimeError, "an item failed to decode");
        return first;
    }
    return res;
}

/* -- the Ring's calls ------------------------------------------------------------------------- */
static int parse_timeout(PyObject *o, double *out) {
    if (o == Py_None) {
        *out = -1;
        return 0;
    }
    double t = PyFloat_AsDouble(o);
    if (t == -1 && PyErr_Occurred()) return -1;
    if (!(t >= 0)) { /* NaN is neither < 0 nor >= 0 */
        PyErr_SetString(PyExc_ValueError, "'timeout' must be a non-negative number");
        return -1;
    }
    *out = t;
    return 0;
}

/* The flags of put and the forms of what get returns (exported to Python as these names). */
enum { PUT_BATCH = 1, PUT_ENCODED = 2, PUT_WILL_WAIT = 4 };
enum { GET_ITEMS, GET_ITEM, GET_PAYLOADS };

/* put(x, flags, block, timeout, since_ns): put an item (or with PUT_BATCH a list of items, all
 * or none); PUT_ENCODED: x is payloads already encoded and checked; PUT_WILL_WAIT: the caller
 * waits after a non-blocking try (the async path). Raises Full if no room came in time. */
static PyObject *Ring_put_impl(Ring *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) return PyErr_Format(PyExc_TypeError, "put takes 5 arguments");
    long flags = PyLong_AsLong(args[1]);
    int block = PyObject_IsTrue(args[2]);
    uint64_t since = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    int batch = (flags & PUT_BATCH) != 0;
    if (batch && ring_check(r) < 0) return NULL; /* a closed handle raises even for an empty batch */
    PyObject *x = args[0], *list = NULL, *payloads = NULL, *one = NULL, *rc_obj = NULL;
    Py_ssize_t n = 1;
    if (batch) {
        /* A copy: pickling runs Python code, which may change the caller's list. */
        if (!PyList_CheckExact(x)) return PyErr_Format(PyExc_TypeError, "a batch must be a list");
        if (!(list = PyList_GetSlice(x, 0, PyList_GET_SIZE(x)))) return NULL;
        n = PyList_GET_SIZE(list);
    }
    if (flags & PUT_ENCODED) {
        payloads = list;
        list = NULL;
    } else if (!batch) {
        /* Encoded and checked before any count or lock is taken: a bad item holds nothing. */
        if (!(one = encode(r, x))) return NULL;
    } else {
        if (!(payloads = PyList_New(n))) goto done;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *e = encode(r, PyList_GET_ITEM(list, i));
            if (!e) goto done;
            PyList_SET_ITEM(payloads, i, e);
        }
        if (n > r->capacity) {
            raise_made(r->too_many, n);
            goto done;
        }
    }
    if (n == 0) {
        rc_obj = Py_NewRef(Py_None);
        goto done;
    }
    double timeout;
    if (parse_timeout(args[3], &timeout) < 0) goto done;
    PyObject *const *xs = one ? &one : ((PyListObject *)payloads)->ob_item;
    Payloads p;
    if (payloads_get(xs, n, &p) < 0) goto done;
    for (Py_ssize_t i = 0; (flags & PUT_ENCODED) && i < n; i++)
        if (p.sizes[i] > r->item_size) { /* encode() checked the others */
            raise_made(r->too_large, p.sizes[i]);
            payloads_free(&p);
            goto done;
        }
    Op op = {.op = OP_PUT, .will_wait = (flags & PUT_WILL_WAIT) != 0, .p = &p, .want = n, .limit = n};
    int rc = transfer(r, &op, block, timeout, since);
    payloads_free(&p);
    if (rc == 0) PyErr_SetObject(r->Full, r->full_msg);
    else if (rc > 0) rc_obj = Py_NewRef(Py_None);
done:
    Py_XDECREF(list);
    Py_XDECREF(payloads);
    Py_XDECREF(one);
    return rc_obj;
}

/* get(max_items, form, block, timeout, since_ns): take 1 to max_items items, waiting for the
 * first; returns a list of the items (GET_ITEMS), the one item itself (GET_ITEM, max_items 1)
 * or the payloads undecoded (GET_PAYLOADS). Raises Empty if none came in time. */
static PyObject *Ring_get_impl(Ring *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) return PyErr_Format(PyExc_TypeError, "get takes 5 arguments");
    double timeout;
    if (parse_timeout(args[3], &timeout) < 0) return NULL;
    Py_ssize_t limit = PyLong_AsSsize_t(args[0]);
    long form = PyLong_AsLong(args[1]);
    int block = PyObject_IsTrue(args[2]);
    uint64_t since = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    if (limit < 1) return PyErr_Format(PyExc_ValueError, "max_items must be positive");
    Op op = {.op = OP_GET, .limit = limit, .want = limit == 1 ? 1 : limit < r->capacity ? limit : r->capacity};
    int rc = transfer(r, &op, block, timeout, since);
    if (rc < 0) return NULL;
    if (rc == 0) {
        PyErr_SetObject(r->Empty, r->empty_msg);
        return NULL;
    }
    if (form == GET_PAYLOADS) return op.got;
    PyObject *items = decode(r, op.got, form == GET_ITEM);
    Py_DECREF(op.got);
    return items;
}

/* claim(put, owner, block, timeout) -> put: the offset of a FREE slot now WRITING, with a ring
 * entry reserved (a put_view); get: (offset, size) of the item taken from the head, its slot
 * READING (a get_view). Raises Full or Empty if none came in time. */
static PyObject *Ring_claim_impl(Ring *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) return PyErr_Format(PyExc_TypeError, "claim takes 4 arguments");
    double timeout;
    if (parse_timeout(args[3], &timeout) < 0) return NULL;
    int put = PyObject_IsTrue(args[0]), block = PyObject_IsTrue(args[2]);
    uint64_t owner = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    Op op = {.op = put ? OP_CLAIM_PUT : OP_CLAIM_GET, .want = 1, .limit = 1, .owner = owner};
    int rc = transfer(r, &op, block, timeout, 0);
    if (rc < 0) return NULL;
    if (rc == 0) {
        PyErr_SetObject(put ? r->Full : r->Empty, put ? r->full_msg : r->empty_msg);
        return NULL;
    }
    return put ? PyLong_FromSsize_t(op.off) : pair(op.off, op.size);
}

/* publish(off, size, ok, owner): end a put_view (producer lock): queue its item, or discard it
 * and give its ring entry back. The slot stays pinned by `owner` until its array goes. */
static PyObject *Ring_publish_impl(Ring *r, PyObject *const *args, Py_ssize_t nargs) {
    /* It must not fail once a slot is claimed: it works on a closed handle while the
     * mapping lives (the array counts as a view from its claim), and runs no signal handler. */
    if (nargs != 4) return PyErr_Format(PyExc_TypeError, "publish takes 4 arguments");
    Py_ssize_t off = PyLong_AsSsize_t(args[0]), size = PyLong_AsSsize_t(args[1]);
    int ok = PyObject_IsTrue(args[2]);
    uint64_t owner = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (!r->base) return PyErr_Format(PyExc_ValueError, "the queue handle was unmapped");
    char *sl = r->base + off;
    if (lock(r, 0, -1, 0) < 0) return NULL;
    if (state_of(sl) != r->WRITING || acq(owner_of(r, sl)) != owner) {
        /* Reclaimed from under us: only a process taken for dead loses its claim. */
        unlock(r, 0);
        return PyErr_Format(PyExc_RuntimeError, "a put_view's slot was reclaimed while it was "
                            "open: processes sharing a queue must share a PID namespace");
    }
    rel(pin_of(r, sl), owner);
    if (rlx(P64(r, r->reserved))) rel(P64(r, r->reserved), rlx(P64(r, r->reserved)) - 1);
    if (ok) {
        uint64_t tail = rlx(P64(r, r->tail));
        rel((uint64_t *)sl, (uint64_t)size | (uint64_t)r->READY << 32);
        __atomic_store_n(ring_entry(r, tail), (uint32_t)((off - r->slots_offset) / r->slot_size), __ATOMIC_RELEASE);
        rel(P64(r, r->tail), tail + 1); /* commit point */
        add(P64(r, r->puts), 1);
        add(P64(r, r->bytes_in), size);
    } else {
        set_state(sl, r->DONE);
    }
    unlock(r, 0);
    post(ok ? r->fill : r->free, 1);
    if (!ok) wake_room(r);
    Py_RETURN_NONE;
}


/* release(off, pin, owner): give back a slot a view held (a get_view's READING slot, or a put_view's
 * pin). Only tries the consumer lock: a finalizer may run while this thread holds it. */
static PyObject *Ring_release(Ring *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "release takes 3 arguments");
    Py_ssize_t off = PyLong_AsSsize_t(args[0]);
    int pin = PyObject_IsTrue(args[1]);
    uint64_t owner = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (!r->base) Py_RETURN_NONE; /* released: the mapping is gone, and the slot with it */
    char *sl = r->base + off;
    /* Still ours? Only a process taken for dead (another PID namespace) could have lost it;
     * then the slot may be someone else's by now and is left alone. */
    if (pin ? acq(pin_of(r, sl)) != owner
            : (state_of(sl) != r->READING || acq(owner_of(r, sl)) != owner))
        Py_RETURN_NONE;
    pthread_mutex_t *m = mutex(r, 1);
    int rc = pthread_mutex_trylock(m);
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(m);
        rc = 0;
    }
    int freed = 0;
    if (rc == 0) {
        if (pin) {
            rel(pin_of(r, sl), 0);
            if (state_of(sl) == r->DONE) freed = 1;
        } else if (acq(pin_of(r, sl))) {
            set_state(sl, r->DONE);
        } else {
            freed = 1;
        }
        if (freed) {
            set_state(sl, r->FREE);
            rel(P64(r, r->releases), rlx(P64(r, r->releases)) + 1);
        }
        unlock(r, 1);
    } else { /* busy: leave it to a sweep by whoever holds it next */
        if (pin) rel(pin_of(r, sl), 0);
        else set_state(sl, r->DONE);
        rel(P64(r, r->sweep), 1);
        freed = 1;
    }
    if (freed) wake_room(r);
    Py_RETURN_NONE;
}

static PyObject *Ring_size(Ring *r, PyObject *unused) {
    if (ring_check(r) < 0) return NULL;
    int64_t n = (int64_t)(acq(P64(r, r->tail)) - acq(P64(r, r->head)));
    return PyLong_FromLongLong(n < 0 ? 0 : n > r->capacity ? r->capacity : n);
}
static PyObject *Ring_room(Ring *r, PyObject *unused) {
    if (ring_check(r) < 0) return NULL;
    return PyLong_FromSsize_t(ring_room(r));
}
static PyObject *Ring_pool_free(Ring *r, PyObject *unused) {
    if (ring_check(r) < 0) return NULL;
    return PyLong_FromSsize_t(pool_free(r));
}
static PyObject *Ring_full(Ring *r, PyObject *unused) {
    if (ring_check(r) < 0) return NULL;
    return PyBool_FromLong(ring_room(r) < 1 || (pool_free(r) < 1 && !acq(P64(r, r->sweep))));
}

static void ring_release_resources(Ring *r) {
    if (r->free) sem_close(r->free);
    if (r->fill) sem_close(r->fill);
    if (r->room) sem_close(r->room);
    r->free = r->fill = r->room = NULL;
    if (r->buf.obj) PyBuffer_Release(&r->buf);
    r->base = NULL;
    r->open = 0;
}

/* close(): no new calls, and this handle's calls in a wait end (views' releases and a
 * put_view's publish still work: the mapping stays until unmap()). */
static PyObject *Ring_close(Ring *r, PyObject *unused) {
    if (!r->open) Py_RETURN_NONE;
    r->open = 0;
    r->closing = 1;
    /* Wake this handle's waits: one post each. A peer's waiter may take one instead; it finds
     * nothing and waits again, and this handle's waiter ends at its next slice. */
    sem_t *sems[3] = {r->free, r->fill, r->room};
    for (int i = 0; i < 3; i++)
        if (sems[i]) post(sems[i], r->waiting[i]);
    Py_RETURN_NONE;
}

/* unmap(): release the mapping and the semaphores, now or when the last call leaves a wait. */
static PyObject *Ring_unmap(Ring *r, PyObject *unused) {
    r->open = 0;
    r->closing = 1;
    r->unmapping = 1;
    settle(r);
    Py_RETURN_NONE;
}

static void Ring_dealloc(Ring *r) {
    ring_release_resources(r);
    PyObject **refs[] = {&r->encode, &r->too_large, &r->too_many, &r->decode, &r->decode_failed,
                         &r->Full, &r->Empty, &r->full_msg, &r->empty_msg, &r->closed_msg};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) Py_CLEAR(*refs[i]);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int get_off(PyObject *layout, const char *key, Py_ssize_t *out) {
    PyObject *v = PyDict_GetItemString(layout, key); /* borrowed */
    if (!v) {
        PyErr_Format(PyExc_KeyError, "layout has no %s", key);
        return -1;
    }
    *out = PyLong_AsSsize_t(v);
    return PyErr_Occurred() ? -1 : 0;
}

/* Ring(mapping, layout: dict, semaphore names: (free, fill, room), recovery_interval, raw,
 *      hooks: (encode, too_large, too_many, decode, decode_failed),
 *      errors: (Full, Empty, full message, empty message, closed message)) */
static int Ring_init(Ring *r, PyObject *args, PyObject *kw) {
    PyObject *mapping, *layout;
    const char *names[3];
    double interval;
    int raw;
    PyObject *hooks[5], *errors[5];
    if (!PyArg_ParseTuple(args, "OO!(sss)dp(OOOOO)(OOOOO)", &mapping, &PyDict_Type, &layout,
                          &names[0], &names[1], &names[2], &interval, &raw, &hooks[0], &hooks[1],
                          &hooks[2], &hooks[3], &hooks[4], &errors[0], &errors[1], &errors[2],
                          &errors[3], &errors[4]))
        return -1;
    if (r->open || r->closed_msg) {
        PyErr_SetString(PyExc_RuntimeError, "Ring is initialised once");
        return -1;
    }
    PyObject **refs[] = {&r->encode, &r->too_large, &r->too_many, &r->decode, &r->decode_failed,
                         &r->Full, &r->Empty, &r->full_msg, &r->empty_msg, &r->closed_msg};
    for (int i = 0; i < 10; i++) *refs[i] = Py_NewRef(i < 5 ? hooks[i] : errors[i - 5]);
    struct { const char *key; Py_ssize_t *to; } fields[] = {
        {"capacity", &r->capacity}, {"item_size", &r->item_size}, {"pool", &r->pool}, {"slot_size", &r->slot_size},
        {"slots_offset", &r->slots_offset}, {"ring_offset", &r->ring_offset},
        {"header.tail", &r->tail}, {"header.reserved", &r->reserved}, {"header.allocs", &r->allocs},
        {"header.cursor", &r->cursor}, {"header.puts", &r->puts}, {"header.bytes_in", &r->bytes_in},
        {"header.high_water", &r->high}, {"header.room_wait_until", &r->room_wait},
        {"header.put_waits", &r->put_waits}, {"header.put_wait_ns", &r->put_wait_ns}, {"header.head", &r->head},
        {"header.gets", &r->gets}, {"header.bytes_out", &r->bytes_out}, {"header.get_waits", &r->get_waits},
        {"header.get_wait_ns", &r->get_wait_ns}, {"header.releases", &r->releases}, {"header.sweep", &r->sweep},
        {"header.producer_mutex", &r->pmutex}, {"header.consumer_mutex", &r->cmutex},
        {"slot.owner", &r->s_owner}, {"slot.pin", &r->s_pin}, {"slot.blob", &r->s_blob},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (get_off(layout, fields[i].key, fields[i].to) < 0) return -1;
    Py_ssize_t length, state, states[5];
    const char *state_keys[5] = {"FREE", "WRITING", "READY", "READING", "DONE"};
    if (get_off(layout, "slot.length", &length) < 0 || get_off(layout, "slot.state", &state) < 0) return -1;
    for (int i = 0; i < 5; i++)
        if (get_off(layout, state_keys[i], &states[i]) < 0) return -1;
    if (length != 0 || state != 4) {
        PyErr_SetString(PyExc_ValueError, "a slot's length and state must share its first 8 bytes");
        return -1;
    }
    r->FREE = states[0], r->WRITING = states[1], r->READY = states[2], r->READING = states[3], r->DONE = states[4];
    if (PyObject_GetBuffer(mapping, &r->buf, PyBUF_WRITABLE) < 0) return -1;
    r->base = r->buf.buf;
    Py_ssize_t end = r->slots_offset + r->pool * r->slot_size;
    if (end > r->buf.len || ((uintptr_t)r->base & 63)) {
        PyBuffer_Release(&r->buf);
        PyErr_SetString(PyExc_ValueError, "the mapping does not hold the layout");
        return -1;
    }
    sem_t **sems[3] = {&r->free, &r->fill, &r->room};
    for (int i = 0; i < 3; i++) {
        *sems[i] = sem_open(names[i], 0);
        if (*sems[i] == SEM_FAILED) {
            *sems[i] = NULL;
            int err = errno;
            ring_release_resources(r);
            errno = err;
            PyErr_SetFromErrnoWithFilename(err == ENOENT ? PyExc_FileNotFoundError : PyExc_OSError, names[i]);
            return -1;
        }
    }
    r->interval = interval;
    r->raw = raw;
    r->open = 1;
    return 0;
}


/* Every call that may run without the GIL settles on its way out (see `busy`). */
#define SETTLED(name)                                                                   \
    static PyObject *name(Ring *r, PyObject *const *args, Py_ssize_t nargs) {           \
        PyObject *res = name##_impl(r, args, nargs);                                    \
        settle(r);                                                                      \
        return res;                                                                     \
    }
SETTLED(Ring_put)
SETTLED(Ring_get)
SETTLED(Ring_claim)
SETTLED(Ring_publish)

static PyMethodDef Ring_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Ring_put, METH_FASTCALL, "Put an item or a batch."},
    {"get", (PyCFunction)(void (*)(void))Ring_get, METH_FASTCALL, "Take an item or a batch."},
    {"claim", (PyCFunction)(void (*)(void))Ring_claim, METH_FASTCALL, "Claim a slot for a view."},
    {"publish", (PyCFunction)(void (*)(void))Ring_publish, METH_FASTCALL, "End a put_view."},
    {"release", (PyCFunction)(void (*)(void))Ring_release, METH_FASTCALL, "Give back a view's slot."},
    {"size", (PyCFunction)Ring_size, METH_NOARGS, "Items a get can take."},
    {"room", (PyCFunction)Ring_room, METH_NOARGS, "Items the ring takes."},
    {"pool_free", (PyCFunction)Ring_pool_free, METH_NOARGS, "FREE slots by the counters."},
    {"full", (PyCFunction)Ring_full, METH_NOARGS, "Whether a put_nowait would find no room."},
    {"close", (PyCFunction)Ring_close, METH_NOARGS, "End this handle's calls; views still work."},
    {"unmap", (PyCFunction)Ring_unmap, METH_NOARGS, "Release the mapping and the semaphores."},
    {NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shared_queue._core.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The hot path of one queue handle over its mapped segment.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ring_init,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
};

/* -- module functions ------------------------------------------------------------------------ */
/* init_locks(mapping, producer_off, consumer_off, robust): make the two process-shared mutexes
 * of a new segment (robust unless a benchmark asks for the unsafe baseline). */
static PyObject *init_locks(PyObject *mod, PyObject *args) {
    PyObject *mapping;
    Py_ssize_t offs[2];
    int robust;
    if (!PyArg_ParseTuple(args, "Onnp", &mapping, &offs[0], &offs[1], &robust)) return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(mapping, &b, PyBUF_WRITABLE) < 0) return NULL;
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (!rc) rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!rc && robust) rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    for (int i = 0; i < 2 && !rc; i++) {
        if (offs[i] < 0 || offs[i] + (Py_ssize_t)sizeof(pthread_mutex_t) > b.len) rc = EINVAL;
        else rc = pthread_mutex_init((pthread_mutex_t *)((char *)b.buf + offs[i]), &a);
    }
    pthread_mutexattr_destroy(&a);
    PyBuffer_Release(&b);
    if (rc) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* _crash_at(name, side, count, callback): TEST ONLY. Stop at the named point of this
 * process's next put ("put") or get ("get") and call `callback`, which must not return. */
static PyObject *crash_at(PyObject *mod, PyObject *args) {
    const char *name, *side;
    Py_ssize_t count;
    PyObject *cb;
    if (!PyArg_ParseTuple(args, "ssnO", &name, &side, &count, &cb)) return NULL;
    static const char *names[] = {"none",        "after_acquire", "mid_copy",
                                  "held_commit", "before_post",   "no_room"};
    int point = -1;
    for (int i = 0; i < 6; i++)
        if (!strcmp(name, names[i])) point = i;
    if (point < 0) return PyErr_Format(PyExc_ValueError, "unknown crash point %s", name);
    Py_XINCREF(cb);
    Py_XSETREF(crash_callback, point == CP_NONE ? NULL : cb);
    if (point == CP_NONE) Py_XDECREF(cb);
    crash_point = point;
    crash_side = strcmp(side, "get") == 0;
    crash_count = count;
    Py_RETURN_NONE;
}

/* pickle_rules(protocol, by_value): the pickle protocol, and the collection of modules
 * cloudpickle pickles by value (while it is not empty, every item goes to cloudpickle); set by
 * shared_queue._serialize when it is imported, before any item is pickled here. */
static PyObject *pickle_rules(PyObject *mod, PyObject *args) {
    PyObject *proto, *modules;
    if (!PyArg_ParseTuple(args, "O!O", &PyLong_Type, &proto, &modules)) return NULL;
    Py_XSETREF(protocol, Py_NewRef(proto));
    Py_XSETREF(by_value, Py_NewRef(modules));
    Py_RETURN_NONE;
}

/* _on_wait(callback or None): TEST ONLY. Call `callback` before each sleep on a semaphore. */
static PyObject *on_wait(PyObject *mod, PyObject *cb) {
    Py_XSETREF(wait_hook, cb == Py_None ? NULL : Py_NewRef(cb));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"init_locks", init_locks, METH_VARARGS, "Make a new segment's two process-shared mutexes."},
    {"dumps", dumps, METH_O, "The C pickler's try at an item: (pickle or None, buffers)."},
    {"pickle_rules", pickle_rules, METH_VARARGS, "Set the protocol and the by-value modules."},
    {"_crash_at", crash_at, METH_VARARGS, "Test only: stop at a named point of a put or get."},
    {"_on_wait", on_wait, METH_O, "Test only: call a callback before each semaphore sleep."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "shared_queue._core",
    "The ring's hot path: locks, counts, copies and commits (see docs/design.md).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__core(void) {
    mutex_clocklock = (clocklock_fn)dlsym(RTLD_DEFAULT, "pthread_mutex_clocklock");
    sem_clockwait_ = (clockwait_fn)dlsym(RTLD_DEFAULT, "sem_clockwait");
    if (PyType_Ready(&RingType) < 0) return NULL;
    pickle_mod = PyImport_ImportModule("pickle");
    kw_buffer_callback = Py_BuildValue("(s)", "buffer_callback");
    str_append = PyUnicode_InternFromString("append");
    str_dumps = PyUnicode_InternFromString("dumps");
    str_loads = PyUnicode_InternFromString("loads");
    if (!pickle_mod || !kw_buffer_callback || !str_append || !str_dumps || !str_loads) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddIntConstant(m, "MUTEX_SIZE", (long)sizeof(pthread_mutex_t)) < 0 ||
        PyModule_AddIntConstant(m, "PUT_BATCH", PUT_BATCH) < 0 ||
        PyModule_AddIntConstant(m, "PUT_ENCODED", PUT_ENCODED) < 0 ||
        PyModule_AddIntConstant(m, "PUT_WILL_WAIT", PUT_WILL_WAIT) < 0 ||
        PyModule_AddIntConstant(m, "GET_ITEMS", GET_ITEMS) < 0 ||
        PyModule_AddIntConstant(m, "GET_ITEM", GET_ITEM) < 0 ||
        PyModule_AddIntConstant(m, "GET_PAYLOADS", GET_PAYLOADS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
