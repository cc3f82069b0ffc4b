/* npy.h: a tiny reader/writer for NumPy .npy files (C-contiguous arrays, little-endian
 * hosts), enough for feeding an mxc artifact and saving its outputs.
 *
 *   npy_array a;
 *   if (npy_load("x.npy", &a) != 0) ...;   a.dtype ("float32"), a.ndim, a.shape, a.data
 *   npy_save("y.npy", "float32", ndim, shape, data);
 *   npy_free(&a);
 *
 * Header-only: define NPY_IMPLEMENTATION in one translation unit before including it.
 */
#ifndef MXC_NPY_H
#define MXC_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 16

typedef struct npy_array {
    char dtype[16];             /* mxc/numpy dtype name: float32, int64, uint8, bool, ... */
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    size_t nbytes;
    void *data;                 /* 64-byte aligned; free with npy_free */
} npy_array;

int npy_load(const char *path, npy_array *out);      /* 0 on success, prints errors */
int npy_save(const char *path, const char *dtype, int ndim, const int64_t *shape,
             const void *data);
void npy_free(npy_array *a);

#ifdef NPY_IMPLEMENTATION
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *descr; const char *name; int size; } npy_types[] = {
    {"<f4", "float32", 4}, {"<f8", "float64", 8}, {"<f2", "float16", 2},
    {"<i4", "int32", 4},   {"<i8", "int64", 8},   {"<i2", "int16", 2},
    {"|i1", "int8", 1},    {"|u1", "uint8", 1},   {"<u2", "uint16", 2},
    {"<u4", "uint32", 4},  {"<u8", "uint64", 8},  {"|b1", "bool", 1},
};

static int npy_type_index(const char *key, int by_name) {
    for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
        if (strcmp(by_name ? npy_types[i].name : npy_types[i].descr, key) == 0)
            return (int)i;
    return -1;
}

static void *npy_aligned_alloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) return NULL;
    return p;
}

int npy_load(const char *path, npy_array *out) {
    FILE *f = fopen(path, "rb");
    unsigned char pre[10];
    char *hdr = NULL;
    uint32_t hlen;
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (!f) { perror(path); return -1; }
    if (fread(pre, 1, 8, f) != 8 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        fprintf(stderr, "%s: not a .npy file\n", path);
        goto done;
    }
    if (pre[6] == 1) {
        unsigned char b[2];
        if (fread(b, 1, 2, f) != 2) goto trunc;
        hlen = b[0] | (b[1] << 8);
    } else {
        unsigned char b[4];
        if (fread(b, 1, 4, f) != 4) goto trunc;
        hlen = b[0] | (b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    }
    hdr = malloc(hlen + 1);
    if (!hdr || fread(hdr, 1, hlen, f) != hlen) goto trunc;
    hdr[hlen] = 0;
    {
        char *d = strstr(hdr, "'descr':");
        char *fo = strstr(hdr, "'fortran_order':");
        char *sh = strstr(hdr, "'shape':");
        char descr[8] = {0};
        int ti;
        size_t n = 1;
        if (!d || !fo || !sh) { fprintf(stderr, "%s: bad .npy header\n", path); goto done; }
        d = strchr(d + 8, '\'');
        if (!d || sscanf(d + 1, "%7[^']", descr) != 1) goto bad;
        ti = npy_type_index(descr, 0);
        if (ti < 0) { fprintf(stderr, "%s: unsupported dtype %s\n", path, descr); goto done; }
        if (strncmp(fo + 16, " True", 5) == 0) {
            fprintf(stderr, "%s: Fortran-ordered arrays are not supported\n", path);
            goto done;
        }
        sh = strchr(sh, '(');
        if (!sh) goto bad;
        sh++;
        while (*sh && *sh != ')') {
            char *end;
            long long v;
            while (*sh == ' ' || *sh == ',') sh++;
            if (*sh == ')') break;
            v = strtoll(sh, &end, 10);
            if (end == sh || out->ndim >= NPY_MAX_DIMS) goto bad;
            out->shape[out->ndim++] = v;
            n *= (size_t)v;
            sh = end;
        }
        strcpy(out->dtype, npy_types[ti].name);
        out->nbytes = n * (size_t)npy_types[ti].size;
        out->data = npy_aligned_alloc(out->nbytes);
        if (!out->data) { fprintf(stderr, "%s: out of memory\n", path); goto done; }
        if (fread(out->data, 1, out->nbytes, f) != out->nbytes) goto trunc;
        rc = 0;
        goto done;
    }
bad:
    fprintf(stderr, "%s: cannot parse the .npy header\n", path);
    goto done;
trunc:
    fprintf(stderr, "%s: truncated .npy file\n", path);
done:
    free(hdr);
    fclose(f);
    if (rc != 0) npy_free(out);
    return rc;
}

int npy_save(const char *path, const char *dtype, int ndim, const int64_t *shape,
             const void *data) {
    int ti = npy_type_index(dtype, 1);
    char hdr[512], dims[400] = "";
    size_t n = 1, len;
    FILE *f;
    if (ti < 0) { fprintf(stderr, "npy_save: unsupported dtype %s\n", dtype); return -1; }
    for (int i = 0; i < ndim; i++) {
        char b[32];
        snprintf(b, sizeof b, "%lld,%s", (long long)shape[i], ndim == 1 ? "" : " ");
        strncat(dims, b, sizeof dims - strlen(dims) - 1);
        n *= (size_t)shape[i];
    }
    if (ndim > 1) dims[strlen(dims) - 1] = 0;   /* numpy spells (4, 10) */
    snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
             npy_types[ti].descr, dims);
    len = strlen(hdr);
    /* pad with spaces so the data starts at a multiple of 64, end with a newline */
    while ((10 + len + 1) % 64) hdr[len++] = ' ';
    hdr[len++] = '\n';
    f = fopen(path, "wb");
    if (!f) { perror(path); return -1; }
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc((int)(len & 0xff), f);
    fputc((int)(len >> 8), f);
    fwrite(hdr, 1, len, f);
    fwrite(data, (size_t)npy_types[ti].size, n, f);
    if (fclose(f) != 0) { perror(path); return -1; }
    return 0;
}

void npy_free(npy_array *a) {
    free(a->data);
    a->data = NULL;
}
#endif /* NPY_IMPLEMENTATION */
#endif /* MXC_NPY_H */
