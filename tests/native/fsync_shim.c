/*
 * An LD_PRELOAD shim around fsync(2) and fdatasync(2), for tests and benchmarks.
 *
 *   DENOKV_FSYNC_DELAY_US=2000   sleep this long before every flush (a slow
 *                                cloud volume), the same for any process
 *   DENOKV_FSYNC_FAIL_FILE=PATH  while PATH exists, every flush fails with EIO
 *                                (an I/O error on the disk) without flushing
 *
 * Works for Python's sqlite3 and for the Deno CLI alike: both call the libc
 * functions. Build: cc -shared -fPIC -O2 -o fsync_shim.so fsync_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long delay_us(void) {
    static long cached = -1;
    if (cached < 0) {
        const char *text = getenv("DENOKV_FSYNC_DELAY_US");
        cached = text ? atol(text) : 0;
    }
    return cached;
}

static int should_fail(void) {
    const char *path = getenv("DENOKV_FSYNC_FAIL_FILE");
    return path != NULL && access(path, F_OK) == 0;
}

static void pause_for_flush(void) {
    long us = delay_us();
    if (us > 0) {
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (should_fail()) {
        errno = EIO;
        return -1;
    }
    pause_for_flush();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (should_fail()) {
        errno = EIO;
        return -1;
    }
    pause_for_flush();
    return real(fd);
}
