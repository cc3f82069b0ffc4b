/* mxc_run: load an mxc artifact (libmodel.so) with dlopen, run it on .npy inputs and write
 * its outputs as .npy files. No Python, no mxc: only the artifact and libc.
 *
 *   mxc_run [options] path/to/libmodel.so in0.npy [in1.npy ...]
 *     -o FILE        where output i goes (repeat per output; default out_<i>.npy)
 *     --prefix NAME  symbol prefix the artifact was built with (default mxc_model)
 *     --threads N    run kernels on N threads through the parallel-for callback
 *     --repeat N     run N times and print the mean latency
 *     --selftest     also check the error codes for NULL and misaligned pointers
 *
 * Build (host):     cc -O2 -o mxc_run main.c -ldl -lpthread
 * Cross (aarch64):  aarch64-linux-gnu-gcc -O2 -o mxc_run main.c -ldl -lpthread
 *   run it with:    qemu-aarch64 -L /usr/aarch64-linux-gnu ./mxc_run ./libmodel.so x.npy
 * Cross (armv7):    arm-linux-gnueabihf-gcc -O2 -o mxc_run main.c -ldl -lpthread
 *   run it with:    qemu-arm -L /usr/arm-linux-gnueabihf ./mxc_run ./libmodel.so x.npy
 * Or:               python -m ziglang cc -target aarch64-linux-gnu -O2 -o mxc_run main.c
 * (see the Makefile beside this file)
 */
#define _POSIX_C_SOURCE 200809L
#define NPY_IMPLEMENTATION
#include "npy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the ABI of model.h, spelled here so one driver serves every artifact */
typedef void (*mxc_kernel_fn)(int64_t, int64_t, void *const *, void *);
typedef int (*mxc_parallel_for_fn)(void *, mxc_kernel_fn, int64_t, void *const *, size_t,
                                   int64_t);
typedef struct {
    const char *name;
    const char *dtype;
    int32_t ndim;
    const int64_t *shape;
    size_t nbytes;
} mxc_tensor_desc;

struct api {
    const char *(*info)(void);
    size_t (*workspace_size)(void);
    int (*run)(const void *const *, void *const *, void *);
    void (*set_parallel)(mxc_parallel_for_fn, void *);
    int (*num_inputs)(void);
    int (*num_outputs)(void);
    const mxc_tensor_desc *(*input)(int);
    const mxc_tensor_desc *(*output)(int);
};

static void *sym(void *lib, const char *prefix, const char *name) {
    char full[256];
    void *p;
    snprintf(full, sizeof full, "%s_%s", prefix, name);
    p = dlsym(lib, full);
    if (!p) {
        fprintf(stderr, "mxc_run: symbol %s not found: %s\n", full, dlerror());
        exit(2);
    }
    return p;
}

/* ---- a minimal parallel-for: N pthreads per call, each with its own scratch ---------- */
struct pool { int threads; };
struct job {
    mxc_kernel_fn kernel;
    int64_t begin, end;
    void *const *args;
    void *scratch;
};

static void *job_main(void *p) {
    struct job *j = p;
    j->kernel(j->begin, j->end, j->args, j->scratch);
    return NULL;
}

static int parallel_for(void *ctx, mxc_kernel_fn kernel, int64_t n_tasks, void *const *args,
                        size_t scratch_bytes, int64_t cost) {
    struct pool *pool = ctx;
    int nt = pool->threads < n_tasks ? pool->threads : (int)n_tasks;
    pthread_t tid[64];
    struct job jobs[64];
    int rc = 0;
    (void)cost;
    if (nt > 64) nt = 64;
    for (int i = 0; i < nt; i++) {
        jobs[i].kernel = kernel;
        jobs[i].begin = n_tasks * i / nt;
        jobs[i].end = n_tasks * (i + 1) / nt;
        jobs[i].args = args;
        jobs[i].scratch = NULL;
        if (scratch_bytes && posix_memalign(&jobs[i].scratch, 64, scratch_bytes) != 0)
            return 1;
    }
    for (int i = 1; i < nt; i++)
        if (pthread_create(&tid[i], NULL, job_main, &jobs[i]) != 0) rc = 1, nt = i;
    job_main(&jobs[0]);
    for (int i = 1; i < nt; i++) pthread_join(tid[i], NULL);
    for (int i = 0; i < nt; i++) free(jobs[i].scratch);
    return rc;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int selftest(struct api *m, const void **in, void **out, void *ws) {
    int fails = 0, rc;
    size_t wsb = m->workspace_size();
#define EXPECT(call, want)                                                        \
    do {                                                                          \
        rc = (call);                                                              \
        if (rc != (want)) {                                                       \
            fprintf(stderr, "selftest: %s returned %d, expected %d\n", #call, rc, want); \
            fails++;                                                              \
        }                                                                         \
    } while (0)
    if (m->num_inputs() > 0) {
        const void *saved = in[0];
        EXPECT(m->run(NULL, out, ws), 1);
        in[0] = NULL;
        EXPECT(m->run(in, out, ws), 1);
        in[0] = saved;
    }
    if (m->num_outputs() > 0) {
        void *saved = out[0];
        EXPECT(m->run(in, NULL, ws), 2);
        out[0] = NULL;
        EXPECT(m->run(in, out, ws), 2);
        out[0] = saved;
    }
    if (wsb > 0) {
        EXPECT(m->run(in, out, NULL), 3);
        EXPECT(m->run(in, out, (char *)ws + 16), 4);
    }
    EXPECT(m->run(in, out, ws), 0);
    printf("selftest: %s\n", fails ? "FAILED" : "ok");
    return fails;
}

int main(int argc, char **argv) {
    const char *prefix = "mxc_model", *libpath = NULL;
    const char *outs[64] = {0};
    const char *ins[64] = {0};
    int n_out_names = 0, n_in = 0, threads = 0, repeat = 1, do_selftest = 0;
    struct api m;
    void *lib, *ws = NULL;
    npy_array arrs[64];
    const void *in_ptrs[64];
    void *out_ptrs[64];
    struct pool pool;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc && n_out_names < 64) outs[n_out_names++] = argv[++i];
        else if (!strcmp(argv[i], "--prefix") && i + 1 < argc) prefix = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--selftest")) do_selftest = 1;
        else if (!libpath) libpath = argv[i];
        else if (n_in < 64) ins[n_in++] = argv[i];
    }
    if (!libpath) {
        fprintf(stderr, "usage: %s [-o OUT.npy]... [--prefix NAME] [--threads N] "
                        "[--repeat N] [--selftest] libmodel.so IN.npy...\n", argv[0]);
        return 2;
    }
    lib = dlopen(libpath, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "mxc_run: cannot load %s: %s\n", libpath, dlerror());
        return 2;
    }
    m.info = sym(lib, prefix, "info");
    m.workspace_size = sym(lib, prefix, "workspace_size");
    m.run = sym(lib, prefix, "run");
    m.set_parallel = sym(lib, prefix, "set_parallel");
    m.num_inputs = sym(lib, prefix, "num_inputs");
    m.num_outputs = sym(lib, prefix, "num_outputs");
    m.input = sym(lib, prefix, "input");
    m.output = sym(lib, prefix, "output");

    if (n_in != m.num_inputs()) {
        fprintf(stderr, "mxc_run: the model takes %d input(s), %d given:", m.num_inputs(), n_in);
        for (int i = 0; i < m.num_inputs(); i++) fprintf(stderr, " %s", m.input(i)->name);
        fprintf(stderr, "\n");
        return 2;
    }
    for (int i = 0; i < n_in; i++) {
        const mxc_tensor_desc *d = m.input(i);
        int same = 1;
        if (npy_load(ins[i], &arrs[i]) != 0) return 2;
        if (strcmp(arrs[i].dtype, d->dtype) != 0) {
            fprintf(stderr, "mxc_run: input '%s' must be %s, %s is %s\n", d->name, d->dtype,
                    ins[i], arrs[i].dtype);
            return 2;
        }
        same = arrs[i].ndim == d->ndim;
        for (int k = 0; same && k < d->ndim; k++) same = arrs[i].shape[k] == d->shape[k];
        if (!same || arrs[i].nbytes != d->nbytes) {
            fprintf(stderr, "mxc_run: input '%s' has the wrong shape (%s)\n", d->name, ins[i]);
            return 2;
        }
        in_ptrs[i] = arrs[i].data;
    }
    for (int i = 0; i < m.num_outputs() && i < 64; i++) {
        if (posix_memalign(&out_ptrs[i], 64, m.output(i)->nbytes ? m.output(i)->nbytes : 1))
            return 2;
    }
    if (m.workspace_size() && posix_memalign(&ws, 64, m.workspace_size()) != 0) return 2;
    if (threads > 1) {
        pool.threads = threads;
        m.set_parallel(parallel_for, &pool);
    }
    if (do_selftest && selftest(&m, in_ptrs, out_ptrs, ws) != 0) return 3;

    double t0 = now();
    for (int r = 0; r < (repeat > 0 ? repeat : 1); r++) {
        rc = m.run(in_ptrs, out_ptrs, ws);
        if (rc != 0) {
            fprintf(stderr, "mxc_run: %s_run failed with code %d\n", prefix, rc);
            return 1;
        }
    }
    double dt = (now() - t0) / (repeat > 0 ? repeat : 1);
    for (int i = 0; i < m.num_outputs(); i++) {
        const mxc_tensor_desc *d = m.output(i);
        char name[64];
        const char *path = i < n_out_names ? outs[i] : (snprintf(name, sizeof name, "out_%d.npy", i), name);
        if (npy_save(path, d->dtype, d->ndim, d->shape, out_ptrs[i]) != 0) return 2;
        printf("output %d %s -> %s\n", i, d->name, path);
    }
    printf("run: %.3f ms (mean of %d, %d thread%s), workspace %zu bytes\n", dt * 1e3, repeat,
           threads > 1 ? threads : 1, threads > 1 ? "s" : "", m.workspace_size());
    for (int i = 0; i < n_in; i++) npy_free(&arrs[i]);
    for (int i = 0; i < m.num_outputs(); i++) free(out_ptrs[i]);
    free(ws);
    dlclose(lib);
    return 0;
}
