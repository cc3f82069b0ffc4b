"""The ARM compiler-runtime helpers an artifact carries (codegen.rtlib): 64-bit division,
32-bit division without a hardware divider, float <-> 64-bit integer conversions. IR using
each operation is built into a freestanding armv7 library; a C program cross-built with
arm-linux-gnueabihf-gcc (whose libgcc is the reference) compares them on random operands
under qemu-arm.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL = "apt-get install -y lld qemu-user gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
SYSROOT = "/usr/arm-linux-gnueabihf"

OPS_IR = r"""define i64 @t_sdiv64(i64 %a, i64 %b) { %r = sdiv i64 %a, %b
 ret i64 %r }
define i64 @t_srem64(i64 %a, i64 %b) { %r = srem i64 %a, %b
 ret i64 %r }
define i64 @t_udiv64(i64 %a, i64 %b) { %r = udiv i64 %a, %b
 ret i64 %r }
define i64 @t_urem64(i64 %a, i64 %b) { %r = urem i64 %a, %b
 ret i64 %r }
define i32 @t_sdiv32(i32 %a, i32 %b) { %r = sdiv i32 %a, %b
 ret i32 %r }
define i32 @t_srem32(i32 %a, i32 %b) { %r = srem i32 %a, %b
 ret i32 %r }
define i32 @t_udiv32(i32 %a, i32 %b) { %r = udiv i32 %a, %b
 ret i32 %r }
define i32 @t_urem32(i32 %a, i32 %b) { %r = urem i32 %a, %b
 ret i32 %r }
define i64 @t_f2l(float %a) { %r = fptosi float %a to i64
 ret i64 %r }
define i64 @t_f2ul(float %a) { %r = fptoui float %a to i64
 ret i64 %r }
define i64 @t_d2l(double %a) { %r = fptosi double %a to i64
 ret i64 %r }
define i64 @t_d2ul(double %a) { %r = fptoui double %a to i64
 ret i64 %r }
define float @t_l2f(i64 %a) { %r = sitofp i64 %a to float
 ret float %r }
define float @t_ul2f(i64 %a) { %r = uitofp i64 %a to float
 ret float %r }
define double @t_l2d(i64 %a) { %r = sitofp i64 %a to double
 ret double %r }
define double @t_ul2d(i64 %a) { %r = uitofp i64 %a to double
 ret double %r }
"""

DRIVER_C = r"""
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>

static uint64_t s = 88172645463325252ull;
static uint64_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }
static int64_t pick(void) {            /* small, negative, 31-bit, full 64-bit, shifted */
    uint64_t r = rnd();
    switch (rnd() % 6) {
    case 0: return (int64_t)(r % 1000);
    case 1: return -(int64_t)(r % 100000);
    case 2: return (int64_t)(r & 0x7fffffff);
    case 3: return (int64_t)r;
    case 4: return (int64_t)(r >> (rnd() % 63));
    default: return -(int64_t)(r >> 20);
    }
}
#define F(name, T, ...) T (*name)(__VA_ARGS__) = dlsym(lib, #name); \
    if (!name) { printf("missing %s\n", #name); return 2; }
#define CHECK(expr, want) do { n++; if ((expr) != (want) && bad++ < 10) \
    printf("mismatch %s line %d\n", #expr, __LINE__); } while (0)
typedef int64_t i64;
typedef uint64_t u64;
typedef int32_t i32;
typedef uint32_t u32;

int main(int argc, char **argv) {
    void *lib = dlopen(argv[1], RTLD_NOW);
    long bad = 0, n = 0;
    if (!lib) { printf("%s\n", dlerror()); return 2; }
    F(t_sdiv64, i64, i64, i64) F(t_srem64, i64, i64, i64)
    F(t_udiv64, u64, u64, u64) F(t_urem64, u64, u64, u64)
    F(t_sdiv32, i32, i32, i32) F(t_srem32, i32, i32, i32)
    F(t_udiv32, u32, u32, u32) F(t_urem32, u32, u32, u32)
    F(t_f2l, i64, float) F(t_f2ul, u64, float) F(t_d2l, i64, double) F(t_d2ul, u64, double)
    F(t_l2f, float, i64) F(t_ul2f, float, u64) F(t_l2d, double, i64) F(t_ul2d, double, u64)
    for (int i = 0; i < 50000; i++) {
        i64 a = pick(), b = pick();
        if (b == 0) b = 7;
        if (a == INT64_MIN && b == -1) b = 3;
        u64 ua = (u64)a, ub = (u64)b;
        CHECK(t_sdiv64(a, b), a / b);
        CHECK(t_srem64(a, b), a % b);
        CHECK(t_udiv64(ua, ub), ua / ub);
        CHECK(t_urem64(ua, ub), ua % ub);
        i32 a3 = (i32)a, b3 = (i32)b;
        if (b3 == 0) b3 = 5;
        if (a3 == INT32_MIN && b3 == -1) b3 = 3;
        CHECK(t_sdiv32(a3, b3), a3 / b3);
        CHECK(t_srem32(a3, b3), a3 % b3);
        CHECK(t_udiv32((u32)a3, (u32)b3), (u32)a3 / (u32)b3);
        CHECK(t_urem32((u32)a3, (u32)b3), (u32)a3 % (u32)b3);
        CHECK(t_l2f(a), (float)a);
        CHECK(t_ul2f(ua), (float)ua);
        CHECK(t_l2d(a), (double)a);
        CHECK(t_ul2d(ua), (double)ua);
        double d = (double)a * (1.0 + (rnd() % 1000) * 1e-4) / 2.0;
        float f = (float)d;
        if (d > -9.2e18 && d < 9.2e18) { CHECK(t_d2l(d), (i64)d); CHECK(t_f2l(f), (i64)f); }
        if (d >= 0 && d < 1.8e19) { CHECK(t_d2ul(d), (u64)d); CHECK(t_f2ul(f), (u64)f); }
    }
    printf("%ld checks, %ld mismatches\n", n, bad);
    return bad != 0;
}
"""


def test_arm_helpers_match_libgcc_under_qemu(tmp_path):
    from mxc.base import CompileError
    from mxc.codegen import rtlib, targets
    from mxc.compiler import aot

    for tool in ("arm-linux-gnueabihf-gcc", "qemu-arm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found (install: {INSTALL})")
    if not Path(SYSROOT).is_dir():
        pytest.skip(f"{SYSROOT} missing (install: {INSTALL})")
    try:
        aot.find_lld()
    except CompileError as e:
        pytest.skip(str(e))
    keep = set(re.findall(r"@(t_\w+)\(", OPS_IR))
    text = OPS_IR + rtlib.runtime_ir("arm")
    for name in ("armv7a-linux-gnueabihf", "armv7a-linux-androideabi"):
        t = targets.resolve(name)
        obj = aot._compile_object(text, t, keep)
        aot._check_object(obj, t)          # every libcall resolved inside the object
        aot._link(obj, tmp_path / f"{name}.so", t)
    (tmp_path / "drv.c").write_text(DRIVER_C)
    exe = tmp_path / "drv"
    r = subprocess.run(["arm-linux-gnueabihf-gcc", "-O1", "-o", str(exe),
                        str(tmp_path / "drv.c"), "-ldl"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["qemu-arm", "-L", SYSROOT, str(exe),
                        str(tmp_path / "armv7a-linux-gnueabihf.so")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and " 0 mismatches" in r.stdout, r.stdout + r.stderr
