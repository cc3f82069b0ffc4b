"""mxc's own transcendental math functions, emitted as LLVM IR text.

Generated code must never call libm: artifacts are freestanding, are cross-built
for aarch64 / armv7a Android, and the same IR is meant to be usable for NVPTX
where ``llvm.exp`` and friends abort LLVM.  So every function here is written
out as straight-line LLVM IR (``select`` instead of ``br``, so the loop
vectorizer can widen loops that call them after inlining) using only plain
instructions plus the intrinsics ``llvm.fma``, ``llvm.fabs``, ``llvm.sqrt`` and
``llvm.copysign`` (no ``llvm.floor``/``llvm.trunc``/... : on armv7 those become
libcalls).  Float ops carry no fast-math flags, so inf/nan/-0 semantics hold.

Public API::

    MATH_FUNCS                      # supported function names
    math_function_name(func, dtype) # ("exp", "float32") -> "mxc_exp_f32"
    math_ir(funcs=None)             # IR text defining the requested functions
    conversion_ir()                 # f16/bf16 <-> f32 conversions (integer ops only)

Each function is ``define internal <ty> @mxc_<func>_<f32|f64>(<ty> %x[, <ty> %y])``
with ``alwaysinline nounwind memory(none)``.  The text declares no intrinsics
(LLVM 22's parser declares referenced intrinsics implicitly), so it can be
concatenated once into any module, whatever that module declares itself.
The float64 sin/cos/tan reference one internal constant table
(``@mxc_math_2overpi_bits``, the bits of 2/pi for huge-argument reduction); it
is emitted only when one of them is requested.  (It also compiles for NVPTX.)

Algorithms: Cody-Waite range reduction with fma, polynomial (minimax) kernels
whose coefficients were fitted for this module with mpmath (weighted Lawson /
Remez-style fits), Payne-Hanek reduction in integer arithmetic for huge
sin/cos/tan arguments, double-double log/exp for f64 pow and gamma.  float32
versions of pow, gamma, gammaln, erfinv and cbrt are evaluated in double.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Iterable

__all__ = ["MATH_FUNCS", "conversion_ir", "math_function_name", "math_ir"]

MATH_FUNCS: tuple[str, ...] = (
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
    "sin", "cos", "tan", "tanh", "sinh", "cosh",
    "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh",
    "erf", "erfinv", "sigmoid", "softrelu", "pow", "gammaln", "gamma",
    "cbrt", "rcbrt", "sqrt", "rsqrt",
    "round", "rint", "floor", "ceil", "trunc", "fix",
)
_BINARY = frozenset({"pow"})

_DTYPES = {
    "float32": "f32", "f32": "f32", "float": "f32", "single": "f32",
    "float64": "f64", "f64": "f64", "double": "f64",
}


def _sfx(dtype) -> str:
    key = str(dtype).lower()
    if key.startswith("<class"):  # numpy scalar types, e.g. np.float32
        key = getattr(dtype, "__name__", key)
    try:
        return _DTYPES[key]
    except KeyError:
        raise ValueError(f"mathlib: unsupported dtype {dtype!r} (float32/float64 only)") from None


def math_function_name(func: str, dtype) -> str:
    """Symbol name of the IR function computing ``func`` for ``dtype``."""
    if func not in MATH_FUNCS:
        raise ValueError(f"mathlib: unknown math function {func!r}")
    return f"mxc_{func}_{_sfx(dtype)}"


# ----------------------------------------------------------------------------
# Polynomial coefficients (lowest degree first), fitted with mpmath for mxc.
# ----------------------------------------------------------------------------
_EXP_P_F32 = [0.4999999403953552, 0.16666515171527863, 0.04166845604777336, 0.008369416929781437, 0.001381331356242299]
_EXP_P_F64 = [0.5, 0.16666666666666685, 0.04166666666666603, 0.008333333333315701, 0.0013888888889134218, 0.00019841269899729776, 2.4801586903809642e-05, 2.7557231479595464e-06, 2.7557592395738473e-07, 2.5113227117413756e-08, 2.0825632662349834e-09]
_EXP2_Q_F32 = [0.6931471824645996, 0.24022647738456726, 0.055503323674201965, 0.00961843691766262, 0.0013398875016719103, 0.00015353423077613115]
_EXP2_Q_F64 = [0.6931471805599453, 0.24022650695910072, 0.05550410866482169, 0.00961812910762833, 0.0013333558146392684, 0.00015403530393640757, 1.5252733854324845e-05, 1.3215486594898747e-06, 1.0178051939484775e-07, 7.054974479150723e-09, 4.4565708533914284e-10, 2.5625423492817553e-11]
_LOG_P_F32 = [0.3333331346511841, -0.25000008940696716, 0.2000211924314499, -0.16667994856834412, 0.14219550788402557, -0.12405616790056229, 0.11888197809457779, -0.1167549341917038, 0.0674637109041214]
_LOG_R2_F64 = [0.4000000000000227, 0.2857142857009166, 0.2222222252139355, 0.18181784233730602, 0.15386763676387466, 0.13256665649952293, 0.13197778116411713]
_SIN_F32 = [-0.16666653752326965, 0.008332150056958199, -0.00019513796723913401]
_COS_F32 = [0.04166664555668831, -0.0013887302484363317, 2.4431614292552695e-05]
_SIN_F64 = [-0.16666666666666666, 0.008333333333333323, -0.00019841269841254494, 2.755731921390456e-06, -2.505210483952037e-08, 1.6058357699065042e-10, -7.578265792123104e-13]
_COS_F64 = [0.041666666666666664, -0.0013888888888888872, 2.4801587301570188e-05, -2.7557319214845413e-07, 2.0876754252610187e-09, -1.1470280955450105e-11, 4.737576154634343e-14]
_ASIN_F32 = [0.16666659712791443, 0.07500503957271576, 0.04451695457100868, 0.031807709485292435, 0.014438651502132416, 0.03751637414097786]
_ASIN_F64 = [0.1666666666666676, 0.07499999999970798, 0.0446428571746124, 0.030381942707786876, 0.02237221498694731, 0.017351612034618078, 0.013980820219045108, 0.011398915370339852, 0.01078023338266217, 0.003706486602432386, 0.021707249869007544, -0.020998775484031295, 0.03262844060383278]
_ATAN_F32 = [-0.33333316445350647, 0.199984610080719, -0.14243309199810028, 0.1059207022190094, -0.06073595583438873]
_ATAN_F64 = [-0.33333333333333326, 0.19999999999997603, -0.14285714285379963, 0.11111111087695068, -0.09090908127714004, 0.07692282390623738, -0.0666622148323296, 0.05876971562731961, -0.0521808917592466, 0.04502297600945997, -0.033445941834214656, 0.015166771203967604]
_ERF_SMALL_F32 = [1.1283791065216064, -0.3761253356933594, 0.11282229423522949, -0.026781927794218063, 0.005016187205910683, -0.0006111089023761451]
_ERF_SMALL_F64 = [1.1283791670955126, -0.3761263890318375, 0.11283791670954778, -0.026866170644959813, 0.005223977621144161, -0.0008548326404148752, 0.00012055278596788823, -1.4922688488151216e-05, 1.6364231537249896e-06, -1.4556243415953135e-07]
_ERFCX_F32 = [0.9944919347763062, -1.0912342071533203, 0.887644350528717, -0.5494037866592407, 0.25348514318466187, -0.08353069424629211, 0.0183994323015213, -0.00240969005972147, 0.00014109823678154498]
_STIRLING_F64 = [0.08333333333333333, -0.0027777777777774682, 0.0007936507933695146, -0.0005952379802406832, 0.0008417257896219177, -0.001914402805798065, 0.006184159270066665, -0.020447309530077847]
_LGAMMA2_F64 = [0.42278433509846713, 0.3224670334241132, -0.06735230105319809, 0.020580808427784626, -0.007385551028674524, 0.002890510330734678, -0.0011927539116742608, 0.0005096695250154434, -0.00022315475925372552, 9.94575068395189e-05, -4.492622387997425e-05, 2.050729045318939e-05, -9.439616586651459e-06, 4.374232975723141e-06, -2.0383991700713185e-06, 9.583859913535438e-07, -4.5254633088638476e-07, 2.020077638189598e-07, -9.232585682909354e-08, 6.466726090700372e-08, -3.346486618821962e-08]
_ERFINV_C = [0.8862269254515361, 0.23201366664093687, 0.011549340526804184, -0.0023350933388908506, -0.00012806642015311106, 4.664827327107054e-05, 1.985127075226329e-06, -9.942869010992705e-07, -3.974900114284049e-08, 1.9249151981798302e-08, 3.6368081936382596e-09, -1.6382545822384638e-09, 2.317563107920169e-10, -1.5786304299096645e-11, 4.4151229108816406e-13]
_ERFINV_T = [-7.300970926801325, 27.96987901763436, -42.29302488920607, 37.89159572704985, -21.935154216316004, 8.662839172093763, -2.367686967961267, 0.4347944374752599, -0.046541783532753345, 0.0005935036577043544, 0.0006908342629295247, -0.00012009721439026463, 1.0336232793747206e-05, -4.791980469744535e-07, 9.572365948912795e-09]
_ERF_Q_F32 = [-0.37612634897232056, 0.11283726990222931, -0.026861010119318962, 0.005204887129366398, -0.0008185756742022932, 8.551406062906608e-05]
_TANH_P_F32 = [-0.3333333134651184, 0.1333320587873459, -0.053946733474731445, 0.02170056290924549, -0.008177082985639572, 0.0021426957100629807]
_ERFC_P_F64 = [1.0000000000034828, 1.9342797616638063, 1.8589849012364639, 1.1229101407711017, 0.4607249590196904, 0.1309036078762074, 0.02517714493521829, 0.0030156098889015485, 0.00017465665521107287]
_ERFC_Q_F64 = [1.0, 3.0626589288201704, 4.314825431937182, 3.6812631196317676, 2.1036538180161415, 0.8387707217454664, 0.2346931805126463, 0.04478010981729892, 0.005345029459791272, 0.0003095708595963588]


# ----------------------------------------------------------------------------
# A tiny SSA builder
# ----------------------------------------------------------------------------
def _f32round(v: float) -> float:
    if math.isnan(v) or math.isinf(v):
        return v
    if abs(v) >= 3.4028235677973366e38:  # rounds to inf in float32
        return math.copysign(math.inf, v)
    return struct.unpack("<f", struct.pack("<f", v))[0]


def _fconst(v: float, ty: str) -> str:
    if ty == "float":
        v = _f32round(v)
    if math.isnan(v):
        return "0x7FF8000000000000"
    return f"0x{struct.unpack('<Q', struct.pack('<d', v))[0]:016X}"


class _V:
    __slots__ = ("n", "t")

    def __init__(self, n: str, t: str):
        self.n = n
        self.t = t

    def __repr__(self):
        return f"{self.t} {self.n}"


class _Fmt:
    def __init__(self, ty: str):
        self.ty = ty
        if ty == "float":
            self.ity, self.p, self.bias, self.nbits, self.sfx = "i32", 24, 127, 32, "f32"
        else:
            self.ity, self.p, self.bias, self.nbits, self.sfx = "i64", 53, 1023, 64, "f64"


_F32 = _Fmt("float")
_F64 = _Fmt("double")
_FMT = {"float": _F32, "double": _F64}
_INT = {"i1", "i8", "i16", "i32", "i64"}


class _B:
    """Emits straight-line SSA code. Values are _V; python numbers are coerced."""

    def __init__(self):
        self.lines: list[str] = []
        self.k = 0
        self.uses_table = False

    # -- plumbing -----------------------------------------------------------
    def _emit(self, t: str, text: str) -> _V:
        self.k += 1
        name = f"%v{self.k}"
        self.lines.append(f"  {name} = {text}")
        return _V(name, t)

    @staticmethod
    def c(v, t: str) -> _V:
        if t in _INT:
            if t == "i1":
                return _V("true" if v else "false", "i1")
            return _V(str(int(v)), t)
        return _V(_fconst(float(v), t), t)

    def _co(self, a, b):
        if isinstance(a, _V) and not isinstance(b, _V):
            b = self.c(b, a.t)
        elif isinstance(b, _V) and not isinstance(a, _V):
            a = self.c(a, b.t)
        assert a.t == b.t, (a, b)
        return a, b

    def _bin(self, op, a, b):
        a, b = self._co(a, b)
        return self._emit(a.t, f"{op} {a.t} {a.n}, {b.n}")

    # -- float arithmetic -----------------------------------------------------
    def add(self, a, b): return self._bin("fadd", a, b)
    def sub(self, a, b): return self._bin("fsub", a, b)
    def mul(self, a, b): return self._bin("fmul", a, b)
    def div(self, a, b): return self._bin("fdiv", a, b)

    def neg(self, a):
        return self._emit(a.t, f"fneg {a.t} {a.n}")

    def _call(self, name, t, *args):
        args = [a if isinstance(a, _V) else self.c(a, t) for a in args]
        sfx = _FMT[t].sfx
        al = ", ".join(f"{t} {a.n}" for a in args)
        return self._emit(t, f"call {t} @llvm.{name}.{sfx}({al})")

    def fma(self, a, b, c):
        t = next(v.t for v in (a, b, c) if isinstance(v, _V))
        return self._call("fma", t, a, b, c)

    def fabs(self, a): return self._call("fabs", a.t, a)
    def sqrt(self, a): return self._call("sqrt", a.t, a)

    def copysign(self, a, b):
        a, b = self._co(a, b)
        return self._call("copysign", a.t, a, b)

    def fcmp(self, pred, a, b):
        a, b = self._co(a, b)
        return self._emit("i1", f"fcmp {pred} {a.t} {a.n}, {b.n}")

    def sel(self, c, a, b):
        a, b = self._co(a, b)
        return self._emit(a.t, f"select i1 {c.n}, {a.t} {a.n}, {b.t} {b.n}")

    # -- integer ---------------------------------------------------------------
    def iadd(self, a, b): return self._bin("add", a, b)
    def isub(self, a, b): return self._bin("sub", a, b)
    def imul(self, a, b): return self._bin("mul", a, b)
    def iand(self, a, b): return self._bin("and", a, b)
    def ior(self, a, b): return self._bin("or", a, b)
    def ixor(self, a, b): return self._bin("xor", a, b)
    def shl(self, a, b): return self._bin("shl", a, b)
    def lshr(self, a, b): return self._bin("lshr", a, b)
    def ashr(self, a, b): return self._bin("ashr", a, b)
    def udiv(self, a, b): return self._bin("udiv", a, b)

    def icmp(self, pred, a, b):
        a, b = self._co(a, b)
        return self._emit("i1", f"icmp {pred} {a.t} {a.n}, {b.n}")

    def cast(self, op, a, t):
        return self._emit(t, f"{op} {a.t} {a.n} to {t}")

    def bits(self, a): return self.cast("bitcast", a, _FMT[a.t].ity)
    def frombits(self, a, t): return self.cast("bitcast", a, t)

    def load_table(self, idx64):
        """Loads @mxc_math_2overpi_bits[idx] (i32); idx is i64."""
        self.uses_table = True
        p = self._emit("ptr", f"getelementptr inbounds [{len(_TWO_OVER_PI_WORDS)} x i32], "
                              f"ptr @mxc_math_2overpi_bits, i64 0, i64 {idx64.n}")
        return self._emit("i32", f"load i32, ptr {p.n}, align 4")

    # -- helpers ----------------------------------------------------------------
    def poly(self, x, coeffs):
        """Horner with fma; coeffs lowest degree first."""
        acc = self.c(coeffs[-1], x.t)
        for cf in reversed(coeffs[:-1]):
            acc = self.fma(acc, x, cf)
        return acc

    def and1(self, *cs):
        r = cs[0]
        for c in cs[1:]:
            r = self._bin("and", r, c)
        return r

    def or1(self, *cs):
        r = cs[0]
        for c in cs[1:]:
            r = self._bin("or", r, c)
        return r

    def not1(self, c):
        return self._bin("xor", c, True)


def _split(v: float, ty: str, nbits: int | None = None) -> tuple[float, float]:
    """(hi, lo) with hi = v rounded to ty (or to nbits bits), lo = remainder rounded."""
    if nbits is None:
        hi = _f32round(v) if ty == "float" else float(v)
    else:
        m, e = math.frexp(v)
        hi = math.ldexp(math.floor(m * 2.0 ** nbits + 0.5), e - nbits)
    return hi, v - hi


# High precision constants as python floats pairs computed from exact strings.
from fractions import Fraction as _Fr


def _dd(s: str) -> tuple[float, float]:
    """double-double of a decimal string."""
    fr = _Fr(s)
    hi = float(fr)
    lo = float(fr - _Fr(hi))
    return hi, lo


def _tri(s: str, ty: str) -> tuple[float, float, float]:
    """three-way split of a constant into the precision of ty."""
    fr = _Fr(s)
    out = []
    for _ in range(3):
        h = _f32round(float(fr)) if ty == "float" else float(fr)
        out.append(h)
        fr -= _Fr(h)
    return tuple(out)


_PI_S = "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899862803482534211706798214808651328230664709384460955058223172535940812848111745028410270193852110555964462294895493038196"
_LN2_S = "0.693147180559945309417232121458176568075500134360255254120680009493393621969694715605863326996418687542001481020570685733685520235758130557032670751635"
_LOG2E_S = "1.442695040888963407359924681001892137426645954152985934135449406931109219181185079885526622893506344496997518309652544255593101839"
_LOG10E_S = "0.434294481903251827651128918916605082294397005803666566114453783165864649208870774729224949338431748318706106744766303733641679287"
_LOG10_2_S = "0.301029995663981195213738894724493026768189881462108541310430102140651263164"
_LN_SQRT2PI_S = "0.918938533204672741780329736405617639861397473637783412817151540482765695927260397694743298635954197622005646625"

_PI = _dd(_PI_S)
_PIO2 = (_PI[0] / 2, _PI[1] / 2)
_PIO4 = (_PI[0] / 4, _PI[1] / 4)
_LN2 = _dd(_LN2_S)
_LOG2E = _dd(_LOG2E_S)
_LOG10E = _dd(_LOG10E_S)
_LOG10_2 = _dd(_LOG10_2_S)
_LN_SQRT2PI = _dd(_LN_SQRT2PI_S)
_TWO_THIRDS = _dd("0.666666666666666666666666666666666666666666666666666666666667")
_LNPI = _dd("1.14472988584940017414342735135305871164729481291531157151362307147213776988482607978362327027548970770200981222869798915904")
_TWO_OVER_SQRTPI = 1.1283791670955126


def _two_over_pi_words(nwords: int) -> list[int]:
    """32-bit words of the binary expansion of 2/pi (word 0 = bits 1..32)."""
    # pi with plenty of bits via Machin's formula in integers
    prec = nwords * 32 + 64
    one = 1 << (prec + 16)

    def arctan_inv(n):
        total, term, k, x2 = 0, one // n, 1, n * n
        while term:
            total += term // k if (k // 2) % 2 == 0 else -(term // k)
            term //= x2
            k += 2
        return total

    pi = 4 * (4 * arctan_inv(5) - arctan_inv(239))  # pi * 2^(prec+16)
    # floor(2/pi * 2^(32*nwords))
    v = (2 * one * (1 << (32 * nwords))) // pi
    return [(v >> (32 * (nwords - 1 - i))) & 0xFFFFFFFF for i in range(nwords)]


# Two leading zero words so that window starts before bit 1 can be read.
_TWO_OVER_PI_WORDS = [0, 0] + _two_over_pi_words(44)


def _fbits(v: float, ty: str) -> int:
    """Signed integer bit pattern of v in float type ty."""
    if ty == "float":
        return struct.unpack("<i", struct.pack("<f", _f32round(v)))[0]
    return struct.unpack("<q", struct.pack("<d", v))[0]


_INF = math.inf
_NAN = math.nan


class _G(_B):
    """Function-body generator. Helpers take the float type from their operands,
    so float32 functions can compute internally in double where that is simpler."""

    # -- small utilities ----------------------------------------------------------
    def f(self, v, t):
        return self.c(v, t)

    def clamp(self, x, lo=None, hi=None):
        """clamp keeping nan (select on ordered compares)."""
        if hi is not None:
            x = self.sel(self.fcmp("ogt", x, hi), self.c(hi, x.t), x)
        if lo is not None:
            x = self.sel(self.fcmp("olt", x, lo), self.c(lo, x.t), x)
        return x

    def itof(self, k, t):
        """signed int -> float without i64 conversions (libcalls on armv7)."""
        if k.t == "i64":
            k = self.cast("trunc", k, "i32")
        return self.cast("sitofp", k, t)

    def pow2i(self, n, t):
        """2^n for an integer n in the normal exponent range."""
        F = _FMT[t]
        return self.frombits(self.shl(self.iadd(n, F.bias), F.p - 1), t)

    def ldexp2(self, v, n):
        """v * 2^n via two exact power-of-two factors (handles subnormal/overflow)."""
        h = self.ashr(n, 1)
        v = self.mul(v, self.pow2i(h, v.t))
        return self.mul(v, self.pow2i(self.isub(n, h), v.t))

    def tiny_is_x(self, x, res):
        """f(x) == x for |x| < 2^-p (also keeps -0 and subnormals exact)."""
        F = _FMT[x.t]
        return self.sel(self.fcmp("olt", self.fabs(x), 2.0 ** -F.p), x, res)

    def flipsign(self, v, cond):
        return self.sel(cond, self.neg(v), v)

    # -- rounding -------------------------------------------------------------------
    def rint(self, x):
        F = _FMT[x.t]
        big = 2.0 ** (F.p - 1)
        ax = self.fabs(x)
        r = self.sub(self.add(ax, big), big)
        r = self.copysign(r, x)
        return self.sel(self.fcmp("olt", ax, big), r, x)

    def floor(self, x):
        r = self.rint(x)
        return self.sub(r, self.sel(self.fcmp("ogt", r, x), self.c(1.0, x.t), 0.0))

    def ceil(self, x):
        r = self.rint(x)
        r = self.add(r, self.sel(self.fcmp("olt", r, x), self.c(1.0, x.t), 0.0))
        return self.copysign(r, x)

    def trunc(self, x):
        return self.copysign(self.floor(self.fabs(x)), x)

    def round(self, x):
        ax = self.fabs(x)
        t = self.floor(ax)
        fr = self.sub(ax, t)
        r = self.add(t, self.sel(self.fcmp("oge", fr, 0.5), self.c(1.0, x.t), 0.0))
        return self.copysign(r, x)

    # -- exp family ---------------------------------------------------------------------
    def _P(self, t, name):
        return globals()[f"_{name}_{_FMT[t].sfx.upper()}"]

    def exp_reduce(self, x):
        """x = n*ln2 + r, |r| <= ln2/2 (|x| moderate). Returns (r, n_float, n_int)."""
        t = x.t
        F = _FMT[t]
        magic = 1.5 * 2.0 ** (F.p - 1)
        tt = self.fma(x, _LOG2E[0], magic)
        nf = self.sub(tt, magic)
        ni = self.isub(self.bits(tt), _fbits(magic, t))
        hi, lo = _split(_LN2[0], t)
        lo += _LN2[1]
        r = self.fma(nf, -hi, x)
        r = self.fma(nf, -lo, r)
        return r, nf, ni

    def expm1_poly(self, r):
        q = self.poly(r, self._P(r.t, "EXP_P"))
        return self.fma(self.mul(r, r), q, r)

    def exp(self, x):
        lo, hi = (-104.0, 89.0) if x.t == "float" else (-746.0, 710.0)
        xc = self.clamp(x, lo, hi)
        r, _, ni = self.exp_reduce(xc)
        u = self.expm1_poly(r)
        return self.ldexp2(self.add(u, 1.0), ni)

    def expm1_scaled(self, u, ni, k):
        """(2^n (1+u) - 1) * 2^-k."""
        t = self.pow2i(self.isub(ni, k + 1), u.t)
        v = self.fma(t, u, self.sub(t, 2.0 ** -(k + 1)))
        return self.mul(v, 2.0)

    def expm1_core(self, x, k=0):
        """expm1(x)*2^-k for x already clamped to a sane range."""
        r, _, ni = self.exp_reduce(x)
        return self.expm1_scaled(self.expm1_poly(r), ni, k)

    def f_exp(self, x):
        return self.exp(x)

    def f_exp2(self, x):
        t = x.t
        F = _FMT[t]
        lo, hi = (-151.0, 129.0) if t == "float" else (-1076.0, 1025.0)
        xc = self.clamp(x, lo, hi)
        magic = 1.5 * 2.0 ** (F.p - 1)
        tt = self.add(xc, magic)
        nf = self.sub(tt, magic)
        ni = self.isub(self.bits(tt), _fbits(magic, t))
        r = self.sub(xc, nf)
        p = self.fma(r, self.poly(r, self._P(t, "EXP2_Q")), 1.0)
        return self.ldexp2(p, ni)

    def f_expm1(self, x):
        lo, hi = (-18.0, 89.0) if x.t == "float" else (-38.0, 710.0)
        res = self.expm1_core(self.clamp(x, lo, hi))
        return self.tiny_is_x(x, res)

    def f_sinh(self, x):
        ax = self.fabs(x)
        hi = 89.6 if x.t == "float" else 710.6
        h = self.expm1_core(self.clamp(ax, None, hi), 1)          # expm1(|x|)/2
        s = self.add(h, self.div(h, self.fma(h, 2.0, 1.0)))
        s = self.sel(self.fcmp("oeq", h, _INF), h, s)
        return self.tiny_is_x(x, self.copysign(s, x))

    def f_cosh(self, x):
        ax = self.fabs(x)
        hi = 89.6 if x.t == "float" else 710.6
        r, _, ni = self.exp_reduce(self.clamp(ax, None, hi))
        h = self.ldexp2(self.add(self.expm1_poly(r), 1.0), self.isub(ni, 1))  # e^|x|/2
        return self.add(h, self.div(self.c(0.25, x.t), h))

    def f_tanh(self, x):
        ax = self.fabs(x)
        hi = 10.0 if x.t == "float" else 20.0
        u = self.expm1_core(self.mul(self.clamp(ax, None, hi), 2.0))
        t = self.div(u, self.add(u, 2.0))
        if x.t == "float":
            z = self.mul(ax, ax)
            ps = self.fma(self.mul(ax, z), self.poly(z, _TANH_P_F32), ax)
            t = self.sel(self.fcmp("olt", ax, 0.625), ps, t)
        return self.tiny_is_x(x, self.copysign(t, x))

    def f_sigmoid(self, x):
        e = self.exp(self.neg(self.fabs(x)))
        num = self.sel(self.fcmp("oge", x, 0.0), self.c(1.0, x.t), e)
        return self.div(num, self.add(e, 1.0))

    def f_softrelu(self, x):
        e = self.exp(self.neg(self.fabs(x)))
        l = self.log1p(e)
        m = self.sel(self.fcmp("ogt", x, 0.0), x, self.c(0.0, x.t))
        return self.add(m, l)

    # -- log family -----------------------------------------------------------------------
    def log_decomp(self, x):
        """x>0 finite -> (f, kf) with x = 2^k (1+f), 1+f in [sqrt(.5), sqrt(2))."""
        t = x.t
        F = _FMT[t]
        I = F.ity
        S = 25 if t == "float" else 54
        ix = self.bits(x)
        minnorm = 1 << (F.p - 1)
        sub = self.icmp("ult", ix, minnorm)
        ixs = self.bits(self.mul(x, 2.0 ** S))
        ix = self.sel(sub, ixs, ix)
        kadj = self.sel(sub, self.c(-S, I), 0)
        off = _fbits(math.sqrt(0.5), t)
        tmp = self.isub(ix, off)
        k = self.iadd(self.ashr(tmp, F.p - 1), kadj)
        mask = -(1 << (F.p - 1))
        iz = self.isub(ix, self.iand(tmp, mask))
        m = self.frombits(iz, t)
        f = self.sub(m, 1.0)
        return f, self.itof(k, t)

    def log1p_kernel(self, f):
        """log1p(f) for f in [sqrt(.5)-1, sqrt(2)-1] as (hi, lo), hi+lo accurate."""
        t = f.t
        if t == "float":
            p = self.poly(f, _LOG_P_F32)
            hf = self.mul(f, f)
            lo = self.mul(hf, self.fma(f, p, -0.5))
            return f, lo
        s = self.div(f, self.add(f, 2.0))
        z = self.mul(s, s)
        R = self.mul(z, self.fma(z, self.poly(z, _LOG_R2_F64), _TWO_THIRDS[0]))
        hfsq = self.mul(self.mul(f, f), 0.5)
        hi = self.sub(f, hfsq)
        lo = self.sub(self.sub(f, hi), hfsq)
        lo = self.fma(s, self.add(hfsq, R), lo)
        return hi, lo

    def log_combine(self, hi, lo, kf, which):
        t = hi.t
        if which == "log":
            l2h, l2l = _split(_LN2[0], t)
            l2l += _LN2[1]
            s = self.add(hi, self.fma(kf, l2l, lo))
            return self.fma(kf, l2h, s)
        C = _LOG2E if which == "log2" else _LOG10E
        ch, cl = _split(C[0], t)
        cl += C[1]
        y = self.fma(hi, ch, self.fma(hi, cl, self.mul(lo, ch)))
        if which == "log2":
            return self.add(kf, y)
        kh, kl = _split(_LOG10_2[0], t)
        kl += _LOG10_2[1]
        return self.fma(kf, kh, self.fma(kf, kl, y))

    def log_specials(self, x, res):
        t = x.t
        res = self.sel(self.fcmp("oeq", x, 0.0), self.c(-_INF, t), res)
        res = self.sel(self.fcmp("olt", x, 0.0), self.c(_NAN, t), res)
        return self.sel(self.fcmp("uge", x, _INF), x, res)

    def log_any(self, x, which):
        f, kf = self.log_decomp(x)
        hi, lo = self.log1p_kernel(f)
        return self.log_specials(x, self.log_combine(hi, lo, kf, which))

    def log(self, x):
        return self.log_any(x, "log")

    def f_log(self, x):
        return self.log_any(x, "log")

    def f_log2(self, x):
        return self.log_any(x, "log2")

    def f_log10(self, x):
        return self.log_any(x, "log10")

    def log1p(self, x):
        t = x.t
        u = self.add(x, 1.0)
        c = self.sub(x, self.sub(u, 1.0))          # exact rounding error of 1+x
        f, kf = self.log_decomp(u)
        hi, lo = self.log1p_kernel(f)
        lo = self.add(lo, self.div(c, u))
        res = self.log_combine(hi, lo, kf, "log")
        res = self.sel(self.fcmp("oeq", x, -1.0), self.c(-_INF, t), res)
        res = self.sel(self.fcmp("olt", x, -1.0), self.c(_NAN, t), res)
        res = self.sel(self.fcmp("uge", x, _INF), x, res)
        return self.tiny_is_x(x, res)

    def f_log1p(self, x):
        return self.log1p(x)

    # -- trigonometric --------------------------------------------------------------------
    def payne_hanek(self, ax):
        """|x| huge (>= 2^17 f32 / 2^30 f64, finite) -> (r as double, q int of x's int
        type) with |x|*2/pi = q + r/(pi/2) mod 4.  Fixed-point integer arithmetic on a
        window of the bits of 2/pi chosen by the exponent (selects for f32, table
        loads for f64)."""
        t = ax.t
        ix = self.bits(ax)
        if t == "float":
            be = self.lshr(ix, 23)
            be = self.sel(self.icmp("slt", be, 140), self.c(140, "i32"), be)
            m = self.cast("zext", self.ior(self.iand(ix, 0x7FFFFF), 0x800000), "i64")
            pos = self.cast("zext", self.isub(be, 88), "i64")
            nw = 3
        else:
            be = self.lshr(ix, 52)
            be = self.sel(self.icmp("slt", be, 1045), self.c(1045, "i64"), be)
            m = self.ior(self.iand(ix, (1 << 52) - 1), 1 << 52)
            pos = self.isub(be, 1013)
            nw = 6
        k = self.lshr(pos, 5)
        s = self.iand(pos, 31)
        if t == "float":
            # k is in [1, 5]: pick the words with selects (no gathers)
            ks = [self.icmp("eq", k, kk) for kk in range(2, 6)]
            words = []
            for j in range(nw + 1):
                wv = self.c(_TWO_OVER_PI_WORDS[1 + j], "i64")
                for kk, cond in zip(range(2, 6), ks):
                    wv = self.sel(cond, self.c(_TWO_OVER_PI_WORDS[kk + j], "i64"), wv)
                words.append(wv)
        else:
            words = [self.cast("zext", self.load_table(self.iadd(k, j)), "i64") for j in range(nw + 1)]
        w = []
        for j in range(nw):
            a = self.ior(self.shl(words[j], 32), words[j + 1])
            w.append(self.lshr(self.shl(a, s), 32))            # 32-bit window word
        M32 = 0xFFFFFFFF
        if t == "float":
            hi64 = self.iadd(self.iadd(self.shl(self.imul(m, w[0]), 32), self.imul(m, w[1])),
                             self.lshr(self.imul(m, w[2]), 32))
            extra = []
        else:
            mh = self.lshr(m, 32)
            ml = self.iand(m, M32)
            cols = [[] for _ in range(7)]
            for j in range(6):
                c = 5 - j
                for part, cc in ((ml, c), (mh, c + 1)):
                    if cc > 5:
                        continue
                    p = self.imul(part, w[j])
                    cols[cc].append(self.iand(p, M32))
                    cols[cc + 1].append(self.lshr(p, 32))
            S = []
            carry = None
            for c in range(6):
                terms = cols[c] + ([carry] if carry is not None else [])
                acc = terms[0]
                for tm in terms[1:]:
                    acc = self.iadd(acc, tm)
                carry = self.lshr(acc, 32)
                S.append(self.iand(acc, M32))
            hi64 = self.ior(self.shl(S[5], 32), S[4])
            extra = [(S[3], 2.0 ** -94), (S[2], 2.0 ** -126)]
        q = self.lshr(self.iadd(hi64, 1 << 61), 62)
        fr = self.isub(hi64, self.shl(q, 62))
        h32 = self.cast("trunc", self.ashr(fr, 32), "i32")
        l32 = self.cast("trunc", fr, "i32")
        a1 = self.mul(self.cast("sitofp", h32, "double"), 2.0 ** -30)
        a2 = self.mul(self.cast("uitofp", l32, "double"), 2.0 ** -62)
        d = self.add(a1, a2)
        if extra:
            e3 = self.mul(self.cast("uitofp", self.cast("trunc", extra[0][0], "i32"), "double"), extra[0][1])
            e4 = self.mul(self.cast("uitofp", self.cast("trunc", extra[1][0], "i32"), "double"), extra[1][1])
            d = self.add(d, self.add(e3, e4))
        r = self.mul(d, _PIO2[0])
        if t == "float":
            q = self.cast("trunc", q, "i32")
        return r, q

    def trig_reduce(self, x, wide=False):
        """x -> (r, q): x = q*pi/2 + r, |r| <~ pi/4, q an int (only q mod 4 matters).
        wide=True (float32 only): r is returned as a double."""
        t = x.t
        ax = self.fabs(x)
        xw = self.cast("fpext", x, "double") if (wide and t == "float") else x
        tw = xw.t
        F = _FMT[tw]
        magic = 1.5 * 2.0 ** (F.p - 1)
        tt = self.fma(xw, 2.0 / math.pi, magic)
        jf = self.sub(tt, magic)
        ji = self.isub(self.bits(tt), _fbits(magic, tw))
        if tw != t:
            ji = self.cast("trunc", ji, "i32")
        p1, p2, p3 = _tri(_PI_S, tw)
        r = self.fma(jf, -p1 / 2, xw)
        r = self.fma(jf, -p2 / 2, r)
        r = self.fma(jf, -p3 / 2, r)
        thr = 2.0 ** 17 if t == "float" else 2.0 ** 30
        small = self.fcmp("olt", ax, thr)
        rb, qb = self.payne_hanek(ax)
        if tw == "float":
            rb = self.cast("fptrunc", rb, "float")
        neg = self.icmp("slt", self.bits(x), 0)
        rb = self.flipsign(rb, neg)
        qb = self.sel(neg, self.isub(self.c(0, qb.t), qb), qb)
        r = self.sel(small, r, rb)
        q = self.sel(small, ji, qb)
        r = self.sel(self.fcmp("ueq", ax, _INF), self.c(_NAN, tw), r)
        return r, q

    def sincos_kernel(self, r):
        t = r.t
        z = self.mul(r, r)
        s = self.fma(self.mul(r, z), self.poly(z, self._P(t, "SIN")), r)
        s = self.copysign(s, r)
        c = self.fma(self.mul(z, z), self.poly(z, self._P(t, "COS")), self.fma(z, -0.5, 1.0))
        return s, c

    def _sincos(self, x, cos):
        t = x.t
        F = _FMT[t]
        r, q = self.trig_reduce(x)
        s, c = self.sincos_kernel(r)
        if cos:
            q = self.iadd(q, 1)
        odd = self.icmp("ne", self.iand(q, 1), 0)
        v = self.sel(odd, c, s)
        sgn = self.shl(self.iand(q, 2), F.nbits - 2)
        return self.frombits(self.ixor(self.bits(v), sgn), t)

    def f_sin(self, x):
        return self.tiny_is_x(x, self._sincos(x, False))

    def f_cos(self, x):
        return self._sincos(x, True)

    def f_tan(self, x):
        # float32: reduction and kernel in double (tan amplifies errors of r)
        r, q = self.trig_reduce(x, wide=True)
        s, c = self.sincos_kernel(r)
        odd = self.icmp("ne", self.iand(q, 1), 0)
        num = self.sel(odd, self.neg(c), s)
        den = self.sel(odd, s, c)
        res = self.div(num, den)
        if x.t == "float":
            res = self.cast("fptrunc", res, "float")
        return self.tiny_is_x(x, res)

    # -- inverse trig ------------------------------------------------------------------------
    def _asin_core(self, x):
        t = x.t
        ax = self.fabs(x)
        small = self.fcmp("ole", ax, 0.5)
        z = self.sel(small, self.mul(ax, ax), self.mul(self.sub(1.0, ax), 0.5))
        sq = self.sqrt(z)
        # sqrt rounding error, so that 2*asin(sqrt(z)) keeps full precision
        sl = self.div(self.fma(self.neg(sq), sq, z), self.mul(sq, 2.0))
        s = self.sel(small, ax, sq)
        sl = self.sel(self.fcmp("ogt", self.sel(small, self.c(0.0, t), sq), 0.0), sl, 0.0)
        p = self.add(self.fma(self.mul(s, z), self.poly(z, self._P(t, "ASIN")), sl), s)
        return ax, small, p

    def f_arcsin(self, x):
        t = x.t
        _, small, p = self._asin_core(x)
        big = self.add(self.sub(self.c(_PIO2[0], t), self.mul(p, 2.0)), _PIO2[1])
        return self.copysign(self.sel(small, p, big), x)

    def f_arccos(self, x):
        t = x.t
        _, small, p = self._asin_core(x)
        ps = self.copysign(p, x)
        a = self.sub(self.c(_PIO2[0], t), self.sub(ps, _PIO2[1]))
        p2 = self.mul(p, 2.0)
        bneg = self.add(self.sub(self.c(_PI[0], t), p2), _PI[1])
        b = self.sel(self.fcmp("ogt", x, 0.0), p2, bneg)
        return self.sel(small, a, b)

    def f_arctan(self, x):
        t = x.t
        ax = self.fabs(x)
        big = self.fcmp("ogt", ax, 2.414213562373095)
        mid = self.fcmp("ogt", ax, 0.41421356237309503)
        one = self.c(1.0, t)
        num = self.sel(big, self.c(-1.0, t), self.sel(mid, self.sub(ax, 1.0), ax))
        den = self.sel(big, ax, self.sel(mid, self.add(ax, 1.0), one))
        xr = self.div(num, den)
        y0h = self.sel(big, self.c(_PIO2[0], t), self.sel(mid, self.c(_PIO4[0], t), 0.0))
        y0l = self.sel(big, self.c(_PIO2[0] - _f32round(_PIO2[0]) + _PIO2[1] if t == "float" else _PIO2[1], t),
                       self.sel(mid, self.c(_PIO4[0] - _f32round(_PIO4[0]) + _PIO4[1] if t == "float" else _PIO4[1], t), 0.0))
        z = self.mul(xr, xr)
        p = self.fma(self.mul(xr, z), self.poly(z, self._P(t, "ATAN")), xr)
        res = self.add(y0h, self.add(p, y0l))
        return self.copysign(res, x)

    def f_arcsinh(self, x):
        t = x.t
        ax = self.fabs(x)
        large = self.fcmp("ogt", ax, 2.0 ** 12 if t == "float" else 2.0 ** 28)
        x2 = self.mul(ax, ax)
        arg = self.add(ax, self.div(x2, self.add(self.sqrt(self.add(x2, 1.0)), 1.0)))
        arg = self.sel(large, self.sub(ax, 1.0), arg)     # log1p(|x|-1) = log|x|
        l = self.log1p(arg)
        l = self.add(l, self.sel(large, self.c(_LN2[0], t), 0.0))
        return self.copysign(l, x)

    def f_arccosh(self, x):
        t = x.t
        large = self.fcmp("ogt", x, 2.0 ** 12 if t == "float" else 2.0 ** 28)
        tm = self.sub(x, 1.0)
        arg = self.add(tm, self.sqrt(self.mul(tm, self.add(tm, 2.0))))
        arg = self.sel(large, self.sub(x, 1.0), arg)
        l = self.log1p(arg)
        l = self.add(l, self.sel(large, self.c(_LN2[0], t), 0.0))
        return self.sel(self.fcmp("olt", x, 1.0), self.c(_NAN, t), l)

    def f_arctanh(self, x):
        t = x.t
        ax = self.fabs(x)
        q = self.div(self.c(1.0, t), self.sub(1.0, ax))
        a2 = self.mul(ax, 2.0)
        arg = self.sel(self.fcmp("olt", ax, 0.5), self.fma(self.mul(a2, ax), q, a2), self.mul(a2, q))
        l = self.mul(self.log1p(arg), 0.5)
        return self.copysign(l, x)

    # -- erf / erfinv ------------------------------------------------------------------------
    def erfc_f64(self, x):
        """erfc(x) for double x in [0.45, 6.1] (clamped), relative accuracy."""
        xc = self.clamp(x, 0.45, 6.1)
        hi = self.mul(xc, xc)
        lo = self.fma(xc, xc, self.neg(hi))
        e = self.exp(self.neg(hi))
        e = self.fma(e, self.neg(lo), e)
        R = self.div(self.poly(xc, _ERFC_P_F64), self.poly(xc, _ERFC_Q_F64))
        return self.mul(e, R)

    def f_erf(self, x):
        t = x.t
        ax = self.fabs(x)
        if t == "float":
            small = self.fcmp("olt", ax, 0.9)
            w = self.mul(ax, ax)
            c0h, c0l = _split(_TWO_OVER_SQRTPI, "float")
            tq = self.fma(w, self.poly(w, _ERF_Q_F32), c0l)
            ps = self.fma(ax, c0h, self.mul(ax, tq))
            xc = self.clamp(ax, None, 4.0)
            e = self.exp(self.neg(self.mul(xc, xc)))
            pl = self.sub(1.0, self.mul(e, self.poly(xc, _ERFCX_F32)))
        else:
            small = self.fcmp("olt", ax, 0.5)
            ps = self.mul(ax, self.poly(self.mul(ax, ax), _ERF_SMALL_F64))
            pl = self.sub(1.0, self.erfc_f64(ax))
        return self.copysign(self.sel(small, ps, pl), x)

    def erfinv_initial(self, a):
        """double a=|y| in [0,1) -> erfinv(a) to ~1e-9 relative."""
        w = self.neg(self.log(self.mul(self.sub(1.0, a), self.add(a, 1.0))))
        central = self.fcmp("olt", w, 5.0)
        p1 = self.poly(w, _ERFINV_C)
        p2 = self.poly(self.sqrt(w), _ERFINV_T)
        return self.mul(a, self.sel(central, p1, p2))

    def f_erfinv(self, x):
        t = x.t
        y = x if t == "double" else self.cast("fpext", x, "double")
        a = self.fabs(y)
        x0 = self.erfinv_initial(a)
        if t == "double":
            fs = self.sub(self.mul(x0, self.poly(self.mul(x0, x0), _ERF_SMALL_F64)), a)
            fl = self.sub(self.sub(1.0, a), self.erfc_f64(x0))
            fv = self.sel(self.fcmp("olt", a, 0.5), fs, fl)
            dv = self.mul(self.exp(self.neg(self.mul(x0, x0))), _TWO_OVER_SQRTPI)
            d = self.div(fv, dv)
            x0 = self.sub(x0, self.div(d, self.fma(x0, d, 1.0)))
        r = self.copysign(x0, y)
        r = self.sel(self.fcmp("oeq", a, 1.0), self.copysign(self.c(_INF, "double"), y), r)
        r = self.sel(self.fcmp("ugt", a, 1.0), self.c(_NAN, "double"), r)
        if t == "float":
            r = self.cast("fptrunc", r, "float")
        return r

    # -- gamma ---------------------------------------------------------------------------------
    def sinpi_abs_signed(self, x):
        """(|sin(pi x)|, negative?) for double x."""
        n = self.rint(x)
        r = self.sub(x, n)
        a = self.fabs(r)
        sm = self.fcmp("ole", a, 0.25)
        arg = self.mul(self.sel(sm, a, self.sub(0.5, a)), _PI[0])
        s, c = self.sincos_kernel(arg)
        v = self.sel(sm, s, c)
        h = self.mul(n, 0.5)
        odd = self.fcmp("one", self.rint(h), h)
        neg = self.ixor(self.fcmp("olt", r, 0.0), odd)
        return v, neg

    def _gamma_common(self, z):
        """z=|x| double: region masks, L2(s), and the log argument."""
        m1 = self.fcmp("olt", z, 0.5)
        m2 = self.fcmp("olt", z, 1.5)
        m3 = self.fcmp("olt", z, 2.5)
        m5 = self.fcmp("oge", z, 8.5)
        fl = self.floor(self.sub(z, 1.5))
        s4 = self.sub(z, self.add(fl, 2.0))
        s = self.sel(m1, z, self.sel(m2, self.sub(z, 1.0), self.sel(m3, self.sub(z, 2.0), s4)))
        prod = None
        for kk in range(1, 7):
            fac = self.sel(self.fcmp("oge", fl, float(kk)), self.sub(z, float(kk)), self.c(1.0, "double"))
            prod = fac if prod is None else self.mul(prod, fac)
        L = self.mul(s, self.poly(s, _LGAMMA2_F64))
        return m1, m2, m3, m5, L, prod

    def lgamma_pos(self, z):
        m1, m2, m3, m5, L, prod = self._gamma_common(z)
        arg = self.sel(m1, self.mul(z, self.add(z, 1.0)),
                       self.sel(m2, z, self.sel(m3, self.c(1.0, "double"), self.sel(m5, z, prod))))
        la = self.log(arg)
        corr = self.sel(m2, self.neg(la), la)
        small = self.add(L, corr)
        # Stirling for z >= 8.5
        iz = self.div(self.c(1.0, "double"), z)
        tail = self.mul(iz, self.poly(self.mul(iz, iz), _STIRLING_F64))
        st = self.add(self.sub(self.mul(self.sub(z, 0.5), la), z), self.add(tail, _LN_SQRT2PI[0]))
        return self.sel(m5, st, small)

    def f_gammaln(self, x):
        t = x.t
        xd = x if t == "double" else self.cast("fpext", x, "double")
        z = self.fabs(xd)
        lp = self.lgamma_pos(z)
        v, _ = self.sinpi_abs_signed(xd)
        tiny = self.fcmp("olt", z, 2.0 ** -54)          # lgamma(x) = -log|x| there
        la = self.log(self.sel(tiny, z, self.mul(v, z)))
        rn = self.sub(self.sub(self.c(_LNPI[0], "double"), la), lp)
        rn = self.sel(tiny, self.neg(la), rn)
        rn = self.sel(self.fcmp("oeq", v, 0.0), self.c(_INF, "double"), rn)
        r = self.sel(self.fcmp("olt", xd, 0.0), rn, lp)
        r = self.sel(self.fcmp("oeq", z, _INF), self.c(_INF, "double"), r)
        r = self.sel(self.fcmp("uno", xd, xd), xd, r)
        if t == "float":
            r = self.cast("fptrunc", r, "float")
        return r

    def two_sum(self, a, b):
        s = self.add(a, b)
        bb = self.sub(s, a)
        e = self.add(self.sub(a, self.sub(s, bb)), self.sub(b, bb))
        return s, e

    def log_dd(self, x):
        """log(x) for double x>0 finite (subnormal ok) as double-double (~2^-63 rel)."""
        f, kf = self.log_decomp(x)
        den = self.add(f, 2.0)
        sh = self.div(f, den)
        a = self.sub(f, self.mul(sh, 2.0))
        resid = self.fma(self.neg(sh), f, a)
        sl = self.div(resid, den)
        z = self.mul(sh, sh)
        zl = self.fma(sh, sh, self.neg(z))
        c3 = self.mul(z, sh)
        c3l = self.fma(zl, sh, self.fma(z, sh, self.neg(c3)))
        th = self.mul(c3, _TWO_THIRDS[0])
        tl = self.fma(c3, _TWO_THIRDS[0], self.neg(th))
        tl = self.add(tl, self.fma(c3l, _TWO_THIRDS[0], self.mul(c3, _TWO_THIRDS[1])))
        rest = self.mul(self.mul(self.mul(sh, z), z), self.poly(z, _LOG_R2_F64))
        s2 = self.mul(sh, 2.0)
        H = self.add(s2, th)
        Hl = self.add(self.sub(s2, H), th)
        L = self.add(Hl, self.add(self.mul(sl, 2.0), self.add(tl, rest)))
        Kh = self.mul(kf, _LN2[0])
        Kl = self.fma(kf, _LN2[0], self.neg(Kh))
        Kl = self.fma(kf, _LN2[1], Kl)
        S, e = self.two_sum(Kh, H)
        lo = self.add(e, self.add(Kl, L))
        hi = self.add(S, lo)
        lo = self.sub(lo, self.sub(hi, S))
        return hi, lo

    def exp_dd(self, h, l):
        big = self.fcmp("ogt", h, 710.0)
        small = self.fcmp("olt", h, -746.0)
        hc = self.clamp(h, -746.0, 710.0)
        lc = self.sel(self.or1(big, small), self.c(0.0, "double"), l)
        r, _, ni = self.exp_reduce(hc)
        r = self.add(r, lc)
        u = self.expm1_poly(r)
        return self.ldexp2(self.add(u, 1.0), ni)

    def f_gamma(self, x):
        t = x.t
        xd = x if t == "double" else self.cast("fpext", x, "double")
        z = self.fabs(xd)
        m1, m2, m3, m5, L, prod = self._gamma_common(z)
        up = self.sel(m3, self.c(1.0, "double"), prod)
        down = self.sel(m1, self.mul(z, self.add(z, 1.0)), self.sel(m2, z, self.c(1.0, "double")))
        gs = self.div(self.mul(self.exp(L), up), down)
        # z >= 8.5: exp((z-.5) log z - z + log(sqrt(2pi)) + S(z)) in double-double
        zz = self.sel(m5, z, self.c(16.0, "double"))
        lh, ll = self.log_dd(zz)
        a = self.sub(zz, 0.5)
        ph = self.mul(a, lh)
        pl = self.fma(a, ll, self.fma(a, lh, self.neg(ph)))
        sh, e1 = self.two_sum(ph, self.neg(zz))
        sh2, e2 = self.two_sum(sh, _LN_SQRT2PI[0])
        iz = self.div(self.c(1.0, "double"), zz)
        tail = self.mul(iz, self.poly(self.mul(iz, iz), _STIRLING_F64))
        lo = self.add(self.add(pl, e1), self.add(e2, self.add(tail, _LN_SQRT2PI[1])))
        gb = self.exp_dd(sh2, lo)
        gp = self.sel(m5, gb, gs)
        gp = self.sel(self.fcmp("oeq", z, _INF), self.c(_INF, "double"), gp)
        v, neg = self.sinpi_abs_signed(xd)
        den = self.mul(self.mul(v, z), gp)
        gn = self.div(self.c(_PI[0], "double"), den)
        gn = self.flipsign(gn, neg)
        gn = self.sel(self.fcmp("oeq", v, 0.0), self.c(_NAN, "double"), gn)
        r = self.sel(self.fcmp("olt", xd, 0.0), gn, gp)
        # |x| < 2^-54: gamma(x) = 1/x (also gives +-inf at +-0)
        r = self.sel(self.fcmp("olt", z, 2.0 ** -54), self.div(self.c(1.0, "double"), xd), r)
        r = self.sel(self.fcmp("uno", xd, xd), xd, r)
        if t == "float":
            r = self.cast("fptrunc", r, "float")
        return r

    # -- pow ---------------------------------------------------------------------------------
    def f_pow(self, x, y):
        t = x.t
        if t == "float":
            xd = self.cast("fpext", x, "double")
            yd = self.cast("fpext", y, "double")
        else:
            xd, yd = x, y
        ax = self.fabs(xd)
        if t == "float":
            mag = self.exp(self.mul(yd, self.log(ax)))
        else:
            lh, ll = self.log_dd(ax)
            ph = self.mul(yd, lh)
            pl = self.fma(yd, ll, self.fma(yd, lh, self.neg(ph)))
            mag = self.exp_dd(ph, pl)
        D = "double"
        yr = self.rint(yd)
        yint = self.fcmp("oeq", yr, yd)
        h = self.mul(yd, 0.5)
        yodd = self.and1(yint, self.fcmp("one", self.rint(h), h))
        xneg = self.icmp("slt", self.bits(xd), 0)
        flip = self.and1(xneg, yodd)
        res = self.flipsign(mag, flip)
        ylt0 = self.fcmp("olt", yd, 0.0)
        v0 = self.flipsign(self.sel(ylt0, self.c(_INF, D), 0.0), flip)
        vi = self.flipsign(self.sel(ylt0, self.c(0.0, D), _INF), flip)
        res = self.sel(self.fcmp("oeq", ax, 0.0), v0, res)
        res = self.sel(self.fcmp("oeq", ax, _INF), vi, res)
        one_inf = self.and1(self.fcmp("oeq", ax, 1.0), self.fcmp("oeq", self.fabs(yd), _INF))
        res = self.sel(one_inf, self.c(1.0, D), res)
        nanc = self.and1(self.fcmp("olt", xd, 0.0), self.fcmp("one", xd, -_INF), self.not1(yint))
        res = self.sel(nanc, self.c(_NAN, D), res)
        res = self.sel(self.fcmp("uno", xd, yd), self.c(_NAN, D), res)
        res = self.sel(self.or1(self.fcmp("oeq", yd, 0.0), self.fcmp("oeq", xd, 1.0)), self.c(1.0, D), res)
        if t == "float":
            res = self.cast("fptrunc", res, "float")
        return res

    # -- cbrt / sqrt ----------------------------------------------------------------------------
    def cbrt_d(self, xd, polish):
        D = "double"
        ax = self.fabs(xd)
        sub = self.fcmp("olt", ax, 2.0 ** -1022)
        huge = self.fcmp("ogt", ax, 2.0 ** 1000)
        a = self.sel(sub, self.mul(ax, 2.0 ** 54), self.sel(huge, self.mul(ax, 2.0 ** -54), ax))
        hi = self.cast("trunc", self.lshr(self.bits(a), 32), "i32")
        B = int((1023 - 1023 / 3 - 0.03306235651) * 2 ** 20)
        q = self.iadd(self.udiv(hi, 3), B)
        y = self.frombits(self.shl(self.cast("zext", q, "i64"), 32), D)
        for _ in range(2):
            y3 = self.mul(self.mul(y, y), y)
            y = self.mul(y, self.div(self.fma(a, 2.0, y3), self.fma(y3, 2.0, a)))
        if polish:
            y2 = self.mul(y, y)
            y2l = self.fma(y, y, self.neg(y2))
            y3 = self.mul(y2, y)
            y3l = self.fma(y2l, y, self.fma(y2, y, self.neg(y3)))
            res = self.add(self.sub(y3, a), y3l)
            y = self.sub(y, self.div(res, self.mul(y2, 3.0)))
        y = self.sel(sub, self.mul(y, 2.0 ** -18), self.sel(huge, self.mul(y, 2.0 ** 18), y))
        y = self.copysign(y, xd)
        special = self.or1(self.fcmp("oeq", ax, 0.0), self.fcmp("ueq", ax, _INF))
        return self.sel(special, xd, y)

    def f_cbrt(self, x):
        if x.t == "float":
            return self.cast("fptrunc", self.cbrt_d(self.cast("fpext", x, "double"), False), "float")
        return self.cbrt_d(x, True)

    def f_rcbrt(self, x):
        if x.t == "float":
            c = self.cbrt_d(self.cast("fpext", x, "double"), False)
            return self.cast("fptrunc", self.div(self.c(1.0, "double"), c), "float")
        return self.div(self.c(1.0, "double"), self.cbrt_d(x, True))

    def f_sqrt(self, x):
        return self.sqrt(x)

    def f_rsqrt(self, x):
        return self.div(self.c(1.0, x.t), self.sqrt(x))

    # -- rounding functions -------------------------------------------------------------------
    def f_round(self, x): return self.round(x)
    def f_rint(self, x): return self.rint(x)
    def f_floor(self, x): return self.floor(x)
    def f_ceil(self, x): return self.ceil(x)
    def f_trunc(self, x): return self.trunc(x)
    def f_fix(self, x): return self.trunc(x)


# ----------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------
_ATTRS = "alwaysinline nounwind memory(none)"
_CACHE: dict[tuple[str, str], tuple[str, bool]] = {}


def _define(func: str, sfx: str) -> tuple[str, bool]:
    key = (func, sfx)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    ty = "float" if sfx == "f32" else "double"
    g = _G()
    args = [_V("%x", ty)] + ([_V("%y", ty)] if func in _BINARY else [])
    res = getattr(g, "f_" + func)(*args)
    params = ", ".join(f"{ty} {a.n}" for a in args)
    body = "\n".join(g.lines)
    text = (f"define internal {ty} @mxc_{func}_{sfx}({params}) {_ATTRS} {{\n"
            f"entry:\n{body}\n  ret {ty} {res.n}\n}}\n")
    _CACHE[key] = (text, g.uses_table)
    return text, g.uses_table


def _table_ir() -> str:
    vals = ", ".join(f"i32 {w if w < 2**31 else w - 2**32}" for w in _TWO_OVER_PI_WORDS)
    return (f"@mxc_math_2overpi_bits = internal unnamed_addr constant "
            f"[{len(_TWO_OVER_PI_WORDS)} x i32] [{vals}], align 4\n")


def math_ir(funcs: Iterable[tuple[str, str]] | None = None) -> str:
    """LLVM IR text defining the requested (func, dtype) math functions.

    ``funcs=None`` defines all of them for float32 and float64.  Include the text
    once per module.  It declares no intrinsics (LLVM 22 declares them
    implicitly), and its only global is an internal constant table."""
    if funcs is None:
        pairs = [(f, s) for s in ("f32", "f64") for f in MATH_FUNCS]
    else:
        pairs = []
        for f, dt in funcs:
            if f not in MATH_FUNCS:
                raise ValueError(f"mathlib: unknown math function {f!r}")
            pairs.append((f, _sfx(dt)))
    seen = set()
    parts = []
    table = False
    for p in pairs:
        if p in seen:
            continue
        seen.add(p)
        text, tab = _define(*p)
        table |= tab
        parts.append(text)
    head = [_table_ir()] if table else []
    return "\n".join(["; mxc mathlib\n"] + head + parts)


# ----------------------------------------------------------------------------
# float16 / bfloat16 conversions (integer bit operations; no __truncsfhf2 etc.)
# ----------------------------------------------------------------------------
def _conv_f16_to_f32() -> str:
    g = _G()
    h = _V("%h", "i16")
    w = g.cast("zext", h, "i32")
    sign = g.shl(g.iand(w, 0x8000), 16)
    e = g.iand(g.lshr(w, 10), 31)
    m = g.iand(w, 1023)
    m13 = g.shl(m, 13)
    nb = g.ior(g.shl(g.iadd(e, 112), 23), m13)
    # inf / nan (nan payload kept, made quiet like the hardware conversions)
    quiet = g.sel(g.icmp("ne", m, 0), g.c(0x400000, "i32"), 0)
    ib = g.ior(g.ior(m13, 0x7F800000), quiet)
    # zero / subnormal: (1 + m/1024) * 2^-14 - 2^-14 == m * 2^-24 exactly
    sf = g.sub(g.frombits(g.ior(m13, 0x38800000), "float"), 2.0 ** -14)
    sb = g.bits(sf)
    r = g.sel(g.icmp("eq", e, 0), sb, g.sel(g.icmp("eq", e, 31), ib, nb))
    res = g.frombits(g.ior(r, sign), "float")
    return _wrap_conv("float @mxc_f16_to_f32(i16 %h)", g, res)


def _conv_f32_to_f16() -> str:
    g = _G()
    x = _V("%x", "float")
    u = g.bits(x)
    sign = g.iand(g.lshr(u, 16), 0x8000)
    a = g.iand(u, 0x7FFFFFFF)
    nanv = g.ior(g.iand(g.lshr(a, 13), 0x3FF), 0x7E00)
    # normal half range: round mantissa to nearest even (carry may bump exponent)
    odd = g.iand(g.lshr(a, 13), 1)
    nv = g.lshr(g.iadd(g.iadd(g.isub(a, 0x38000000), 0xFFF), odd), 13)
    # subnormal half: value = m * 2^(e-126) in units of 2^-24, round half even
    e = g.lshr(a, 23)
    m = g.ior(g.iand(a, 0x7FFFFF), g.sel(g.icmp("eq", e, 0), g.c(0, "i32"), 0x800000))
    sh = g.isub(g.c(126, "i32"), e)
    sh = g.sel(g.icmp("ugt", sh, 31), g.c(31, "i32"), sh)
    q = g.lshr(m, sh)
    rem = g.iand(m, g.isub(g.shl(g.c(1, "i32"), sh), 1))
    half = g.shl(g.c(1, "i32"), g.isub(sh, 1))
    up = g.or1(g.icmp("ugt", rem, half),
               g.and1(g.icmp("eq", rem, half), g.icmp("ne", g.iand(q, 1), 0)))
    sv = g.iadd(q, g.cast("zext", up, "i32"))
    r = g.sel(g.icmp("ult", a, 0x38800000), sv, nv)
    r = g.sel(g.icmp("uge", a, 0x477FF000), g.c(0x7C00, "i32"), r)
    r = g.sel(g.icmp("ugt", a, 0x7F800000), nanv, r)
    res = g.cast("trunc", g.ior(r, sign), "i16")
    return _wrap_conv("i16 @mxc_f32_to_f16(float %x)", g, res)


def _conv_bf16_to_f32() -> str:
    g = _G()
    w = g.cast("zext", _V("%h", "i16"), "i32")
    res = g.frombits(g.shl(w, 16), "float")
    return _wrap_conv("float @mxc_bf16_to_f32(i16 %h)", g, res)


def _conv_f32_to_bf16() -> str:
    g = _G()
    u = g.bits(_V("%x", "float"))
    a = g.iand(u, 0x7FFFFFFF)
    odd = g.iand(g.lshr(u, 16), 1)
    rn = g.lshr(g.iadd(g.iadd(u, 0x7FFF), odd), 16)
    nanv = g.ior(g.lshr(u, 16), 0x40)
    r = g.sel(g.icmp("ugt", a, 0x7F800000), nanv, rn)
    res = g.cast("trunc", r, "i16")
    return _wrap_conv("i16 @mxc_f32_to_bf16(float %x)", g, res)


def _wrap_conv(sig: str, g: _G, res: _V) -> str:
    ret_t = sig.split(" ", 1)[0]
    body = "\n".join(g.lines)
    return f"define internal {sig} {_ATTRS} {{\nentry:\n{body}\n  ret {ret_t} {res.n}\n}}\n"


def conversion_ir() -> str:
    """IR text defining @mxc_f16_to_f32(i16)->float, @mxc_f32_to_f16(float)->i16,
    @mxc_bf16_to_f32(i16)->float and @mxc_f32_to_bf16(float)->i16 (round to
    nearest even, inf/nan/subnormals handled as numpy's astype / ml_dtypes)."""
    parts = [_conv_f16_to_f32(), _conv_f32_to_f16(), _conv_bf16_to_f32(), _conv_f32_to_bf16()]
    return "; mxc f16/bf16 conversions\n\n" + "\n".join(parts)
