"""Tests for mxc.codegen.mathlib: mxc's own libm-free math functions in LLVM IR.

Each function is JIT-compiled (O3, host target machine) inside a loop kernel
``void k(ptr in, [ptr in2,] ptr out, i64 n)`` and compared against numpy / math
references over wide input ranges and special values.  Also checked: the loop
is vectorized on the host, and cross-built objects for Android aarch64/armv7a
reference no external symbol (no libm / compiler-rt calls).
"""
from __future__ import annotations

import ctypes
import math
import re
import struct
import zlib

import numpy as np
import pytest

llvm = pytest.importorskip("llvmlite.binding")

from mxc.codegen import mathlib as M

SFX = {"float32": "f32", "float64": "f64"}
DT = {"float32": np.float32, "float64": np.float64}
UNARY = [f for f in M.MATH_FUNCS if f != "pow"]


# ---------------------------------------------------------------------------
# JIT plumbing
# ---------------------------------------------------------------------------
def _kernel_ir(func: str, dtype: str) -> str:
    ty = "float" if dtype == "float32" else "double"
    name = M.math_function_name(func, dtype)
    two = func in ("pow",)
    args = "ptr noalias %a, " + ("ptr noalias %b, " if two else "") + "ptr noalias %o, i64 %n"
    ld2 = (f"  %pb = getelementptr inbounds {ty}, ptr %b, i64 %i\n"
           f"  %y = load {ty}, ptr %pb\n") if two else ""
    call = f"call {ty} @{name}({ty} %x" + (f", {ty} %y)" if two else ")")
    return f"""
define void @k_{func}_{SFX[dtype]}({args}) {{
entry:
  %c = icmp sgt i64 %n, 0
  br i1 %c, label %loop, label %exit
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %pa = getelementptr inbounds {ty}, ptr %a, i64 %i
  %x = load {ty}, ptr %pa
{ld2}  %r = {call}
  %po = getelementptr inbounds {ty}, ptr %o, i64 %i
  store {ty} %r, ptr %po
  %i1 = add nuw nsw i64 %i, 1
  %d = icmp eq i64 %i1, %n
  br i1 %d, label %exit, label %loop
exit:
  ret void
}}
"""


def _host_tm():
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, jit=True)


def _optimize(mod, tm):
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


class _Jit:
    def __init__(self, ir: str):
        self.tm = _host_tm()
        mod = llvm.parse_assembly(ir)
        mod.triple = llvm.get_process_triple()
        mod.verify()
        _optimize(mod, self.tm)
        self.ee = llvm.create_mcjit_compiler(mod, self.tm)
        self.ee.finalize_object()
        self.mod = mod
        self._fns = {}

    def fn(self, name: str, nptr: int):
        if name not in self._fns:
            addr = self.ee.get_function_address(name)
            assert addr
            proto = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * nptr), ctypes.c_int64)
            self._fns[name] = proto(addr)
        return self._fns[name]


@pytest.fixture(scope="module")
def jit():
    pairs = [(f, d) for d in DT for f in M.MATH_FUNCS]
    ir = M.math_ir(pairs) + "".join(_kernel_ir(f, d) for f, d in pairs)
    return _Jit(ir)


def _run(jit, func, dtype, *xs):
    dt = DT[dtype]
    xs = [np.ascontiguousarray(x, dtype=dt) for x in xs]
    out = np.empty_like(xs[0])
    f = jit.fn(f"k_{func}_{SFX[dtype]}", len(xs) + 1)
    f(*[x.ctypes.data for x in xs], out.ctypes.data, out.size)
    return out


# ---------------------------------------------------------------------------
# references (numpy / math only) and inputs
# ---------------------------------------------------------------------------
def _vec(fn, on_error=np.nan):
    def g(x):
        out = np.empty(x.shape, np.float64)
        for i, v in enumerate(x.astype(np.float64)):
            try:
                out[i] = fn(float(v))
            except (ValueError, OverflowError):
                out[i] = on_error(v) if callable(on_error) else on_error
        return out
    return g


def _gamma_ref(x):
    def err(v):
        if v == 0:
            return math.copysign(math.inf, v)
        if v < 0 and (math.isinf(v) or v == math.floor(v)):
            return math.nan
        return math.copysign(math.inf, v)
    return _vec(math.gamma, err)(x)


def _lgamma_ref(x):
    return _vec(math.lgamma, math.inf)(x)


def _erfinv_ref(y):
    """erfinv in float64: initial guess + Newton steps on erf (erfc in the tails)."""
    y = y.astype(np.float64)
    a = np.abs(y)
    erf = np.vectorize(math.erf, otypes=[float])
    erfc = np.vectorize(math.erfc, otypes=[float])
    with np.errstate(all="ignore"):
        w = -np.log((1.0 - a) * (1.0 + a))
        x = np.sqrt(np.maximum(w - np.log(np.maximum(w, 1e-300)) / 2 - 0.5, 0.0))  # tail guess
        x = np.where(a < 0.7, a * math.sqrt(math.pi) / 2 * (1 + math.pi / 12 * a * a), x)
        ok = np.isfinite(x) & (a < 1)
        x = np.where(ok, x, 0.0)
        for _ in range(40):
            f = np.where(a < 0.5, erf(x) - a, (1.0 - a) - erfc(x))
            d = f / (2 / math.sqrt(math.pi) * np.exp(-x * x))
            x = x - np.clip(d, -1.0, 1.0)
        res = np.where(a == 1, np.inf, np.where(a > 1, np.nan, x))
        res = np.where(np.isnan(y), np.nan, res)
    return np.copysign(res, y)


def _round_away(x):
    ax = np.abs(x)
    fl = np.floor(ax)
    return np.copysign(np.where(ax - fl >= 0.5, fl + 1, fl), x)


def _sigmoid_ref(x):
    with np.errstate(all="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


REF = {
    "exp": np.exp, "exp2": np.exp2, "expm1": np.expm1, "log": np.log, "log2": np.log2,
    "log10": np.log10, "log1p": np.log1p, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "tanh": np.tanh, "sinh": np.sinh, "cosh": np.cosh, "arcsin": np.arcsin,
    "arccos": np.arccos, "arctan": np.arctan, "arcsinh": np.arcsinh, "arccosh": np.arccosh,
    "arctanh": np.arctanh, "erf": _vec(math.erf), "erfinv": _erfinv_ref,
    "sigmoid": _sigmoid_ref, "softrelu": lambda x: np.logaddexp(0.0, x),
    "gammaln": _lgamma_ref, "gamma": _gamma_ref, "cbrt": np.cbrt,
    "rcbrt": lambda x: 1.0 / np.cbrt(x), "sqrt": np.sqrt, "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "round": _round_away, "rint": np.rint, "floor": np.floor, "ceil": np.ceil,
    "trunc": np.trunc, "fix": np.fix,
}

# relative tolerances (absolute tolerance atol is added for results near zero)
RTOL = {"float32": 3e-7, "float64": 1e-15}
RTOL_LOOSE = {"erf": (1e-6, 1e-15), "erfinv": (1e-6, 1e-14), "gamma": (1e-6, 1e-14),
              "gammaln": (1e-6, 1e-14)}
ATOL = {"gammaln": (1e-7, 4e-15)}  # math.lgamma is only absolutely accurate near 1, 2
EXACT = {"round", "rint", "floor", "ceil", "trunc", "fix"}


def _specials(dt):
    fi = np.finfo(dt)
    v = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5,
         3.0, -3.0, 2.0, -2.0, float(fi.smallest_subnormal), -float(fi.smallest_subnormal),
         float(fi.tiny), -float(fi.tiny), float(fi.max), -float(fi.max), 1e-30, -1e-30,
         0.49999997, -0.49999997, 0.9999999, -0.9999999, 1.0000001, 88.7, 89.0, 90.0, -87.0,
         -104.0, -110.0, 709.0, 710.0, -745.0, -750.0, 100.0, -100.0, 1e6, -1e6, 8388609.0,
         -8388609.5, 4503599627370497.0, 1e20, -1e20, 1e300, math.pi, math.pi / 2]
    with np.errstate(all="ignore"):
        return np.array(v, np.float64).astype(dt)


def _inputs(func: str, dtype: str) -> np.ndarray:
    dt = DT[dtype]
    # a seed per (func, dtype) that is the same in every process (str hash() is salted)
    rng = np.random.default_rng(zlib.crc32(f"{func}/{dtype}".encode()))
    n = 4000
    emax = 38 if dtype == "float32" else 307

    def U(a, b):
        return rng.uniform(a, b, n)

    def L(lo, hi, signed=True):
        v = 10.0 ** rng.uniform(lo, hi, n)
        return v * rng.choice([-1.0, 1.0], n) if signed else v

    f32 = dtype == "float32"
    table = {
        "exp": [U(-110, 90) if f32 else U(-750, 712), U(-1, 1), L(-30, 1)],
        "exp2": [U(-152, 130) if f32 else U(-1080, 1026), U(-1, 1)],
        "expm1": [U(-30, 90) if f32 else U(-50, 712), U(-1, 1), L(-30, 1)],
        "log": [L(-45 if f32 else -320, emax, False), U(0.5, 2), 1 + L(-7, -1)],
        "log1p": [L(-30, emax, False), U(-1, 1), -L(-30, -0.0001, False)],
        "sin": [U(-10, 10), L(-30, 5), L(5, emax)],
        "tanh": [U(-12, 12), L(-30, 2)],
        "sinh": [U(-90, 90) if f32 else U(-712, 712), L(-30, 1)],
        "arcsin": [U(-1, 1), L(-30, 0), 1 - L(-7, -1, False), U(-2, 2)],
        "arctan": [U(-10, 10), L(-30, emax)],
        "arcsinh": [U(-10, 10), L(-30, emax)],
        "arccosh": [U(1, 10), 1 + L(-7, 0, False), L(0, emax, False), U(-2, 1)],
        "arctanh": [U(-1, 1), L(-30, 0), 1 - L(-7, -1, False)],
        "erf": [U(-6, 6), L(-30, 1)],
        "erfinv": [U(-1, 1), L(-30, 0), 1 - L(-7 if f32 else -15, -1, False)],
        "sigmoid": [U(-120, 120), L(-30, 3)],
        "gammaln": [U(-20, 20), L(-30, emax, False), U(0.5, 3)],
        "gamma": [U(-30, 30), U(0, 35 if f32 else 172), L(-30, 0)],
        "cbrt": [L(-45 if f32 else -320, emax)],
        "round": [U(-5, 5), U(-1e6, 1e6), L(-30, emax)],
    }
    for a, b in (("cos", "sin"), ("tan", "sin"), ("cosh", "sinh"), ("arccos", "arcsin"),
                 ("log2", "log"), ("log10", "log"), ("rcbrt", "cbrt"), ("sqrt", "log"),
                 ("rsqrt", "log"), ("softrelu", "sigmoid")):
        table[a] = table[b]
    for r in ("rint", "floor", "ceil", "trunc", "fix"):
        table[r] = table["round"] + [np.round(U(-100, 100)) + 0.5, U(8e6, 9e6)]
    with np.errstate(all="ignore"):
        x = np.concatenate(table[func]).astype(dt)
    return np.concatenate([x, _specials(dt)])


def _check(got, ref, x, dtype, rtol, atol, what):
    dt = DT[dtype]
    fi = np.finfo(dt)
    g = got.astype(np.float64)
    ref = ref.astype(np.float64)
    bad = np.isnan(g) != np.isnan(ref)
    both = ~np.isnan(g) & ~np.isnan(ref)
    with np.errstate(all="ignore"):
        big = np.abs(ref) > float(fi.max) * (1 + 2 * rtol)           # must overflow
        bad |= both & big & (g != np.copysign(np.inf, ref))
        fin = both & ~big & np.isfinite(ref)
        tol = rtol * np.abs(ref) + atol + float(fi.smallest_subnormal)
        bad |= fin & ~(np.abs(g - ref) <= tol)
        bad |= both & np.isinf(ref) & (g != ref)
        zero = both & (ref == 0)
        bad |= zero & ((g != 0) | (np.signbit(g) != np.signbit(ref)))
    if bad.any():
        idx = np.flatnonzero(bad)[:8]
        rows = [(x[i].item(), got[i].item(), ref[i].item()) for i in idx]
        pytest.fail(f"{what}: {bad.sum()} mismatches (x, got, ref): {rows}")


# ---------------------------------------------------------------------------
# accuracy and special values
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", list(DT))
@pytest.mark.parametrize("func", UNARY)
def test_unary_accuracy(jit, func, dtype):
    x = _inputs(func, dtype)
    with np.errstate(all="ignore"):
        got = _run(jit, func, dtype, x)
        ref = REF[func](x.astype(np.float64))
    i = 0 if dtype == "float32" else 1
    rtol = RTOL_LOOSE[func][i] if func in RTOL_LOOSE else RTOL[dtype]
    if func in EXACT:
        rtol = 0.0
    atol = ATOL[func][i] if func in ATOL else 0.0
    _check(got, ref, x, dtype, rtol, atol, f"{func}/{dtype}")


def _pow_inputs(dtype, rng):
    dt = DT[dtype]
    n = 4000
    emax = 9 if dtype == "float32" else 75
    x = np.concatenate([10.0 ** rng.uniform(-emax, emax, n), rng.uniform(0, 3, n),
                        -(10.0 ** rng.uniform(-5, 5, n)), rng.uniform(0.9, 1.1, n),
                        -rng.integers(1, 20, n).astype(float)])
    y = np.concatenate([rng.uniform(-30, 30, n), rng.uniform(-100, 100, n),
                        np.round(rng.uniform(-40, 40, n)),
                        rng.uniform(-500, 500, n) if dtype == "float32" else rng.uniform(-5000, 5000, n),
                        np.round(rng.uniform(-20, 20, n))])
    sp = _specials(dt)[:20].astype(np.float64)
    X, Y = np.meshgrid(sp, sp)
    with np.errstate(all="ignore"):
        return (np.concatenate([x, X.ravel()]).astype(dt), np.concatenate([y, Y.ravel()]).astype(dt))


@pytest.mark.parametrize("dtype", list(DT))
def test_pow(jit, dtype):
    x, y = _pow_inputs(dtype, np.random.default_rng(7))
    with np.errstate(all="ignore"):
        got = _run(jit, "pow", dtype, x, y)
        ref = np.power(x.astype(np.float64), y.astype(np.float64))
    # the float64 reference itself is only ~1 ulp accurate
    rtol = RTOL[dtype] if dtype == "float32" else 2e-15
    _check(got, ref, np.stack([x, y], 1), dtype, rtol, 0.0, f"pow/{dtype}")
    # C pow special cases
    cases = [(0.0, 0.0, 1.0), (np.nan, 0.0, 1.0), (1.0, np.nan, 1.0), (-1.0, np.inf, 1.0),
             (-1.0, -np.inf, 1.0), (-0.0, 3.0, -0.0), (-0.0, -3.0, -np.inf), (-0.0, -2.0, np.inf),
             (-0.0, 0.5, 0.0), (-np.inf, 3.0, -np.inf), (-np.inf, -3.0, -0.0), (-np.inf, 0.5, np.inf),
             (-8.0, 1.0 / 3.0, np.nan), (-2.0, 3.0, -8.0), (-2.0, -2.0, 0.25), (0.5, np.inf, 0.0),
             (2.0, -np.inf, 0.0), (0.5, -np.inf, np.inf), (10.0, 400.0, np.inf), (10.0, -400.0, 0.0)]
    cx = np.array([c[0] for c in cases], DT[dtype])
    cy = np.array([c[1] for c in cases], DT[dtype])
    want = np.array([c[2] for c in cases], np.float64)
    if dtype == "float32":
        want[-2:] = [np.inf, 0.0]
    got = _run(jit, "pow", dtype, cx, cy)
    _check(got, want, np.stack([cx, cy], 1), dtype, RTOL[dtype], 0.0, f"pow specials/{dtype}")


@pytest.mark.parametrize("dtype", list(DT))
def test_notable_special_values(jit, dtype):
    dt = DT[dtype]

    def run(f, *v):
        return _run(jit, f, dtype, np.array(v, dt))

    assert run("exp", -np.inf)[0] == 0 and run("exp", 1000)[0] == np.inf
    assert np.isnan(run("exp", np.nan)[0])
    assert run("log", 0)[0] == -np.inf and np.isnan(run("log", -1)[0])
    assert list(run("tanh", 1e4, -1e4, np.inf, -np.inf)) == [1, -1, 1, -1]
    s = run("sigmoid", -100, 100, -np.inf, np.inf)
    assert np.all(np.isfinite(s)) and s[0] < 1e-40 and s[1] == 1 and s[2] == 0 and s[3] == 1
    assert list(run("erf", np.inf, -np.inf)) == [1, -1]
    assert list(run("erfinv", 1, -1)) == [np.inf, -np.inf]
    assert run("softrelu", -1000)[0] == 0 and run("softrelu", 1000)[0] == 1000
    assert np.signbit(run("sin", -0.0)[0]) and np.signbit(run("tan", -0.0)[0])
    r = run("round", 0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997)
    assert list(r) == [1, -1, 2, 3, -3, 0]
    assert list(run("rint", 0.5, 1.5, 2.5, -2.5)) == [0, 2, 2, -2]
    assert np.signbit(run("ceil", -0.5)[0]) and np.signbit(run("trunc", -0.5)[0])
    assert np.signbit(run("floor", -0.0)[0]) and np.signbit(run("round", -0.2)[0])
    assert run("gamma", 5)[0] == 24 and run("gammaln", 1)[0] == 0 and run("gammaln", 2)[0] == 0
    assert np.isnan(run("gamma", -2)[0]) and run("gammaln", -2)[0] == np.inf


# ---------------------------------------------------------------------------
# IR shape: straight-line, allowed intrinsics/flags only, composable text
# ---------------------------------------------------------------------------
def test_api_and_ir_shape():
    assert M.math_function_name("exp", "float32") == "mxc_exp_f32"
    assert M.math_function_name("pow", "float64") == "mxc_pow_f64"
    with pytest.raises(ValueError):
        M.math_function_name("nope", "float32")
    ir = M.math_ir()
    for f in M.MATH_FUNCS:
        for s in ("f32", "f64"):
            assert re.search(rf"define internal \w+ @mxc_{f}_{s}\(", ir)
    assert not re.search(r"^\s+br ", ir, re.MULTILINE)
    assert "alwaysinline" in ir and "memory(none)" in ir
    intrinsics = set(re.findall(r"@llvm\.(\w+)\.", ir))
    assert intrinsics <= {"fma", "fabs", "sqrt", "copysign", "minnum", "maxnum"}, intrinsics
    for flag in ("fast", "nnan", "ninf", "reassoc"):
        assert not re.search(rf"\b(fadd|fsub|fmul|fdiv|call)\s+(\w+\s+)*{flag}\b", ir)
    assert "declare" not in ir
    # a subset only defines what was asked; text composes with a module that
    # declares the same intrinsics itself
    sub = M.math_ir([("exp", "float32"), ("exp", "float32"), ("sin", np.float64)])
    assert len(re.findall(r"^define ", sub, re.MULTILINE)) == 2
    user = ("declare float @llvm.fma.f32(float, float, float)\n"
            "define float @u(float %x) {\n  %r = call float @mxc_exp_f32(float %x)\n"
            "  %s = call float @llvm.fma.f32(float %r, float %r, float %x)\n  ret float %s\n}\n")
    mod = llvm.parse_assembly(user + sub + M.conversion_ir())
    mod.verify()


def test_loop_is_vectorized_on_host():
    ir = M.math_ir([("exp", "float32")]) + _kernel_ir("exp", "float32")
    tm = _host_tm()
    mod = llvm.parse_assembly(ir)
    mod.triple = llvm.get_process_triple()
    _optimize(mod, tm)
    asm = tm.emit_assembly(mod)
    feats = llvm.get_host_cpu_features()
    if not (feats.get("avx2") or feats.get("avx512f")):
        pytest.skip("host has no AVX2")
    assert re.search(r"%[yz]mm", asm), "loop calling exp was not vectorized"
    assert "vfmadd" in asm
    assert not re.search(r"\bcall\w*\s+\*?[A-Za-z_]", asm)


# ---------------------------------------------------------------------------
# freestanding objects for Android targets
# ---------------------------------------------------------------------------
def _undefined_symbols(obj: bytes) -> list[str]:
    """Names of undefined symbols in an ELF relocatable object (32/64-bit, LE/BE)."""
    assert obj[:4] == b"\x7fELF"
    is64 = obj[4] == 2
    E = "<" if obj[5] == 1 else ">"
    if is64:
        shoff = struct.unpack_from(E + "Q", obj, 0x28)[0]
        shentsize, shnum = struct.unpack_from(E + "HH", obj, 0x3A)
    else:
        shoff = struct.unpack_from(E + "I", obj, 0x20)[0]
        shentsize, shnum = struct.unpack_from(E + "HH", obj, 0x2E)
    secs = []
    for i in range(shnum):
        fmt = "IIQQQQIIQQ" if is64 else "IIIIIIIIII"
        _, typ, _, _, off, size, link, _, _, ent = struct.unpack_from(E + fmt, obj, shoff + i * shentsize)
        secs.append((typ, off, size, link, ent))
    undef = []
    for typ, off, size, link, ent in secs:
        if typ != 2:  # SHT_SYMTAB
            continue
        stroff = secs[link][1]
        for k in range(1, size // ent):
            so = off + k * ent
            if is64:
                st_name, _, _, shndx, _, _ = struct.unpack_from(E + "IBBHQQ", obj, so)
            else:
                st_name, _, _, _, _, shndx = struct.unpack_from(E + "IIIBBH", obj, so)
            if shndx == 0 and st_name:
                end = obj.index(b"\0", stroff + st_name)
                undef.append(obj[stroff + st_name:end].decode())
    return undef


CROSS = [("aarch64-linux-android", "generic", ""),
         ("armv7a-linux-androideabi", "generic", "+neon,+vfp4")]


@pytest.fixture(scope="module")
def cross_ir():
    pairs = [(f, d) for d in DT for f in M.MATH_FUNCS]
    conv = """
define void @k_conv(ptr noalias %a, ptr noalias %o) {
  %h = load i16, ptr %a
  %f = call float @mxc_f16_to_f32(i16 %h)
  %g = call i16 @mxc_f32_to_f16(float %f)
  %b = call float @mxc_bf16_to_f32(i16 %g)
  %c = call i16 @mxc_f32_to_bf16(float %b)
  store i16 %c, ptr %o
  ret void
}
"""
    return M.math_ir() + M.conversion_ir() + "".join(_kernel_ir(f, d) for f, d in pairs) + conv


@pytest.mark.parametrize("triple,cpu,features", CROSS)
def test_cross_objects_are_freestanding(cross_ir, triple, cpu, features):
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    tm = llvm.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="pic")
    # positive control: the ELF parser does see an external call
    ctl = llvm.parse_assembly("declare float @extfn(float)\n"
                              "define float @g(float %x) {\n %r = call float @extfn(float %x)\n"
                              " ret float %r\n}\n")
    ctl.triple = triple
    assert "extfn" in _undefined_symbols(tm.emit_object(ctl))
    mod = llvm.parse_assembly(cross_ir)
    mod.triple = triple
    mod.data_layout = str(tm.target_data)
    _optimize(mod, tm)
    obj = tm.emit_object(mod)
    assert _undefined_symbols(obj) == []


# ---------------------------------------------------------------------------
# f16 / bf16 conversions
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conv_jit():
    def k(name, it, ot, fn):
        return f"""
define void @{name}(ptr noalias %a, ptr noalias %o, i64 %n) {{
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %pa = getelementptr inbounds {it}, ptr %a, i64 %i
  %x = load {it}, ptr %pa
  %r = call {ot} @{fn}({it} %x)
  %po = getelementptr inbounds {ot}, ptr %o, i64 %i
  store {ot} %r, ptr %po
  %i1 = add nuw nsw i64 %i, 1
  %d = icmp eq i64 %i1, %n
  br i1 %d, label %exit, label %loop
exit:
  ret void
}}
"""
    ir = (M.conversion_ir() + k("h2f", "i16", "float", "mxc_f16_to_f32")
          + k("f2h", "float", "i16", "mxc_f32_to_f16") + k("b2f", "i16", "float", "mxc_bf16_to_f32")
          + k("f2b", "float", "i16", "mxc_f32_to_bf16"))
    return _Jit(ir)


def _conv(j, name, x, odt):
    out = np.empty(x.size, odt)
    j.fn(name, 2)(x.ctypes.data, out.ctypes.data, x.size)
    return out


def _f32_probe_set():
    rng = np.random.default_rng(3)
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    fin = halves[np.isfinite(halves)]
    with np.errstate(all="ignore"):
        mids = ((fin[:-1].astype(np.float64) + fin[1:]) / 2).astype(np.float32)  # exact ties
        x = np.concatenate([
            (rng.standard_normal(200_000) * 10.0 ** rng.integers(-12, 7, 200_000)).astype(np.float32),
            rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
            halves, mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
            np.array([65504, 65519.996, 65520, 65536, 1e10, -1e10, np.inf, -np.inf, np.nan,
                      2**-24, 2**-25, 3 * 2**-26, 2**-26, 1e-45, -0.0, 0.0], np.float32)])
    return np.ascontiguousarray(x, np.float32)


def test_f16_to_f32_all_patterns(conv_jit):
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = _conv(conv_jit, "h2f", h, np.float32)
    ref = h.view(np.float16).astype(np.float32)
    same = (got.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(got) & np.isnan(ref))
    assert same.all(), h[~same][:10]


def test_f32_to_f16_matches_numpy(conv_jit):
    x = _f32_probe_set()
    got = _conv(conv_jit, "f2h", x, np.uint16)
    with np.errstate(all="ignore"):
        ref = x.astype(np.float16)
    same = (got == ref.view(np.uint16)) | (np.isnan(got.view(np.float16)) & np.isnan(ref))
    assert same.all(), list(zip(x[~same][:10], got[~same][:10], ref.view(np.uint16)[~same][:10]))


def test_bf16_conversions(conv_jit):
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = _conv(conv_jit, "b2f", h, np.float32)
    assert (got.view(np.uint32) == (h.astype(np.uint32) << 16)).all()
    x = _f32_probe_set()
    got = _conv(conv_jit, "f2b", x, np.uint16)
    u = x.view(np.uint32).astype(np.uint64)
    ref = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)   # round to nearest even
    nan = np.isnan(x)
    assert (got[~nan] == ref[~nan]).all()
    back = (got[nan].astype(np.uint32) << 16).view(np.float32)
    assert np.isnan(back).all()
