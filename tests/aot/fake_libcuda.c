/* fake_libcuda.c: a stand-in libcuda.so.1 for tests/aot/test_cuda_c_example.py, so that
 * examples/c/run_cuda.c's plan handling runs end to end without a GPU. It implements the
 * driver functions run_cuda.c uses on host memory (device pointers are host addresses) and
 * records every call into the file named by $FAKE_CUDA_LOG, one line each:
 *
 *   alloc ID BYTES | free ID | htod ID OFF NBYTES FNV1A64 | dtoh ID OFF NBYTES
 *   dtod DST_ID DST_OFF SRC_ID SRC_OFF NBYTES | module PTX_BYTES | function NAME NPARAMS
 *   launch NAME GX GY GZ BX BY BZ SMEM NPARAMS P0 P1 ... | sync | unload | release
 *   init | error CALL CODE
 *
 * Allocation ids count from 0 in allocation order. Launch parameters are decoded as the
 * driver does: kernelParams holds NPARAMS pointers (NPARAMS from the kernel's .entry in the
 * PTX) to 8-byte values; a value inside an allocation is written ID:OFF, anything else in
 * decimal. Kernels do not run (outputs keep what the allocation held).
 *
 * Knobs: FAKE_CUDA_NO_DEVICE=1 (cuInit fails with CUDA_ERROR_NO_DEVICE), FAKE_CUDA_CC=90
 * (the compute capability; default 80), FAKE_CUDA_FAIL=NAME[:CODE] (that driver function
 * fails with CODE, default 999).
 *
 * Build: cc -shared -fPIC -o libcuda.so.1 fake_libcuda.c
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUhandle;   /* contexts, modules, functions, streams: opaque to the caller */

#define MAX_ALLOCS 4096
#define MAX_FUNCS 4096
#define MAX_MODULES 64

static struct { uintptr_t base; size_t size; int live; } allocs[MAX_ALLOCS];
static int n_allocs;
static struct { char name[256]; int nparams; } funcs[MAX_FUNCS];
static int n_funcs;
static char *modules[MAX_MODULES];   /* PTX texts; a module handle is &modules[i] */
static int n_modules;
static int context = 1;   /* the primary context's handle is its address */
static FILE *logf;

static void record(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void record(const char *fmt, ...) {
    va_list ap;
    if (!logf) {
        const char *path = getenv("FAKE_CUDA_LOG");
        logf = path ? fopen(path, "a") : NULL;
        if (!logf) return;
    }
    va_start(ap, fmt);
    vfprintf(logf, fmt, ap);
    va_end(ap);
    fputc('\n', logf);
    fflush(logf);
}

/* FAKE_CUDA_FAIL=NAME[:CODE]: the error `call` should return, 0 when it should work */
static CUresult injected(const char *call) {
    const char *spec = getenv("FAKE_CUDA_FAIL");
    size_t n = strlen(call);
    CUresult code;
    if (!spec || strncmp(spec, call, n) != 0 || (spec[n] && spec[n] != ':')) return 0;
    code = spec[n] == ':' ? atoi(spec + n + 1) : 999;
    record("error %s %d", call, code);
    return code;
}
#define FAIL_IF_INJECTED(call) do { CUresult e_ = injected(call); if (e_) return e_; } while (0)

/* the allocation holding [p, p + n), -1 when none does */
static int find_alloc(CUdeviceptr p, size_t n) {
    for (int i = 0; i < n_allocs; i++)
        if (allocs[i].live && p >= allocs[i].base && p + n <= allocs[i].base + allocs[i].size &&
            (n > 0 || p < allocs[i].base + allocs[i].size))
            return i;
    return -1;
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;   /* FNV-1a 64 offset basis */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* ---- errors ---------------------------------------------------------------------------- */
static const struct { CUresult code; const char *name, *desc; } errors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static CUresult describe(CUresult rc, const char **out, int want_name) {
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == rc) {
            *out = want_name ? errors[i].name : errors[i].desc;
            return 0;
        }
    *out = NULL;
    return 1;
}

CUresult cuGetErrorName(CUresult rc, const char **s) { return describe(rc, s, 1); }
CUresult cuGetErrorString(CUresult rc, const char **s) { return describe(rc, s, 0); }

/* ---- device and context ---------------------------------------------------------------- */
CUresult cuInit(unsigned flags) {
    FAIL_IF_INJECTED("cuInit");
    record("init");
    if (flags != 0) return 1;
    return getenv("FAKE_CUDA_NO_DEVICE") ? 100 : 0;
}

CUresult cuDeviceGetCount(int *n) {
    FAIL_IF_INJECTED("cuDeviceGetCount");
    *n = 1;
    return 0;
}

CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    FAIL_IF_INJECTED("cuDeviceGet");
    if (ordinal != 0) return 101;
    *d = 0;
    return 0;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    (void)d;
    snprintf(name, (size_t)len, "Fake GPU");
    return 0;
}

CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice d) {
    const char *cc = getenv("FAKE_CUDA_CC");
    int n = cc ? atoi(cc) : 80;
    (void)d;
    if (attr != 75 && attr != 76) return 1;   /* compute capability major / minor only */
    *v = attr == 75 ? n / 10 : n % 10;
    return 0;
}

CUresult cuDevicePrimaryCtxRetain(CUhandle *ctx, CUdevice d) {
    FAIL_IF_INJECTED("cuDevicePrimaryCtxRetain");
    *ctx = &context;
    return d == 0 ? 0 : 101;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    record("release");
    return d == 0 ? 0 : 101;
}

CUresult cuCtxSetCurrent(CUhandle ctx) { return ctx == &context ? 0 : 400; }

CUresult cuCtxSynchronize(void) {
    FAIL_IF_INJECTED("cuCtxSynchronize");
    record("sync");
    return 0;
}

/* ---- memory ---------------------------------------------------------------------------- */
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    void *mem = NULL;
    FAIL_IF_INJECTED("cuMemAlloc_v2");
    if (n == 0) return 1;   /* as the driver: zero-byte allocations are an error */
    if (n_allocs == MAX_ALLOCS || posix_memalign(&mem, 256, n) != 0) return 2;
    memset(mem, 0xFF, n);   /* like uninitialized device memory: not zeros */
    allocs[n_allocs].base = (uintptr_t)mem;
    allocs[n_allocs].size = n;
    allocs[n_allocs].live = 1;
    record("alloc %d %zu", n_allocs, n);
    n_allocs++;
    *p = (CUdeviceptr)(uintptr_t)mem;
    return 0;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
    for (int i = 0; i < n_allocs; i++)
        if (allocs[i].live && allocs[i].base == p) {
            allocs[i].live = 0;
            free((void *)(uintptr_t)p);
            record("free %d", i);
            return 0;
        }
    record("error cuMemFree_v2 1");
    return 1;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
    int a = find_alloc(dst, n);
    FAIL_IF_INJECTED("cuMemcpyHtoD_v2");
    if (a < 0) { record("error cuMemcpyHtoD_v2 700"); return 700; }
    memcpy((void *)(uintptr_t)dst, src, n);
    record("htod %d %llu %zu %016llx", a, dst - allocs[a].base, n,
           (unsigned long long)fnv1a(src, n));
    return 0;
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
    int a = find_alloc(src, n);
    FAIL_IF_INJECTED("cuMemcpyDtoH_v2");
    if (a < 0) { record("error cuMemcpyDtoH_v2 700"); return 700; }
    memcpy(dst, (const void *)(uintptr_t)src, n);
    record("dtoh %d %llu %zu", a, src - allocs[a].base, n);
    return 0;
}

CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    int d = find_alloc(dst, n), s = find_alloc(src, n);
    FAIL_IF_INJECTED("cuMemcpyDtoD_v2");
    if (d < 0 || s < 0) { record("error cuMemcpyDtoD_v2 700"); return 700; }
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    record("dtod %d %llu %d %llu %zu", d, dst - allocs[d].base, s, src - allocs[s].base, n);
    return 0;
}

/* ---- modules and launches -------------------------------------------------------------- */
/* the PTX text of a module handle, NULL for anything else */
static char *module_text(CUhandle mod) {
    for (int i = 0; i < n_modules; i++)
        if (mod == (CUhandle)&modules[i]) return modules[i];
    return NULL;
}

CUresult cuModuleLoadData(CUhandle *mod, const void *image) {
    const char *text = image;
    FAIL_IF_INJECTED("cuModuleLoadData");
    if (!strstr(text, ".entry")) return 218;
    if (n_modules == MAX_MODULES) return 2;
    modules[n_modules] = strdup(text);   /* the caller may free its image right away */
    record("module %zu", strlen(text));
    *mod = &modules[n_modules++];
    return 0;
}

CUresult cuModuleUnload(CUhandle mod) {
    char *text = module_text(mod);
    if (!text) return 400;
    free(text);
    for (int i = 0; i < n_modules; i++)
        if (mod == (CUhandle)&modules[i]) modules[i] = NULL;
    record("unload");
    return 0;
}

/* ".entry NAME(" in the PTX: the number of .param declarations up to the ')' */
static int entry_params(const char *ptx, const char *name) {
    size_t n = strlen(name);
    for (const char *p = strstr(ptx, ".entry"); p; p = strstr(p + 6, ".entry")) {
        const char *q = p + 6, *end;
        int count = 0;
        while (*q == ' ' || *q == '\t') q++;
        if (strncmp(q, name, n) != 0) continue;
        q += n;
        while (*q == ' ' || *q == '\t' || *q == '\n') q++;
        if (*q != '(') continue;
        end = strchr(q, ')');
        for (const char *s = strstr(q, ".param"); s && end && s < end; s = strstr(s + 6, ".param"))
            count++;
        return count;
    }
    return -1;
}

CUresult cuModuleGetFunction(CUhandle *fn, CUhandle mod, const char *name) {
    const char *text = module_text(mod);
    int np;
    FAIL_IF_INJECTED("cuModuleGetFunction");
    if (!text) return 400;
    if ((np = entry_params(text, name)) < 0 || strlen(name) >= sizeof funcs[0].name) return 500;
    if (n_funcs == MAX_FUNCS) return 2;
    snprintf(funcs[n_funcs].name, sizeof funcs[0].name, "%s", name);
    funcs[n_funcs].nparams = np;
    record("function %s %d", name, np);
    *fn = &funcs[n_funcs++];
    return 0;
}

/* one 8-byte parameter value, as an allocation-relative address where it is one */
static void decode_param(char *buf, size_t n, uint64_t v) {
    int a = find_alloc(v, 0);
    if (a >= 0) snprintf(buf, n, "%d:%llu", a, (unsigned long long)(v - allocs[a].base));
    else snprintf(buf, n, "%llu", (unsigned long long)v);
}

CUresult cuLaunchKernel(CUhandle f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned smem, CUhandle stream,
                        void **params, void **extra) {
    char line[65536], val[64];
    size_t len;
    int k = 0;
    FAIL_IF_INJECTED("cuLaunchKernel");
    while (k < n_funcs && f != (CUhandle)&funcs[k]) k++;
    if (k == n_funcs) return 400;   /* not a handle cuModuleGetFunction gave out */
    if (!params || extra || stream || !gx || !bx || bx * by * bz > 1024) return 1;
    len = (size_t)snprintf(line, sizeof line, "launch %s %u %u %u %u %u %u %u %d", funcs[k].name,
                           gx, gy, gz, bx, by, bz, smem, funcs[k].nparams);
    for (int i = 0; i < funcs[k].nparams && len < sizeof line; i++) {
        uint64_t v;
        memcpy(&v, params[i], sizeof v);   /* each parameter is 8 bytes */
        decode_param(val, sizeof val, v);
        len += (size_t)snprintf(line + len, sizeof line - len, " %s", val);
    }
    record("%s", line);
    return 0;
}
