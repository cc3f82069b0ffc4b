/* run_cuda: run an mxc GPU artifact (mxc compile --target cuda-sm80 | cuda-sm90) through the
 * CUDA driver API, on .npy inputs, writing its outputs as .npy files. No Python, no mxc, no
 * CUDA toolkit: the few driver API declarations needed are spelled below and libcuda.so.1
 * (installed with the NVIDIA driver) is opened with dlopen at run time.
 *
 *   run_cuda [options] OUTDIR in0.npy [in1.npy ...]
 *     -o FILE       where output i goes (repeat per output; default out_<i>.npy)
 *     --device N    GPU ordinal (default 0)
 *     --repeat N    run N times and print the mean latency of the launches
 *
 * OUTDIR is the artifact directory: model.ptx, plan.txt, weights.bin (plan.txt is plan.json
 * as whitespace-separated tokens; its format is in docs/deploy.md, section 7).
 * Exit status: 0 ok, 1 a CUDA call failed, 2 bad usage / inputs / artifact, 3 no CUDA driver
 * or device.
 *
 * Build: cc -std=c99 -O2 -Wall -Wextra -o run_cuda run_cuda.c -ldl   (or: make run_cuda)
 */
#define _POSIX_C_SOURCE 200809L
#define NPY_IMPLEMENTATION
#include "npy.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_IO 64
#define PLAN_TEXT_VERSION 1 /* the newest plan.txt version this program reads */

/* ---- the CUDA driver API: just what a run needs (cuda.h is not required to build) ------- */
typedef int CUresult; /* 0: CUDA_SUCCESS */
typedef int CUdevice;
typedef unsigned long long CUdeviceptr; /* 64-bit device addresses (the _v2 API) */
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CUDA_ERROR_NO_DEVICE 100

static struct {
    CUresult (*cuInit)(unsigned);
    CUresult (*cuDeviceGetCount)(int *);
    CUresult (*cuDeviceGet)(CUdevice *, int);
    CUresult (*cuDeviceGetName)(char *, int, CUdevice);
    CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice);
    CUresult (*cuCtxSetCurrent)(CUcontext);
    CUresult (*cuCtxSynchronize)(void);
    CUresult (*cuModuleLoadData)(CUmodule *, const void *);
    CUresult (*cuModuleUnload)(CUmodule);
    CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
    CUresult (*cuMemFree_v2)(CUdeviceptr);
    CUresult (*cuMemcpyHtoD_v2)(CUdeviceptr, const void *, size_t);
    CUresult (*cuMemcpyDtoH_v2)(void *, CUdeviceptr, size_t);
    CUresult (*cuMemcpyDtoD_v2)(CUdeviceptr, CUdeviceptr, size_t);
    CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                               unsigned, unsigned, CUstream, void **, void **);
    CUresult (*cuGetErrorName)(CUresult, const char **);
    CUresult (*cuGetErrorString)(CUresult, const char **);
} cu;

/* name -> slot of `cu`, for dlsym (the _v2 names are what cuda.h maps the plain ones to) */
#define CU_SYM(f) {#f, (void *)&cu.f}
static const struct { const char *name; void *slot; } cu_symbols[] = {
    CU_SYM(cuInit), CU_SYM(cuDeviceGetCount), CU_SYM(cuDeviceGet), CU_SYM(cuDeviceGetName),
    CU_SYM(cuDeviceGetAttribute), CU_SYM(cuDevicePrimaryCtxRetain),
    CU_SYM(cuDevicePrimaryCtxRelease_v2), CU_SYM(cuCtxSetCurrent), CU_SYM(cuCtxSynchronize),
    CU_SYM(cuModuleLoadData), CU_SYM(cuModuleUnload), CU_SYM(cuModuleGetFunction),
    CU_SYM(cuMemAlloc_v2), CU_SYM(cuMemFree_v2), CU_SYM(cuMemcpyHtoD_v2),
    CU_SYM(cuMemcpyDtoH_v2), CU_SYM(cuMemcpyDtoD_v2), CU_SYM(cuLaunchKernel),
    CU_SYM(cuGetErrorName), CU_SYM(cuGetErrorString),
};

/* Report a failed driver call by name, with the driver's error name and description. */
static int cu_check(CUresult rc, const char *call, const char *detail) {
    const char *name = NULL, *desc = NULL;
    if (rc == 0) return 0;
    if (cu.cuGetErrorName(rc, &name) != 0 || !name) name = "unknown error code";
    if (cu.cuGetErrorString(rc, &desc) != 0 || !desc) desc = "no description";
    fprintf(stderr, "run_cuda: %s(%s) failed: %s (%s, code %d)\n", call, detail ? detail : "",
            name, desc, rc);
    return -1;
}
/* CU(fn, "what", args...): call cu.fn, print and evaluate to -1 on failure */
#define CU(fn, detail, ...) cu_check(cu.fn(__VA_ARGS__), #fn, detail)

/* Open libcuda.so.1 and resolve every function; the message says a GPU driver is needed. */
static int load_driver(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    size_t i;
    if (!lib) {
        fprintf(stderr,
                "run_cuda: no CUDA driver: cannot load libcuda.so.1 (%s).\n"
                "  Running a CUDA artifact needs an NVIDIA GPU and its driver (libcuda.so.1 "
                "comes with the driver, not with the CUDA toolkit).\n"
                "  Without a GPU, run the artifact on mxc's CPU PTX emulator: "
                "mxc run OUTDIR --input NAME=x.npy --device emulator\n",
                dlerror());
        return -1;
    }
    for (i = 0; i < sizeof cu_symbols / sizeof cu_symbols[0]; i++) {
        void *p = dlsym(lib, cu_symbols[i].name);
        if (!p) {
            fprintf(stderr, "run_cuda: libcuda.so.1 has no %s: the NVIDIA driver is too old "
                            "(CUDA 11 or newer is needed)\n", cu_symbols[i].name);
            return -1;
        }
        /* POSIX allows dlsym results as function pointers; memcpy avoids the ISO C cast */
        memcpy(cu_symbols[i].slot, &p, sizeof p);
    }
    return 0;
}

/* ---- plan.txt -------------------------------------------------------------------------- */
enum region { R_NULL, R_INPUT, R_OUTPUT, R_WEIGHTS, R_WORKSPACE };
static const char *const region_names[] = {"null", "input", "output", "weights", "workspace"};

struct ref { int region; int64_t index, offset; };          /* a region + byte offset */
struct tensor {
    char *name, *dtype;
    int64_t nbytes;
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
};
struct init { struct ref at; unsigned long long value; };   /* store_u64 at workspace + off */
struct copy { int64_t io; struct ref ref; int64_t nbytes; }; /* io: input / output number */
struct kernel {
    char *name, *node;
    int64_t grid, block, smem, smem_dynamic, n_tasks, param_bytes;
    int nargs;
    struct ref *args;
    CUfunction fn;
    uint64_t *vals;   /* the 8-byte parameter values: task_begin, task_end, pointers */
    void **params;    /* cuLaunchKernel's kernelParams: a pointer to each value */
};
struct plan {
    char *text;       /* plan.txt; every string below points into it */
    char *sm, *ptx, *weights_file;
    int64_t weights_bytes, workspace_bytes;
    int n_in, n_out, n_init, n_cin, n_kern, n_cout;
    struct tensor *in, *out;
    struct init *init;
    struct copy *cin, *cout;
    struct kernel *kern;
};

struct reader { char *p; const char *path; int line; };

/* The next whitespace-separated token (NUL-terminated in place), NULL at the end. */
static char *next_token(struct reader *r) {
    char *start;
    while (*r->p == ' ' || *r->p == '\t' || *r->p == '\r' || *r->p == '\n') {
        if (*r->p == '\n') r->line++;
        r->p++;
    }
    if (!*r->p) return NULL;
    start = r->p;
    while (*r->p && *r->p != ' ' && *r->p != '\t' && *r->p != '\r' && *r->p != '\n') r->p++;
    if (*r->p) {
        if (*r->p == '\n') r->line++;
        *r->p++ = 0;
    }
    return start;
}

static int parse_error(struct reader *r, const char *want, const char *got) {
    fprintf(stderr, "run_cuda: %s:%d: expected %s, found '%s' (damaged plan.txt? rebuild the "
                    "artifact)\n", r->path, r->line, want, got ? got : "end of file");
    return -1;
}

static int expect(struct reader *r, const char *keyword) {
    char *t = next_token(r);
    return t && !strcmp(t, keyword) ? 0 : parse_error(r, keyword, t);
}

static int read_int(struct reader *r, int64_t lo, int64_t hi, int64_t *v) {
    char *t = next_token(r), *end;
    long long x;
    if (!t) return parse_error(r, "an integer", t);
    errno = 0;
    x = strtoll(t, &end, 10);
    if (*end || end == t || errno || x < lo || x > hi) return parse_error(r, "an integer", t);
    *v = x;
    return 0;
}

/* Names are escaped so they are one token: %XX is the byte XX. Decoded in place. */
static char *read_name(struct reader *r) {
    char *t = next_token(r), *s, *d;
    if (!t) { parse_error(r, "a name", t); return NULL; }
    for (s = d = t; *s; d++) {
        unsigned v;
        if (s[0] == '%' && s[1] && s[2] && sscanf(s + 1, "%2x", &v) == 1) *d = (char)v, s += 3;
        else *d = *s++;
    }
    *d = 0;
    return t;
}

/* "KEYWORD n": a list's length, its array allocated (zeroed) */
static int read_count(struct reader *r, const char *keyword, int max, int *n, void **arr,
                      size_t elem) {
    int64_t v;
    if (expect(r, keyword) || read_int(r, 0, max, &v)) return -1;
    *n = (int)v;
    *arr = calloc(v ? (size_t)v : 1, elem);
    if (!*arr) { fprintf(stderr, "run_cuda: out of memory\n"); return -1; }
    return 0;
}

static int read_ref(struct reader *r, struct ref *ref) {
    char *t = next_token(r);
    int i;
    for (i = 0; t && i < 5; i++)
        if (!strcmp(t, region_names[i])) break;
    if (!t || i == 5) return parse_error(r, "a region (input output weights workspace null)", t);
    ref->region = i;
    return read_int(r, 0, INT32_MAX, &ref->index) || read_int(r, 0, INT64_MAX, &ref->offset);
}

/* "input|output NAME DTYPE NBYTES NDIM D0 D1 ..." */
static int read_tensor(struct reader *r, const char *keyword, struct tensor *t) {
    int64_t ndim;
    if (expect(r, keyword) || !(t->name = read_name(r)) || !(t->dtype = read_name(r)) ||
        read_int(r, 0, INT64_MAX, &t->nbytes) || read_int(r, 0, NPY_MAX_DIMS, &ndim))
        return -1;
    t->ndim = (int)ndim;
    for (int k = 0; k < t->ndim; k++)
        if (read_int(r, 0, INT64_MAX, &t->shape[k])) return -1;
    return 0;
}

/* "kernel NAME NODE GRID BLOCK SMEM SMEM_DYNAMIC N_TASKS PARAM_BYTES NARGS", NARGS "arg" lines */
static int read_kernel(struct reader *r, struct kernel *k) {
    int64_t nargs;
    if (expect(r, "kernel") || !(k->name = read_name(r)) || !(k->node = read_name(r)) ||
        read_int(r, 0, UINT32_MAX, &k->grid) || read_int(r, 0, UINT32_MAX, &k->block) ||
        read_int(r, 0, UINT32_MAX, &k->smem) || read_int(r, 0, UINT32_MAX, &k->smem_dynamic) ||
        read_int(r, 0, INT64_MAX, &k->n_tasks) || read_int(r, 0, INT32_MAX, &k->param_bytes) ||
        read_int(r, 0, 4096, &nargs))
        return -1;
    k->nargs = (int)nargs;
    k->args = calloc((size_t)nargs + 1, sizeof *k->args);
    k->vals = calloc((size_t)nargs + 2, sizeof *k->vals);
    k->params = calloc((size_t)nargs + 2, sizeof *k->params);
    if (!k->args || !k->vals || !k->params) { fprintf(stderr, "run_cuda: out of memory\n"); return -1; }
    for (int i = 0; i < k->nargs; i++)
        if (expect(r, "arg") || read_ref(r, &k->args[i])) return -1;
    return 0;
}

static int read_header(struct reader *r, struct plan *p) {
    int64_t version;
    char *magic = next_token(r);
    if (!magic || strcmp(magic, "mxc-cuda-plan-text") != 0) {
        fprintf(stderr, "run_cuda: %s is not an mxc CUDA launch plan (plan.txt)\n", r->path);
        return -1;
    }
    if (read_int(r, 0, INT32_MAX, &version)) return -1;
    if (version > PLAN_TEXT_VERSION) {
        fprintf(stderr, "run_cuda: %s: plan version %lld is newer than this program supports "
                        "(%d): build run_cuda.c of the mxc that wrote the artifact\n",
                r->path, (long long)version, PLAN_TEXT_VERSION);
        return -1;
    }
    if (expect(r, "sm") || !(p->sm = read_name(r)) || expect(r, "ptx") ||
        !(p->ptx = read_name(r)) || expect(r, "weights") || !(p->weights_file = read_name(r)) ||
        read_int(r, 0, INT64_MAX, &p->weights_bytes) || expect(r, "workspace") ||
        read_int(r, 0, INT64_MAX, &p->workspace_bytes))
        return -1;
    return 0;
}

/* The body after the header: every list in plan.json's order, then "end". */
static int read_lists(struct reader *r, struct plan *p) {
    int i;
    if (read_count(r, "inputs", MAX_IO, &p->n_in, (void **)&p->in, sizeof *p->in)) return -1;
    for (i = 0; i < p->n_in; i++)
        if (read_tensor(r, "input", &p->in[i])) return -1;
    if (read_count(r, "outputs", MAX_IO, &p->n_out, (void **)&p->out, sizeof *p->out)) return -1;
    for (i = 0; i < p->n_out; i++)
        if (read_tensor(r, "output", &p->out[i])) return -1;
    if (read_count(r, "init", 1 << 20, &p->n_init, (void **)&p->init, sizeof *p->init)) return -1;
    for (i = 0; i < p->n_init; i++) {
        char *v, *end;
        if (expect(r, "store_u64") || read_ref(r, &p->init[i].at)) return -1;
        v = next_token(r);       /* a u64 (random kernels' seed), beyond read_int's range */
        errno = 0;
        if (v) p->init[i].value = strtoull(v, &end, 10);
        if (!v || *end || end == v || errno || *v == '-') return parse_error(r, "a u64", v);
    }
    if (read_count(r, "copies_in", MAX_IO, &p->n_cin, (void **)&p->cin, sizeof *p->cin)) return -1;
    for (i = 0; i < p->n_cin; i++)
        if (expect(r, "copy_in") || read_int(r, 0, MAX_IO, &p->cin[i].io) ||
            read_ref(r, &p->cin[i].ref) || read_int(r, 0, INT64_MAX, &p->cin[i].nbytes))
            return -1;
    if (read_count(r, "kernels", 1 << 20, &p->n_kern, (void **)&p->kern, sizeof *p->kern))
        return -1;
    for (i = 0; i < p->n_kern; i++)
        if (read_kernel(r, &p->kern[i])) return -1;
    if (read_count(r, "copies_out", MAX_IO, &p->n_cout, (void **)&p->cout, sizeof *p->cout))
        return -1;
    for (i = 0; i < p->n_cout; i++)
        if (expect(r, "copy_out") || read_int(r, 0, MAX_IO, &p->cout[i].io) ||
            read_ref(r, &p->cout[i].ref) || read_int(r, 0, INT64_MAX, &p->cout[i].nbytes))
            return -1;
    return expect(r, "end");
}

/* bytes of a region, -1 when the reference names no such region (input 3 of 1) */
static int64_t region_bytes(const struct plan *p, const struct ref *ref) {
    switch (ref->region) {
    case R_INPUT: return ref->index < p->n_in ? p->in[ref->index].nbytes : -1;
    case R_OUTPUT: return ref->index < p->n_out ? p->out[ref->index].nbytes : -1;
    case R_WEIGHTS: return p->weights_bytes;
    case R_WORKSPACE: return p->workspace_bytes;
    default: return 0;
    }
}

/* Every reference inside its region (a corrupted plan must not make kernels scribble over
 * unrelated device memory) and every parameter block the size the convention says. */
static int check_plan(const struct plan *p, const char *path) {
    int i, j;
#define BAD(...) do { fprintf(stderr, "run_cuda: %s: ", path); fprintf(stderr, __VA_ARGS__); \
                      fprintf(stderr, " (damaged plan.txt? rebuild the artifact)\n"); return -1; } while (0)
#define IN_REGION(ref, n) (region_bytes(p, ref) >= 0 && (ref)->offset + (n) <= region_bytes(p, ref))
    for (i = 0; i < p->n_init; i++)
        if (p->init[i].at.region != R_WORKSPACE || !IN_REGION(&p->init[i].at, 8))
            BAD("init %d is outside the workspace", i);
    for (i = 0; i < p->n_cin; i++)
        if (p->cin[i].io >= p->n_in || p->cin[i].nbytes > p->in[p->cin[i].io].nbytes ||
            !IN_REGION(&p->cin[i].ref, p->cin[i].nbytes))
            BAD("copy_in %d is out of bounds", i);
    for (i = 0; i < p->n_cout; i++)
        if (p->cout[i].io >= p->n_out || p->cout[i].nbytes > p->out[p->cout[i].io].nbytes ||
            !IN_REGION(&p->cout[i].ref, p->cout[i].nbytes))
            BAD("copy_out %d is out of bounds", i);
    for (i = 0; i < p->n_kern; i++) {
        const struct kernel *k = &p->kern[i];
        if (k->param_bytes != 8 * (2 + (int64_t)k->nargs))
            BAD("kernel %s: param_bytes %lld, expected 8 * (2 + %d)", k->name,
                (long long)k->param_bytes, k->nargs);
        for (j = 0; j < k->nargs; j++)
            if (!IN_REGION(&k->args[j], 0))
                BAD("kernel %s: argument %d points outside its region", k->name, j);
    }
#undef IN_REGION
#undef BAD
    return 0;
}


/* ---- files ----------------------------------------------------------------------------- */
/* A whole file, NUL-terminated (cuModuleLoadData wants the PTX as a C string). */
static char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n = -1;
    if (!f) {
        fprintf(stderr, "run_cuda: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL &&
        fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
        *size = (size_t)n;
    } else {
        fprintf(stderr, "run_cuda: cannot read %s\n", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static void join(char *dst, size_t n, const char *dir, const char *file) {
    snprintf(dst, n, "%s/%s", dir, file);
}

static int load_plan(const char *dir, struct plan *p) {
    char path[4096];
    size_t size;
    struct reader r;
    FILE *f;
    memset(p, 0, sizeof *p);
    join(path, sizeof path, dir, "plan.txt");
    if ((f = fopen(path, "rb")) == NULL && errno == ENOENT) {
        /* artifacts written before plan.txt existed carry only plan.json */
        fprintf(stderr, "run_cuda: %s is missing: %s is not a CUDA artifact of mxc compile "
                        "--target cuda-sm80|cuda-sm90, or one from an older mxc (rebuild it)\n",
                path, dir);
        return -1;
    }
    if (f) fclose(f);
    if (!(p->text = read_file(path, &size))) return -1;
    r.p = p->text;
    r.path = path;
    r.line = 1;
    if (read_header(&r, p) || read_lists(&r, p)) return -1;
    return check_plan(p, path);
}

static void free_plan(struct plan *p) {
    for (int i = 0; p->kern && i < p->n_kern; i++) {
        free(p->kern[i].args);
        free(p->kern[i].vals);
        free(p->kern[i].params);
    }
    free(p->kern);
    free(p->in);
    free(p->out);
    free(p->init);
    free(p->cin);
    free(p->cout);
    free(p->text);
}

static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, n, "(");
    for (int k = 0; k < ndim && len < n; k++)
        len += (size_t)snprintf(buf + len, n - len, "%s%lld", k ? ", " : "", (long long)shape[k]);
    if (len < n) snprintf(buf + len, n - len, ndim == 1 ? ",)" : ")");
}

/* The .npy input against the plan: dtype, shape and size, as the Python loader checks. */
static int check_input(const struct tensor *t, const npy_array *a, const char *path) {
    int same = !strcmp(a->dtype, t->dtype) && a->ndim == t->ndim &&
               (int64_t)a->nbytes == t->nbytes;
    char want[256], got[256];
    for (int k = 0; same && k < t->ndim; k++) same = a->shape[k] == t->shape[k];
    if (same) return 0;
    format_shape(want, sizeof want, t->ndim, t->shape);
    format_shape(got, sizeof got, a->ndim, a->shape);
    fprintf(stderr, "run_cuda: input '%s' must be %s of shape %s; %s is %s of shape %s\n",
            t->name, t->dtype, want, path, a->dtype, got);
    return -1;
}

static int load_inputs(const struct plan *p, int n, char *const *paths, npy_array *arrs) {
    if (n != p->n_in) {
        fprintf(stderr, "run_cuda: the model takes %d input(s), %d given:", p->n_in, n);
        for (int i = 0; i < p->n_in; i++) fprintf(stderr, " %s", p->in[i].name);
        fprintf(stderr, "\n");
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (npy_load(paths[i], &arrs[i]) != 0 || check_input(&p->in[i], &arrs[i], paths[i]))
            return -1;
    return 0;
}

/* ---- the device ------------------------------------------------------------------------ */
struct gpu {
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUdeviceptr weights, workspace, in[MAX_IO], out[MAX_IO];
};

/* failures other than a CUDA call's (-1): exit status 2 and 3 */
#define BAD_ARTIFACT (-2)  /* the artifact does not fit: damaged, or built for a newer GPU */
#define NO_DEVICE (-3)     /* no usable driver or device */

static int sm_number(const char *sm) {
    int v = 0;
    return sscanf(sm, "sm_%d", &v) == 1 ? v : 0;
}

/* cuInit, the device, its primary context made current; refuses an artifact built for a
 * newer sm than the GPU before the driver fails to JIT it. */
static int open_device(int ordinal, const struct plan *p, struct gpu *g) {
    int n = 0, major = 0, minor = 0, want = sm_number(p->sm);
    char name[256] = "";
    CUresult rc = cu.cuInit(0);
    if (rc != 0) {
        cu_check(rc, "cuInit", "0");
        fprintf(stderr, "run_cuda: no usable CUDA device: the driver is installed but did not "
                        "initialize (no NVIDIA GPU, or the kernel module is not loaded)\n");
        return NO_DEVICE;
    }
    if (CU(cuDeviceGetCount, "", &n)) return -1;
    if (ordinal < 0 || ordinal >= n) {
        fprintf(stderr, "run_cuda: --device %d does not exist: the driver reports %d CUDA "
                        "device(s)\n", ordinal, n);
        return NO_DEVICE;
    }
    if (CU(cuDeviceGet, "", &g->dev, ordinal) ||
        CU(cuDeviceGetName, "", name, (int)sizeof name - 1, g->dev) ||
        CU(cuDeviceGetAttribute, "COMPUTE_CAPABILITY_MAJOR", &major,
           CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, g->dev) ||
        CU(cuDeviceGetAttribute, "COMPUTE_CAPABILITY_MINOR", &minor,
           CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, g->dev))
        return -1;
    if (want > 10 * major + minor) {
        fprintf(stderr, "run_cuda: the artifact is built for %s, newer than GPU %d (%s, "
                        "sm_%d%d): rebuild it with --target cuda-sm%d%d\n",
                p->sm, ordinal, name, major, minor, major, minor);
        return BAD_ARTIFACT;
    }
    if (CU(cuDevicePrimaryCtxRetain, "", &g->ctx, g->dev)) return -1;
    if (CU(cuCtxSetCurrent, "", g->ctx)) return -1;
    printf("device %d: %s (sm_%d%d)\n", ordinal, name, major, minor);
    return 0;
}

/* model.ptx through the driver's JIT, and the function of every kernel that is launched */
static int load_module(const char *dir, struct plan *p, struct gpu *g) {
    char path[4096];
    size_t size;
    char *ptx;
    CUresult rc;
    join(path, sizeof path, dir, p->ptx);
    if (!(ptx = read_file(path, &size))) return BAD_ARTIFACT;
    rc = cu.cuModuleLoadData(&g->mod, ptx);
    free(ptx);           /* the driver keeps its own copy */
    if (cu_check(rc, "cuModuleLoadData", path)) {
        fprintf(stderr, "run_cuda: the driver could not JIT the PTX: is the driver older than "
                        "the PTX ISA version, or the artifact's %s newer than the GPU?\n", p->sm);
        g->mod = NULL;
        return -1;
    }
    for (int i = 0; i < p->n_kern; i++) {
        struct kernel *k = &p->kern[i];
        if (k->n_tasks > 0 && k->grid > 0 && CU(cuModuleGetFunction, k->name, &k->fn, g->mod, k->name))
            return -1;
    }
    return 0;
}

/* Device memory; a zero-byte region still gets a valid pointer (as the Python loader). */
static int device_alloc(CUdeviceptr *ptr, int64_t nbytes, const char *what) {
    return CU(cuMemAlloc_v2, what, ptr, (size_t)(nbytes > 0 ? nbytes : 1));
}

/* weights.bin, uploaded once: every run reads it, none writes it */
static int upload_weights(const char *dir, const struct plan *p, struct gpu *g) {
    char path[4096];
    size_t size;
    char *data;
    int rc = BAD_ARTIFACT;
    join(path, sizeof path, dir, p->weights_file);
    if (!(data = read_file(path, &size))) return BAD_ARTIFACT;
    if ((int64_t)size != p->weights_bytes)
        fprintf(stderr, "run_cuda: %s has %zu bytes, plan.txt says %lld (damaged, or files of "
                        "two builds? rebuild the artifact)\n", path, size, (long long)p->weights_bytes);
    else if ((rc = device_alloc(&g->weights, p->weights_bytes, "weights")) == 0 && size)
        rc = CU(cuMemcpyHtoD_v2, "weights", g->weights, data, size);
    free(data);
    return rc;
}

/* the workspace and one device buffer per input and output */
static int alloc_buffers(const struct plan *p, struct gpu *g) {
    if (device_alloc(&g->workspace, p->workspace_bytes, "workspace")) return -1;
    for (int i = 0; i < p->n_in; i++)
        if (device_alloc(&g->in[i], p->in[i].nbytes, p->in[i].name)) return -1;
    for (int i = 0; i < p->n_out; i++)
        if (device_alloc(&g->out[i], p->out[i].nbytes, p->out[i].name)) return -1;
    return 0;
}

static void release(const struct plan *p, struct gpu *g) {
    /* errors are ignored: nothing useful can be done about them at exit */
    for (int i = 0; i < p->n_in; i++)
        if (g->in[i]) cu.cuMemFree_v2(g->in[i]);
    for (int i = 0; i < p->n_out; i++)
        if (g->out[i]) cu.cuMemFree_v2(g->out[i]);
    if (g->workspace) cu.cuMemFree_v2(g->workspace);
    if (g->weights) cu.cuMemFree_v2(g->weights);
    if (g->mod) cu.cuModuleUnload(g->mod);
    if (g->ctx) cu.cuDevicePrimaryCtxRelease_v2(g->dev);
}

/* ---- the run: docs/deploy.md section 7, as runtime.cuda.ArtifactProgram.run_device ------ */
static CUdeviceptr address(const struct gpu *g, const struct ref *r) {
    CUdeviceptr off = (CUdeviceptr)r->offset;
    switch (r->region) {
    case R_INPUT: return g->in[r->index] + off;
    case R_OUTPUT: return g->out[r->index] + off;
    case R_WEIGHTS: return g->weights + off;
    case R_WORKSPACE: return g->workspace + off;
    default: return 0;   /* "null": an argument the kernel does not use */
    }
}

/* Each kernel's parameters, once: 8-byte values task_begin = 0, task_end = n_tasks, then
 * one 64-bit device address per argument; kernelParams points at each value. */
static void pack_params(struct plan *p, const struct gpu *g) {
    for (int i = 0; i < p->n_kern; i++) {
        struct kernel *k = &p->kern[i];
        k->vals[0] = 0;
        k->vals[1] = (uint64_t)k->n_tasks;
        for (int j = 0; j < k->nargs; j++) k->vals[2 + j] = address(g, &k->args[j]);
        for (int j = 0; j < k->nargs + 2; j++) k->params[j] = &k->vals[j];
    }
}

/* One run on the device buffers: init, copies_in, kernels in order on the default stream,
 * copies_out. Returns without waiting for the kernels. */
static int run_plan(const struct plan *p, const struct gpu *g) {
    char what[512];
    for (int i = 0; i < p->n_init; i++) {
        /* the 64-bit seed of a random kernel; host and GPU are both little-endian */
        uint64_t v = p->init[i].value;
        if (CU(cuMemcpyHtoD_v2, "init store_u64", address(g, &p->init[i].at), &v, sizeof v))
            return -1;
    }
    for (int i = 0; i < p->n_cin; i++)   /* inputs a kernel writes in place: a copy */
        if (p->cin[i].nbytes && CU(cuMemcpyDtoD_v2, "copy_in", address(g, &p->cin[i].ref),
                                   g->in[p->cin[i].io], (size_t)p->cin[i].nbytes))
            return -1;
    for (int i = 0; i < p->n_kern; i++) {
        const struct kernel *k = &p->kern[i];
        if (k->n_tasks <= 0 || k->grid <= 0) continue;   /* nothing to do */
        snprintf(what, sizeof what, "%s, node %s", k->name, k->node);
        if (CU(cuLaunchKernel, what, k->fn, (unsigned)k->grid, 1, 1, (unsigned)k->block, 1, 1,
               (unsigned)k->smem_dynamic, (CUstream)NULL, k->params, (void **)NULL))
            return -1;
    }
    for (int i = 0; i < p->n_cout; i++)  /* outputs that are an input or a weight */
        if (p->cout[i].nbytes && CU(cuMemcpyDtoD_v2, "copy_out", g->out[p->cout[i].io],
                                    address(g, &p->cout[i].ref), (size_t)p->cout[i].nbytes))
            return -1;
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Device set up, inputs uploaded, `repeat` runs, outputs downloaded and saved. */
static int run_artifact(const char *dir, struct plan *p, int ordinal, int repeat,
                        const npy_array *inputs, const char *const *out_names, int n_out_names) {
    struct gpu g;
    int rc;
    double t0, dt;
    memset(&g, 0, sizeof g);
    rc = open_device(ordinal, p, &g);
    if (rc == 0) rc = load_module(dir, p, &g);
    if (rc == 0) rc = upload_weights(dir, p, &g);
    if (rc == 0) rc = alloc_buffers(p, &g);
    for (int i = 0; rc == 0 && i < p->n_in; i++)
        if (p->in[i].nbytes && CU(cuMemcpyHtoD_v2, p->in[i].name, g.in[i], inputs[i].data,
                                  (size_t)p->in[i].nbytes))
            rc = -1;
    if (rc == 0) {
        pack_params(p, &g);
        t0 = now();
        for (int r = 0; rc == 0 && r < repeat; r++) rc = run_plan(p, &g);
        if (rc == 0 && cu_check(cu.cuCtxSynchronize(), "cuCtxSynchronize", "after the runs"))
            rc = -1;
        dt = (now() - t0) / repeat;
        if (rc == 0)
            printf("run: %.3f ms (mean of %d; launches and device work, no host copies), "
                   "workspace %lld bytes\n", dt * 1e3, repeat, (long long)p->workspace_bytes);
    }
    for (int i = 0; rc == 0 && i < p->n_out; i++) {
        const struct tensor *t = &p->out[i];
        char name[64];
        const char *path = i < n_out_names ? out_names[i]
                                           : (snprintf(name, sizeof name, "out_%d.npy", i), name);
        void *host = malloc(t->nbytes ? (size_t)t->nbytes : 1);
        if (!host || (t->nbytes && CU(cuMemcpyDtoH_v2, t->name, host, g.out[i], (size_t)t->nbytes)))
            rc = -1;
        else if (npy_save(path, t->dtype, t->ndim, t->shape, host) != 0)
            rc = BAD_ARTIFACT;   /* an unwritable path, or a dtype npy.h does not know */
        else
            printf("output %d %s -> %s\n", i, t->name, path);
        free(host);
    }
    release(p, &g);
    return rc;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *outs[MAX_IO];
    char *ins[MAX_IO];
    int n_out_names = 0, n_in = 0, ordinal = 0, repeat = 1, bad_usage = 0, rc;
    struct plan plan;
    npy_array arrs[MAX_IO];

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc && n_out_names < MAX_IO) outs[n_out_names++] = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) ordinal = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (argv[i][0] == '-') bad_usage = 1;   /* unknown option, or one lacking its value */
        else if (!dir) dir = argv[i];
        else if (n_in < MAX_IO) ins[n_in++] = argv[i];
    }
    if (!dir || bad_usage) {
        fprintf(stderr, "usage: %s [-o OUT.npy]... [--device N] [--repeat N] OUTDIR IN.npy...\n"
                        "  OUTDIR: a CUDA artifact (mxc compile --target cuda-sm80|cuda-sm90)\n",
                argv[0]);
        return 2;
    }
    if (repeat < 1) repeat = 1;
    memset(arrs, 0, sizeof arrs);
    if (load_plan(dir, &plan) || load_inputs(&plan, n_in, ins, arrs)) {
        rc = 2;
    } else if (load_driver()) {
        rc = 3;
    } else {
        rc = run_artifact(dir, &plan, ordinal, repeat, arrs, outs, n_out_names);
        rc = rc == 0 ? 0 : rc == NO_DEVICE ? 3 : rc == BAD_ARTIFACT ? 2 : 1;
    }
    for (int i = 0; i < n_in; i++) npy_free(&arrs[i]);
    free_plan(&plan);
    return rc;
}
