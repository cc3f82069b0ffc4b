"""Compiler-runtime helpers for freestanding artifacts, as LLVM IR.

On 32-bit ARM, LLVM lowers some operations to calls of run-time library functions that
libgcc / compiler-rt normally provide: 64-bit division (``__aeabi_ldivmod``), 32-bit
division on cores without a hardware divider (``__aeabi_idiv``), conversions between
floats and 64-bit integers (``__aeabi_f2lz``...). An artifact links against nothing, so it
carries its own copies: the functions below, defined ``weak hidden`` (two models in one
program share one copy; nothing is exported) and kept alive through ``llvm.compiler.used``
so the code generator's libcalls find them.

The bodies never use the operations they implement: divisions go through VFP double
arithmetic (exact for operands below 2**32: the rounded quotient cannot cross an integer),
with a shift-subtract loop for wider 64-bit operands; conversions split into 32-bit halves.
Other targets (x86-64, AArch64) need none of this.
"""
from __future__ import annotations

_CC = "arm_aapcscc"   # the run-time ABI uses the base (core-register) procedure call standard
_ATTR = "#900"

_ARM_IR = r"""
define internal {i64, i64} @mxc_rt_udivmod64(i64 %n, i64 %d) #900 {
entry:
  %or = or i64 %n, %d
  %small = icmp ult i64 %or, 4294967296
  br i1 %small, label %fast, label %slow
fast:
  %n32 = trunc i64 %n to i32
  %d32 = trunc i64 %d to i32
  %nf = uitofp i32 %n32 to double
  %df = uitofp i32 %d32 to double
  %qf = fdiv double %nf, %df
  %q32 = fptoui double %qf to i32
  %m32 = mul i32 %q32, %d32
  %r32 = sub i32 %n32, %m32
  %q = zext i32 %q32 to i64
  %r = zext i32 %r32 to i64
  %a0 = insertvalue {i64, i64} undef, i64 %q, 0
  %a1 = insertvalue {i64, i64} %a0, i64 %r, 1
  ret {i64, i64} %a1
slow:
  br label %loop
loop:
  %i = phi i32 [ 63, %slow ], [ %i1, %next ]
  %rem = phi i64 [ 0, %slow ], [ %rem2, %next ]
  %quo = phi i64 [ 0, %slow ], [ %quo2, %next ]
  %sh = zext i32 %i to i64
  %bit = lshr i64 %n, %sh
  %b1 = and i64 %bit, 1
  %rs = shl i64 %rem, 1
  %rb = or i64 %rs, %b1
  %qs = shl i64 %quo, 1
  %ge = icmp uge i64 %rb, %d
  %sub = sub i64 %rb, %d
  %rem2 = select i1 %ge, i64 %sub, i64 %rb
  %qb = zext i1 %ge to i64
  %quo2 = or i64 %qs, %qb
  br label %next
next:
  %i1 = sub i32 %i, 1
  %more = icmp sge i32 %i1, 0
  br i1 %more, label %loop, label %done
done:
  %b0 = insertvalue {i64, i64} undef, i64 %quo2, 0
  %b1v = insertvalue {i64, i64} %b0, i64 %rem2, 1
  ret {i64, i64} %b1v
}

define weak hidden arm_aapcscc {i64, i64} @__aeabi_uldivmod(i64 %n, i64 %d) #900 {
  %r = call {i64, i64} @mxc_rt_udivmod64(i64 %n, i64 %d)
  ret {i64, i64} %r
}

define weak hidden arm_aapcscc {i64, i64} @__aeabi_ldivmod(i64 %n, i64 %d) #900 {
  %sn = icmp slt i64 %n, 0
  %sd = icmp slt i64 %d, 0
  %nn = sub i64 0, %n
  %nd = sub i64 0, %d
  %an = select i1 %sn, i64 %nn, i64 %n
  %ad = select i1 %sd, i64 %nd, i64 %d
  %qr = call {i64, i64} @mxc_rt_udivmod64(i64 %an, i64 %ad)
  %q = extractvalue {i64, i64} %qr, 0
  %r = extractvalue {i64, i64} %qr, 1
  %sq = xor i1 %sn, %sd
  %nq = sub i64 0, %q
  %nr = sub i64 0, %r
  %q2 = select i1 %sq, i64 %nq, i64 %q
  %r2 = select i1 %sn, i64 %nr, i64 %r
  %a0 = insertvalue {i64, i64} undef, i64 %q2, 0
  %a1 = insertvalue {i64, i64} %a0, i64 %r2, 1
  ret {i64, i64} %a1
}

define internal {i32, i32} @mxc_rt_udivmod32(i32 %n, i32 %d) #900 {
  %nf = uitofp i32 %n to double
  %df = uitofp i32 %d to double
  %qf = fdiv double %nf, %df
  %q = fptoui double %qf to i32
  %m = mul i32 %q, %d
  %r = sub i32 %n, %m
  %a0 = insertvalue {i32, i32} undef, i32 %q, 0
  %a1 = insertvalue {i32, i32} %a0, i32 %r, 1
  ret {i32, i32} %a1
}

define internal {i32, i32} @mxc_rt_sdivmod32(i32 %n, i32 %d) #900 {
  %nf = sitofp i32 %n to double
  %df = sitofp i32 %d to double
  %qf = fdiv double %nf, %df
  %q = fptosi double %qf to i32
  %m = mul i32 %q, %d
  %r = sub i32 %n, %m
  %a0 = insertvalue {i32, i32} undef, i32 %q, 0
  %a1 = insertvalue {i32, i32} %a0, i32 %r, 1
  ret {i32, i32} %a1
}

define weak hidden arm_aapcscc i32 @__aeabi_uidiv(i32 %n, i32 %d) #900 {
  %qr = call {i32, i32} @mxc_rt_udivmod32(i32 %n, i32 %d)
  %q = extractvalue {i32, i32} %qr, 0
  ret i32 %q
}

define weak hidden arm_aapcscc {i32, i32} @__aeabi_uidivmod(i32 %n, i32 %d) #900 {
  %qr = call {i32, i32} @mxc_rt_udivmod32(i32 %n, i32 %d)
  ret {i32, i32} %qr
}

define weak hidden arm_aapcscc i32 @__aeabi_idiv(i32 %n, i32 %d) #900 {
  %qr = call {i32, i32} @mxc_rt_sdivmod32(i32 %n, i32 %d)
  %q = extractvalue {i32, i32} %qr, 0
  ret i32 %q
}

define weak hidden arm_aapcscc {i32, i32} @__aeabi_idivmod(i32 %n, i32 %d) #900 {
  %qr = call {i32, i32} @mxc_rt_sdivmod32(i32 %n, i32 %d)
  ret {i32, i32} %qr
}

; double -> u64 for 0 <= x < 2**64 (truncation)
define internal i64 @mxc_rt_d2u64(double %x) #900 {
entry:
  %neg = fcmp olt double %x, 0.0
  br i1 %neg, label %zero, label %pos
zero:
  ret i64 0
pos:
  %small = fcmp olt double %x, 0x41F0000000000000
  br i1 %small, label %lo, label %hi
lo:
  %v = fptoui double %x to i32
  %vz = zext i32 %v to i64
  ret i64 %vz
hi:
  %hf = fmul double %x, 0x3DF0000000000000
  %h = fptoui double %hf to i32
  %hd = uitofp i32 %h to double
  %hs = fmul double %hd, 0x41F0000000000000
  %lf = fsub double %x, %hs
  %l = fptoui double %lf to i32
  %h64 = zext i32 %h to i64
  %l64 = zext i32 %l to i64
  %hsh = shl i64 %h64, 32
  %r = or i64 %hsh, %l64
  ret i64 %r
}

define internal i64 @mxc_rt_d2s64(double %x) #900 {
  %neg = fcmp olt double %x, 0.0
  %nx = fneg double %x
  %ax = select i1 %neg, double %nx, double %x
  %u = call i64 @mxc_rt_d2u64(double %ax)
  %nu = sub i64 0, %u
  %r = select i1 %neg, i64 %nu, i64 %u
  ret i64 %r
}

define weak hidden arm_aapcscc i64 @__aeabi_d2ulz(double %x) #900 {
  %r = call i64 @mxc_rt_d2u64(double %x)
  ret i64 %r
}

define weak hidden arm_aapcscc i64 @__aeabi_d2lz(double %x) #900 {
  %r = call i64 @mxc_rt_d2s64(double %x)
  ret i64 %r
}

define weak hidden arm_aapcscc i64 @__aeabi_f2ulz(float %x) #900 {
  %d = fpext float %x to double
  %r = call i64 @mxc_rt_d2u64(double %d)
  ret i64 %r
}

define weak hidden arm_aapcscc i64 @__aeabi_f2lz(float %x) #900 {
  %d = fpext float %x to double
  %r = call i64 @mxc_rt_d2s64(double %d)
  ret i64 %r
}

; u64 -> double, one rounding: hi*2**32 and lo are exact, their sum rounds once
define internal double @mxc_rt_u64tod(i64 %v) #900 {
  %h64 = lshr i64 %v, 32
  %h = trunc i64 %h64 to i32
  %l = trunc i64 %v to i32
  %hd = uitofp i32 %h to double
  %ld = uitofp i32 %l to double
  %hs = fmul double %hd, 0x41F0000000000000
  %r = fadd double %hs, %ld
  ret double %r
}

define weak hidden arm_aapcscc double @__aeabi_ul2d(i64 %v) #900 {
  %r = call double @mxc_rt_u64tod(i64 %v)
  ret double %r
}

define weak hidden arm_aapcscc double @__aeabi_l2d(i64 %v) #900 {
  %neg = icmp slt i64 %v, 0
  %nv = sub i64 0, %v
  %a = select i1 %neg, i64 %nv, i64 %v
  %d = call double @mxc_rt_u64tod(i64 %a)
  %nd = fneg double %d
  %r = select i1 %neg, double %nd, double %d
  ret double %r
}

; u64 -> float without double rounding: above 2**53 fold the low 11 bits into a sticky bit
define internal float @mxc_rt_u64tof(i64 %v) #900 {
entry:
  %big = icmp uge i64 %v, 9007199254740992
  br i1 %big, label %wide, label %narrow
narrow:
  %d = call double @mxc_rt_u64tod(i64 %v)
  %f = fptrunc double %d to float
  ret float %f
wide:
  %s = lshr i64 %v, 11
  %low = and i64 %v, 2047
  %nz = icmp ne i64 %low, 0
  %st = zext i1 %nz to i64
  %s2 = or i64 %s, %st
  %d2 = call double @mxc_rt_u64tod(i64 %s2)
  %d3 = fmul double %d2, 0x40A0000000000000
  %f2 = fptrunc double %d3 to float
  ret float %f2
}

define weak hidden arm_aapcscc float @__aeabi_ul2f(i64 %v) #900 {
  %r = call float @mxc_rt_u64tof(i64 %v)
  ret float %r
}

define weak hidden arm_aapcscc float @__aeabi_l2f(i64 %v) #900 {
  %neg = icmp slt i64 %v, 0
  %nv = sub i64 0, %v
  %a = select i1 %neg, i64 %nv, i64 %v
  %f = call float @mxc_rt_u64tof(i64 %a)
  %nf = fneg float %f
  %r = select i1 %neg, float %nf, float %f
  ret float %r
}

@llvm.compiler.used = appending global [14 x ptr] [ptr @__aeabi_uldivmod, ptr @__aeabi_ldivmod,
  ptr @__aeabi_uidiv, ptr @__aeabi_uidivmod, ptr @__aeabi_idiv, ptr @__aeabi_idivmod,
  ptr @__aeabi_d2ulz, ptr @__aeabi_d2lz, ptr @__aeabi_f2ulz, ptr @__aeabi_f2lz,
  ptr @__aeabi_ul2d, ptr @__aeabi_l2d, ptr @__aeabi_ul2f, ptr @__aeabi_l2f], section "llvm.metadata"

attributes #900 = { nounwind "no-builtins" }
"""

ARM_HELPERS = ("__aeabi_uldivmod", "__aeabi_ldivmod", "__aeabi_uidiv", "__aeabi_uidivmod",
               "__aeabi_idiv", "__aeabi_idivmod", "__aeabi_d2ulz", "__aeabi_d2lz",
               "__aeabi_f2ulz", "__aeabi_f2lz", "__aeabi_ul2d", "__aeabi_l2d",
               "__aeabi_ul2f", "__aeabi_l2f")


def runtime_ir(arch: str) -> str:
    """IR of the helpers a target needs ('' where LLVM emits no libcalls we can see)."""
    if arch == "arm":
        return _ARM_IR
    return ""


__all__ = ["ARM_HELPERS", "runtime_ir"]
