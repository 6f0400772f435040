/* Atomics and a process-shared robust mutex for cext/shm.pyx (GCC/Clang __atomic builtins).
 *
 * Cython cannot spell the C11 memory model, so the few operations shm.pyx needs are here as
 * static inline functions. Every word they touch is a naturally aligned uint64_t inside a
 * MAP_SHARED mapping, which makes them atomic across processes as well as threads.
 */
#ifndef EDGE_SHM_ATOMICS_H
#define EDGE_SHM_ATOMICS_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

/* Loads and stores: acquire/release pair up for the seqlock-style index slots. */
static inline uint64_t shm_load_acq(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t shm_load_rlx(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t shm_load_sc(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void shm_store_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void shm_store_rlx(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void shm_store_sc(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
/* A byte flag set lock-free by a pinning worker (the SENT mark), read under the mutex by whoever
 * frees the chunk after the last unpin (whose read-modify-write orders it after this store). */
static inline uint8_t shm_load8_rlx(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void shm_store8_rel(uint8_t *p, uint8_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* Read-modify-write: sequentially consistent (pins and waiter masks are Dekker-style pairs). */
static inline int shm_cas(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline uint64_t shm_fetch_or(uint64_t *p, uint64_t v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t shm_fetch_and(uint64_t *p, uint64_t v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t shm_exchange(uint64_t *p, uint64_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t shm_fetch_add(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }

static inline void shm_fence_acq(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void shm_fence_rel(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }

/* The mutex lives inside the control mapping; SHM_MUTEX_SPACE bytes are reserved for it. */
#define SHM_MUTEX_SPACE 64
#define SHM_EOWNERDEAD EOWNERDEAD
#define SHM_ENOTRECOVERABLE ENOTRECOVERABLE

/* Process-shared (works across fork and separate attaches) and robust (a holder that dies
 * hands the next locker EOWNERDEAD instead of a deadlock). Returns 0 or an errno. */
static inline int shm_mutex_init(void *m) {
    pthread_mutexattr_t a;
    int rc;
    if (sizeof(pthread_mutex_t) > SHM_MUTEX_SPACE) return EINVAL;
    if ((rc = pthread_mutexattr_init(&a))) return rc;
    if (!(rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)))
        if (!(rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)))
            rc = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}
static inline int shm_mutex_lock(void *m) { return pthread_mutex_lock((pthread_mutex_t *)m); }
static inline int shm_mutex_unlock(void *m) { return pthread_mutex_unlock((pthread_mutex_t *)m); }
static inline int shm_mutex_consistent(void *m) { return pthread_mutex_consistent((pthread_mutex_t *)m); }

/* splitmix64 finalizer: the index hash of (oid, block index); the Python twin computes the same. */
static inline uint64_t shm_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#endif
