"""GEMM schedule template: a BLIS-style packed, register-blocked kernel emitted as LLVM IR text.

This file owns the dense matrix-multiply kernel every heavy CPU op lowers to (FullyConnected,
dot/batch_dot with transpose flags, convolution through im2col).  One :class:`GemmSpec`
describes ``C[b] = alpha * A[b] @ B[b] + beta * C[b] (+ bias)`` with every size and element
stride a compile-time constant; :func:`gemm_kernel` renders it for one ISA as the body of an
LLVM module (function definitions plus the intrinsic declarations they use).

Calling convention (all mxc CPU kernels)::

    define void @NAME(i64 %task_begin, i64 %task_end, ptr %args, ptr %scratch)

``args`` holds the element pointers A, B, C (then the bias when ``spec.bias`` is set, the
residual of an "add" epilogue, and the shared packed-B buffer of ``share_b``);
``scratch`` is a per-thread, 64-byte aligned buffer of ``scratch_bytes``.  Running the tasks
``[0, n_tasks)`` in any split and order gives bit-identical results: every task owns a
disjoint tile of C and reduces the whole K range itself.

Schedule (the BLIS loop nest, per task = one batch index x a block of rows x a block of
columns)::

    for jc in task columns, step NC:          B block  KC x NC  (packed, L3/L2)
      for pc in 0..K, step KC:
        pack B[pc:pc+kc, jc:jc+nc] -> NR-wide panels
        for ic in task rows, step MC:         A block  MC x KC  (packed, L2)
          pack A[ic:ic+mc, pc:pc+kc] -> MR-tall panels
          for jr in 0..nc, step NR:           B micro-panel KC x NR stays in L1
            for ir in 0..mc, step MR:
              MR x NR register tile: broadcast A, vector-load B, vector FMA
              epilogue: alpha, beta (first K block only), bias; full tiles store vectors,
              edge tiles go through a scratch tile buffer and scalar stores

Packing zero-pads partial panels, so the micro-kernel always computes a full tile; only the
epilogue knows the real tile size.  Packing copes with arbitrary (also negative) strides:
N-contiguous rows are copied with vector loads, K-contiguous ones (transposed operands,
FullyConnected weights) are read in VL x VL blocks and transposed in registers.

Everything is planned at compile time (:func:`_plan`):

* orientation -- C^T = B^T A^T when that wastes less of the register tile (N < a vector)
  or only C's columns are contiguous;
* register tile -- MR x NV vectors per ISA, narrowed to tiny M or N and widened the other way;
* task split -- batch x row blocks x column blocks from a small cost model, so 2 threads
  get balanced work also for batch 1 and skinny shapes (M = 1: split over N);
* "direct B" -- when a task has a single row of tiles (small M) and B rows are contiguous,
  full B panels are read in place instead of packed (each would be used once);
* "dot" -- a few rows (M <= 4) against K-contiguous B (FullyConnected at small batch):
  vector dot products along K with M x NB accumulators, B streamed once, no packing;
* swapped implicit GEMM (``_implicit_rows``) -- a convolution with few output pixels per
  image (deep layers) runs as C^T = X^T W^T: output channels across the vector lanes (the
  weights are the B operand, prepacked column panels of W^T = row panels of W), MR-pixel
  panels packed off the input (the implicit operand is A), the batch folded into the
  pixel rows, and tiles transposed in registers on store; with prepacked weights K runs
  (tap, channel) so a K block whose tap row is padding for a panel is skipped;
* weight gradient (``b_cols``) -- dW = dY X^T of a "same" convolution: B's columns are the
  image shifted per (channel, tap), packed as VL x VL register transposes;
* shared B (``share_b``) -- when several row blocks read the same columns, each KC x NC
  block of B is packed once into a buffer the caller passes (the last argument; a kernel
  zeroes its counters before each call): its panels are claimed off an atomic counter by
  whichever tasks reach the block, and a task waits only for panels that running tasks are
  packing (which never wait themselves), so any split and order still works.  The split
  model then counts B packing once per column block and prefers row splits (each task
  packs only its own rows of A).

Tuning knobs (``gemm_kernel(_params=...)``; tests and benchmarks): ``mr``/``nv``/``kc``/
``mc``/``nc`` (tile and blocks), ``split`` (row, column task blocks), ``implicit_swap``,
``imr`` (swapped panel height), ``no_tap_skip``, ``no_dot``, ``no_direct``, ``no_share``,
``share_min`` (smallest B shared, bytes), ``a_prefetch``, ``b_prefetch``.

Convolutions with prepacked (or per-run repacked) weights take the direct convolution
template (``conv_template.py``) instead; this template serves the rest (grouped, few output
channels, gradients) and every matrix product.

Known next steps: masked-store N edges instead of the scalar edge path; software prefetch for
the direct-B stream.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .irbuilder import FunctionBuilder as _Fn
from .irbuilder import If as _If
from .irbuilder import VectorFMA as _VectorFMA
from .irbuilder import fconst as _fconst
from .irbuilder import ident as _ident
from .irbuilder import mask_type as _mask_type
from .irbuilder import transpose as _transpose

__all__ = ["ISAS", "GemmKernel", "GemmSpec", "gemm_kernel", "host_isa", "pack_a_panels",
           "pack_b_panels", "prepack_cols", "prepack_order", "prepack_rows"]

# Fast-math flags for every float op: no `fast`/`nnan`, so NaN semantics survive.
_FM = "nsz arcp contract afn"
# Attributes of every generated function.  "no-builtins" stops LLVM from turning copy and
# zero-fill loops into memcpy/memset calls, so objects stay freestanding (no libc).
_FN_ATTRS = 'nounwind "no-builtins"'

ISAS = ("avx512", "avx2", "neon", "generic")


@dataclass(frozen=True)
class GemmSpec:
    """``C[b] = alpha * A[b] @ B[b] + beta * C[b] + bias`` for b in range(batch).

    Strides are in elements: ``a_strides`` = (batch, m, k), ``b_strides`` = (batch, k, n),
    ``c_strides`` = (batch, m, n); transposed operands are just other strides.  With
    ``beta == 0`` C is never read.  ``bias`` is None, ``"m"`` (bias[m] added to row m) or
    ``"n"`` (bias[n] added to column n), added after the alpha scaling; the bias vector is
    contiguous and advances by ``bias_stride_batch`` elements per batch index.
    """

    batch: int
    M: int
    N: int
    K: int
    dtype: str = "float32"
    a_strides: tuple[int, int, int] | None = None   # None: contiguous (M*K, K, 1)
    b_strides: tuple[int, int, int] | None = None   # None: contiguous (K*N, N, 1)
    c_strides: tuple[int, int, int] | None = None   # None: contiguous (M*N, N, 1)
    alpha: float = 1.0
    beta: float = 0.0
    bias: str | None = None
    bias_stride_batch: int = 0
    # Implicit-GEMM addressing (convolution without an im2col buffer):
    # b_kmap: B row k starts at sum(digit_i * stride_i) for the digits of k in the radices
    #   ((radix, stride), ...) (most significant first), instead of k * b_strides[1]; a digit
    #   (radix, stride, s, phase_stride) contributes (v // s) * stride + (v % s) * phase_stride
    #   (strided convolution over a space-to-depth input);
    # c_ngrid: (pitch, width): logical column n of C is stored at (n // pitch) * width +
    #   n % pitch and dropped when n % pitch >= width (an output row computed over a padded row).
    b_kmap: tuple | None = None
    c_ngrid: tuple | None = None
    # b_same: (H, W, kh, kw, dh, dw, ph, pw): with b_kmap over an unpadded (H, W) input, a
    #   stride-1 "same" convolution (output H x W): B row k = (c, ky, kx) at logical column
    #   n = oy*W + ox reads input[c, oy + ky*dh - ph, ox + kx*dw - pw], 0 outside the image --
    #   the zero padding happens while packing, no padded copy of the input is made.
    b_same: tuple | None = None
    # Epilogue after the full K reduction, in order: "add" (+ a residual operand laid out
    # exactly like C, the argument after the bias), "relu" (max(x, 0), NaN -> 0 as mxc's relu).
    epilogue: tuple = ()
    # > 0: A is already packed (constant weights, packed once at bind time by
    # :func:`pack_a_panels`): row panels of a_panel rows, element (m, k) at
    # (m // a_panel) * a_panel * K + k * a_panel + m % a_panel, zero rows past M;
    # a_strides[0] is the batch stride of that buffer. a_panel must be what
    # :func:`prepack_rows` says for the same spec.
    a_panel: int = 0
    # > 0: B is already packed (FullyConnected weights, :func:`pack_b_panels`): column
    # panels of b_panel columns, element (k, n) at (n // b_panel) * b_panel * K +
    # k * b_panel + n % b_panel, zero columns past N; b_strides[0] is its batch stride.
    # b_panel must be what :func:`prepack_cols` says for the same spec.
    b_panel: int = 0
    # b_cols: the weight gradient of a stride-1 "same" convolution, dW = dY X^T without an
    # im2col buffer: B column n = (channel, ky, kx) reads the image x shifted by its tap
    # (digits (radix, stride) as b_kmap's, over N), B row k is pixel k (contiguous);
    # b_same gives the geometry (rows and columns outside the image read 0).
    b_cols: tuple | None = None
    # share_b: the caller passes one more argument (last), a buffer of
    # GemmKernel.shared_bytes whose first shared_zero_bytes are zero at the call: when tasks
    # of different row blocks read the same B columns, each K x N block of B is packed once
    # into it, its panels claimed by whichever tasks arrive (atomic counters), instead of
    # once per task.
    share_b: bool = False

    def __post_init__(self) -> None:
        dense = {"a_strides": (self.M * self.K, self.K, 1),
                 "b_strides": (self.K * self.N, self.N, 1),
                 "c_strides": (self.M * self.N, self.N, 1)}
        for field, default in dense.items():
            val = getattr(self, field)
            val = default if val is None else tuple(int(x) for x in val)
            if len(val) != 3:
                raise ValueError(f"GemmSpec.{field} needs 3 strides (batch, row, column), "
                                 f"got {val}")
            object.__setattr__(self, field, val)
        if self.b_kmap is not None:
            kmap = tuple(tuple(int(v) for v in d) + ((1, 0) if len(d) == 2 else ())
                         for d in self.b_kmap)
            if any(len(d) != 4 or d[2] < 1 for d in kmap):
                raise ValueError(f"GemmSpec.b_kmap digits are (radix, stride) or (radix, "
                                 f"stride, phase, phase_stride), got {self.b_kmap}")
            if not kmap or math.prod(d[0] for d in kmap) != self.K or \
                    min(d[0] for d in kmap) < 1:
                raise ValueError(f"GemmSpec.b_kmap radices {kmap} must multiply to K={self.K}")
            if self.b_strides[2] != 1:
                raise ValueError("GemmSpec.b_kmap needs contiguous B rows (b_strides[2] == 1)")
            object.__setattr__(self, "b_kmap", kmap)
        if self.b_cols is not None:
            cols = tuple((int(r), int(st)) for r, st in self.b_cols)
            if self.b_kmap is not None or self.b_same is None or \
                    math.prod(r for r, _ in cols) != self.N or self.b_strides[1] != 1 or \
                    len(cols) != 3:
                raise ValueError(f"GemmSpec.b_cols {self.b_cols}: (channel, ky, kx) digits "
                                 f"multiplying to N={self.N}, with b_same, no b_kmap and "
                                 "contiguous B rows (b_strides[1] == 1)")
            object.__setattr__(self, "b_cols", cols)
        if self.b_same is not None:
            same = tuple(int(v) for v in self.b_same)
            if len(same) != 8 or (self.b_kmap is None and self.b_cols is None):
                raise ValueError("GemmSpec.b_same is (H, W, kh, kw, dh, dw, ph, pw) and "
                                 "needs b_kmap or b_cols")
            object.__setattr__(self, "b_same", same)
        if self.c_ngrid is not None:
            pitch, width = (int(x) for x in self.c_ngrid)
            if not 1 <= width <= pitch or self.c_strides[2] != 1:
                raise ValueError(f"GemmSpec.c_ngrid {self.c_ngrid} needs 1 <= width <= pitch "
                                 "and contiguous C rows")
            object.__setattr__(self, "c_ngrid", None if width == pitch else (pitch, width))
        epi = tuple(self.epilogue)
        if any(e not in ("add", "relu") for e in epi):
            raise ValueError(f"GemmSpec.epilogue {epi}: steps are 'add' and 'relu'")
        object.__setattr__(self, "epilogue", epi)


@dataclass(frozen=True)
class GemmKernel:
    name: str
    ir: str             # module body: definitions + intrinsic declarations (one line each)
    n_tasks: int        # run the task range [0, n_tasks)
    scratch_bytes: int  # per-thread scratch, 64-byte aligned by the caller
    flops: int
    shared_bytes: int = 0       # > 0: the shared packed-B buffer (GemmSpec.share_b) ...
    shared_zero_bytes: int = 0  # ... whose first bytes (its claim counters) start at zero


# ---------------------------------------------------------------------------------------------
# Target tables
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Isa:
    vbytes: int      # vector register width in bytes
    nregs: int       # vector registers the tile may plan with
    mr: int          # default register tile: MR rows ...
    nv: int          # ... x NV vectors of columns
    fma: str         # "fma": llvm.fma; "fmuladd": llvm.fmuladd; "muladd": fmul + fadd contract
    kc: int          # K block (elements)
    mc: int          # M block (rows)
    nc: int          # N block (columns)


# Blocking: the KC x NR micro-panel of B should sit in L1 (<= ~32 KiB), the MC x KC block of
# A in L2 and the KC x NC block of B in L2/L3.  KC is in elements of float32; float64 halves
# the vector width (NR), so the same KC keeps the same bytes per micro-panel.
_ISA_TABLE = {
    "avx512": _Isa(vbytes=64, nregs=32, mr=8, nv=2, fma="fma", kc=256, mc=192, nc=2048),
    "avx2": _Isa(vbytes=32, nregs=16, mr=6, nv=2, fma="fma", kc=256, mc=144, nc=2048),
    # 16 q-registers on ARMv7 NEON (32 on AArch64): plan for 16 so one template serves both;
    # fmuladd never becomes a libm call where the target lacks a fused multiply-add.
    "neon": _Isa(vbytes=16, nregs=16, mr=6, nv=2, fma="fmuladd", kc=256, mc=96, nc=1024),
    "generic": _Isa(vbytes=16, nregs=16, mr=4, nv=2, fma="muladd", kc=256, mc=96, nc=1024),
}

_DTYPES = {"float32": ("float", 4), "float64": ("double", 8)}
# Software prefetch distance (elements) in a prepacked A panel, a tuning knob: on this
# machine 128-2048 measured within the noise of none (hardware prefetch), so off.
_A_PREFETCH = 0
_B_PREFETCH = 0
_L2_BUDGET = 512 * 1024
# Largest B (batch x K x N, bytes) packed into a shared buffer (GemmSpec.share_b): the
# buffer is a temporary of the memory plan, as big as B.
_SHARED_B_MAX = 64 << 20
# Smallest B (K x N bytes per batch entry) worth sharing: below, a thread that starts late
# finds the other one packing all of B alone (256^3 on the Python pool: 259 -> 211 GFLOP/s)
_SHARED_B_MIN = 1 << 20
_SHARED_B_BLOCK = 1 << 20   # bytes of one shared KC x NC block
_CONV_NC = 512   # bytes of a task's packed B block allowed in L2 (deep, narrow GEMMs)
# Up to this many rows (after orientation), a K-contiguous B uses the dot-product schedule.
_DOT_MAX_M = 4


def host_isa() -> str:
    """The best ISA template for the machine running this process."""
    import llvmlite.binding as llvm

    triple = llvm.get_process_triple()
    if triple.startswith(("aarch64", "arm64")):
        return "neon"
    try:
        feats = llvm.get_host_cpu_features()
    except RuntimeError:  # LLVM cannot query some hosts
        return "generic"
    if triple.startswith("arm") and feats.get("neon"):
        return "neon"
    if feats.get("avx512f"):
        return "avx512"
    if feats.get("avx2") and feats.get("fma"):
        return "avx2"
    return "generic"


# ---------------------------------------------------------------------------------------------
# Planning: orientation, register tile, cache blocks, task split (all compile-time)
# ---------------------------------------------------------------------------------------------

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _rup(a: int, b: int) -> int:
    return _cdiv(a, b) * b


@dataclass(frozen=True)
class _Plan:
    batch: int
    M: int
    N: int
    K: int
    sa: tuple[int, int, int]    # (batch, m, k) strides of the A operand
    sb: tuple[int, int, int]    # (batch, k, n)
    sc: tuple[int, int, int]    # (batch, m, n)
    a_arg: int                  # index in %args of the A operand (1 when swapped)
    b_arg: int
    bias: str | None            # in the (possibly swapped) orientation
    MR: int
    NV: int
    VL: int
    KC: int
    MC: int
    NC: int
    TM: int                     # rows per task
    TN: int                     # columns per task
    mt: int                     # row blocks per batch
    nt: int                     # column blocks per batch
    direct_b: bool = False      # read full B panels in place (each is used by one tile only)
    # swapped implicit GEMM (C^T = X^T W^T): kmap/same address the A operand's K axis (A's
    # rows are output pixels, packed MR-wide from the input), B is the weight matrix
    a_implicit: bool = False
    # a_implicit: (hw, pitch, wo) of _Rows; row r is pixel r % hw of image r // hw, whose
    # input starts r // hw input-batch strides (sa[0]) in, its output sc[0] strides in
    a_rows: tuple = ()
    cols: tuple | None = None   # GemmSpec.b_cols
    tapmajor: tuple = ()        # _Rows.tapmajor
    dot_nb: int = 0             # > 0: dot-product schedule, this many columns per tile
    kmap: tuple | None = None   # GemmSpec.b_kmap (never swapped)
    ngrid: tuple | None = None  # GemmSpec.c_ngrid
    epi: tuple = ()             # GemmSpec.epilogue
    resarg: int = -1           # index in %args of the residual operand ("add")
    a_panel: int = 0            # GemmSpec.a_panel (prepacked A)
    b_panel: int = 0            # GemmSpec.b_panel (prepacked B)
    same: tuple | None = None   # GemmSpec.b_same
    shared_arg: int = -1        # >= 0: B packed into the shared buffer, this %args index

    @property
    def NR(self) -> int:
        return self.NV * self.VL

    @property
    def n_tasks(self) -> int:
        return self.batch * self.mt * self.nt


def _tile(isa: _Isa, VL: int, M: int, N: int) -> tuple[int, int]:
    """Register tile (MR, NV) for an M x N output: shrink to tiny sizes, widen the other way."""
    MR, NV = isa.mr, isa.nv
    nv_n = max(1, _cdiv(N, VL))
    if nv_n < NV:                       # narrow N: fewer vectors, taller tile
        NV = nv_n
        MR = max(MR, min(16, (isa.nregs - 2) // NV - 1))
    if M < MR:                          # short M: exactly M rows, wider tile
        MR = max(M, 1)
        NV = max(NV, min(8, nv_n, (isa.nregs - 2) // (MR + 1)))
    # keep accumulators + B vectors + one broadcast inside the register file
    while MR * NV + NV + 1 > isa.nregs and NV > 1:
        NV -= 1
    while MR * NV + NV + 1 > isa.nregs and MR > 1:
        MR -= 1
    return MR, NV


def _tile_efficiency(M: int, N: int, MR: int, NR: int) -> float:
    return (M * N) / (_rup(M, MR) * _rup(N, NR)) if M and N else 1.0


# Thread counts the task split is scored for, and their weights: this project's machines
# have 2 cores; 4 (phones) only breaks near-ties (weighted 0.25 it had chosen 4 tasks, each
# packing its own copy of the implicit operand, where 2 ran ~10 % faster on 2 cores).
_THREAD_WEIGHTS = ((2, 1.0), (4, 0.02))


@functools.lru_cache(maxsize=4096)   # a model compiles the same shapes several times
def _split_tasks(batch: int, M: int, N: int, K: int, MR: int, NR: int, VL: int,
                 NC: int, a_packed: bool = False, b_packed: bool = False,
                 b_shared: bool = False) -> tuple[int, int, int, int]:
    """Rows/columns per task (TM, TN) and block counts (mt, nt).

    Model (cycles): a task costs its FMAs on tile-padded sizes (2 vector FMAs per cycle),
    packing its B columns (K x TN) and A rows (TM x K per NC block), and a fixed overhead.
    With ``b_shared`` (``GemmSpec.share_b``) the mt row blocks of a column block pack its B
    columns once between them.
    The runtime hands each thread a contiguous range of tasks (``_slowest_thread``);
    minimise the busiest thread's work on 2 threads (this project's machines), 4 threads
    only breaking near-ties (``_THREAD_WEIGHTS``).
    """
    if batch == 0 or M == 0 or N == 0:
        return max(M, 1), max(N, 1), 1, 1
    m_tiles, n_tiles = _cdiv(M, MR), _cdiv(N, NR)
    Ke = max(K, 1)

    # per element a task packs or, prepacked, streams from memory (weights of deep layers
    # come from DRAM once per task that reads them: measured as costly as packing)
    a_pack = b_pack = 0.5

    def cost(tm: int, tn: int, mt: int) -> float:
        return (_rup(tm, MR) * _rup(tn, NR) * Ke / (2.0 * VL)
                + b_pack * Ke * tn / (mt if b_shared else 1)
                + a_pack * tm * Ke * _cdiv(tn, NC) + 500.0)

    best = None
    seen = set()
    for mt0 in range(1, min(m_tiles, 64) + 1):
        TM = _rup(_cdiv(M, mt0), MR)
        mt = _cdiv(M, TM)
        for nt0 in range(1, min(n_tiles, 64) + 1):
            TN = _rup(_cdiv(N, nt0), NR)
            nt = _cdiv(N, TN)
            if (mt, nt) in seen:
                continue
            seen.add((mt, nt))
            tasks = batch * mt * nt
            if tasks > 1 << 16 and (mt, nt) != (1, 1):
                continue
            lm, ln = M - (mt - 1) * TM, N - (nt - 1) * TN     # the ragged last blocks
            score = sum(w * p * _slowest_thread(p, batch, mt, nt, cost(TM, TN, mt),
                                                cost(TM, ln, mt), cost(lm, TN, mt),
                                                cost(lm, ln, mt))
                        for p, w in _THREAD_WEIGHTS)
            key = (score, tasks)
            if best is None or key < best[0]:
                best = (key, (TM, TN, mt, nt))
    return best[1]


@dataclass(frozen=True)
class _Rows:
    """The pixel rows of a swapped implicit GEMM (``_Plan.a_implicit``)."""

    MR: int
    NV: int
    hw: int        # output pixels per image
    images: int    # images folded into the rows (1: the batch stays the GEMM batch)
    pitch: int     # > 0: pixel q of an image reads input column (q // wo) * pitch + q % wo
    wo: int        #   (a gridded output walking padded rows); 0: column q
    tapmajor: tuple = ()   # (channels, K block): K ordered (tap, channel), see _tap_blocks


def _slowest_thread(p: int, batch: int, mt: int, nt: int, c_full: float, c_lastcol: float,
                    c_lastrow: float, c_corner: float) -> float:
    """Work of the busiest of ``p`` threads when the runtime hands thread w the contiguous
    tasks [n*w//p, n*(w+1)//p) (``codegen.native_pool`` and ``runtime.threadpool`` both
    do); tasks run batch-major, then row blocks, then column blocks, the last row and
    column blocks being ragged (their costs given)."""
    per_b = mt * nt

    def row(mi: int, cols: int) -> float:     # the first `cols` tasks of row block mi
        full, last = (c_lastrow, c_corner) if mi == mt - 1 else (c_full, c_lastcol)
        return min(cols, nt - 1) * full + (last if cols == nt else 0.0)

    per_batch = (mt - 1) * row(0, nt) + row(mt - 1, nt)

    def before(t: int) -> float:             # total cost of tasks [0, t)
        b, r = divmod(t, per_b)
        q, c = divmod(r, nt)
        return b * per_batch + q * row(0, nt) + row(q, c)

    n = batch * per_b
    bounds = [n * w // p for w in range(p + 1)]
    return max(before(bounds[w + 1]) - before(bounds[w]) for w in range(p))


def _implicit_rows(spec: GemmSpec, isa: _Isa, VL: int, opts: dict) -> _Rows | None:
    """How an implicit-GEMM convolution runs as C^T = X^T W^T -- output channels across the
    vector lanes, output pixels broadcast from MR-row panels packed off the input -- or None
    to keep pixels across the lanes.

    Deep layers have few pixels per image (7x7 = 49, 14x14 = 196): as vector lanes they waste
    a quarter of a 32-wide tile (49 -> 64), and every weight (megabytes, streamed from DRAM)
    serves only one tile width of pixels per pass.  Swapped, the channels fill the lanes,
    a panel of weights stays in L1 for every pixel panel, and each weight is read from
    memory once per task.  A batch folds into the rows (each weight serves every image)
    when MR divides the pixels of an image; a strided convolution's padded-row walk
    (``c_ngrid``) becomes a per-panel input offset when MR divides the output width, so
    only real pixels are computed.  Needs vectors of >= 8 lanes (the transposed store
    writes pixel runs of <= VL)."""
    if spec.b_kmap is None or spec.b_panel or VL < 8 or spec.M == 0 or spec.N == 0:
        return None
    pitch = wo = 0
    hw = spec.N
    if spec.c_ngrid is not None:
        pitch, wo = spec.c_ngrid
        hw = ((spec.N - wo) // pitch + 1) * wo
    want = opts.get("implicit_swap")
    if want is None:
        # measured in resnet18_v1 (docs/performance.md): 7x7 layers gain at batch 1 and 8;
        # 14x14 "same" layers gain at batch 1 only, strided 14x14 outputs lose (28x28 and
        # larger: pixels fill the lanes well, the plain orientation wins)
        want = spec.M >= 2 * VL and (hw <= 64 or (hw <= 256 and spec.batch == 1 and
                                                  spec.b_same is not None))
    if not want:
        return None
    NV = 2 if spec.M > VL else 1
    top = min(VL, (isa.nregs - NV - 1) // NV)
    if "imr" in opts:   # a tuning knob (tests): the panel height
        top = int(opts["imr"])
    shared_a = spec.a_panel > 0 or spec.a_strides[0] == 0
    fold = spec.batch > 1 and shared_a and not (spec.bias and spec.bias_stride_batch)
    tapmajor = _tap_blocks(spec, opts)
    align = spec.b_same[1] if tapmajor else 0   # pixel panels = whole output rows

    def pick(divides: int) -> int:
        # panels of whole rows may be shorter (a 6-wide image: 6 rows of one pixel each)
        ok = [mr for mr in range(max(1, top // 4 if align else top // 2), top + 1)
              if not (divides and divides % mr) and not (wo and wo % mr)
              and not (align and align % mr)]
        if not ok:
            return 0
        return min(ok, key=lambda mr: (_rup(hw, mr) * (1.0 + 1.0 / mr), -mr))

    MR = pick(hw) if fold else 0
    images = spec.batch if MR else 1
    MR = MR or pick(0)
    if not MR and align:          # no panel height fits the rows: no padding rows skipped
        tapmajor, align = (), 0
        MR = pick(hw) if fold else 0
        images = spec.batch if MR else 1
        MR = MR or pick(0)
    if not MR:
        return None
    return _Rows(MR=MR, NV=NV, hw=hw, images=images, pitch=pitch, wo=wo, tapmajor=tapmajor)


def _tap_blocks(spec: GemmSpec, opts: dict) -> tuple:
    """(channels, K block) when a swapped "same" convolution orders K by (tap, channel) --
    its weights prepacked in that order (``prepack_order``) -- so that every K block lies in
    one tap and a pixel panel (one output row) whose tap row is outside the image skips the
    block (resnet18's 7x7 layers: 2 of 7 rows skip a third of K); else ().  Needs weights
    packed ahead of time (``a_panel``, or asked by ``prepack_rows``) and a channel count
    with a block-sized divisor."""
    if spec.b_same is None or opts.get("no_tap_skip") or \
            not (spec.a_panel > 0 or opts.get("_prepack")):
        return ()
    channels = spec.b_kmap[0][0]
    kc = next((b for b in range(min(256, channels), 31, -1)
               if channels % b == 0 and b % 4 == 0), 0)
    return (channels, kc) if kc else ()


def _plan(spec: GemmSpec, isa_name: str, params: dict | None) -> _Plan:
    if isa_name not in _ISA_TABLE:
        raise ValueError(f"gemm_kernel: unknown isa {isa_name!r}; expected one of {ISAS}")
    if spec.dtype not in _DTYPES:
        raise ValueError(f"gemm_kernel: dtype {spec.dtype!r} not supported "
                         f"(float32 or float64)")
    if spec.bias not in (None, "m", "n"):
        raise ValueError(f"gemm_kernel: bias must be None, 'm' or 'n', got {spec.bias!r}")
    for f in ("batch", "M", "N", "K"):
        if getattr(spec, f) < 0:
            raise ValueError(f"gemm_kernel: {f} must be >= 0, got {getattr(spec, f)}")
    isa = _ISA_TABLE[isa_name]
    if params:
        isa = _Isa(**{**isa.__dict__,
                      **{k: v for k, v in params.items() if k in _Isa.__dataclass_fields__}})
    es = _DTYPES[spec.dtype][1]
    VL = isa.vbytes // es
    M, N, K = spec.M, spec.N, spec.K

    # Orientation: C^T = B^T A^T swaps the roles of M and N.  Take it when it wastes less of
    # the register tile (N much smaller than a vector) or when only C's rows are contiguous.
    def score(m: int, n: int, cs_n: int) -> float:
        mr, nv = _tile(isa, VL, m, n)
        return _tile_efficiency(m, n, mr, nv * VL) * (1.0 if cs_n == 1 else 0.75)

    # implicit-GEMM addressing is defined for B rows and C columns, a prepacked A for A's
    # rows: keep the orientation
    fixed = spec.b_kmap is not None or spec.c_ngrid is not None or spec.a_panel > 0 or \
        spec.b_panel > 0 or spec.b_cols is not None
    swap = not fixed and score(N, M, spec.c_strides[1]) > score(M, N, spec.c_strides[2]) * 1.05
    opts = params or {}
    rows = _implicit_rows(spec, isa, VL, opts)
    a_implicit = rows is not None
    swap = swap or a_implicit
    sa, sb, sc = spec.a_strides, spec.b_strides, spec.c_strides
    bias = spec.bias
    a_arg, b_arg = 0, 1
    if swap:
        M, N = N, M
        sa, sb = (sb[0], sb[2], sb[1]), (sa[0], sa[2], sa[1])
        sc = (sc[0], sc[2], sc[1])
        a_arg, b_arg = 1, 0
        bias = {"m": "n", "n": "m", None: None}[bias]

    batch = spec.batch
    extra = dict(kmap=spec.b_kmap, ngrid=spec.c_ngrid, epi=spec.epilogue, cols=spec.b_cols,
                 resarg=(4 if spec.bias else 3) if "add" in spec.epilogue else -1,
                 a_panel=spec.a_panel, b_panel=spec.b_panel, same=spec.b_same)
    if a_implicit:   # pixels as rows: (images x hw) real pixels, channels as columns
        M = rows.images * rows.hw
        batch = spec.batch // rows.images
        extra.update(ngrid=None, a_panel=0, b_panel=spec.a_panel, a_implicit=True,
                     a_rows=(rows.hw, rows.pitch, rows.wo), tapmajor=rows.tapmajor)
        if rows.tapmajor:   # (channel, ky, kx) digits -> (ky, kx, channel)
            extra["kmap"] = spec.b_kmap[1:] + spec.b_kmap[:1]
    if (sb[1] == 1 and sb[2] != 1 and 0 < M <= _DOT_MAX_M and K >= 2 * VL and not fixed
            and not opts.get("no_dot")):
        # Few rows against a K-contiguous B (FullyConnected weights at small batch): packing
        # B would cost as much as the whole product.  Dot products along K instead: B is
        # streamed once, in place, M x NB vector accumulators reduced at the end.
        nb = max(1, min(8, (isa.nregs - M - 2) // (M + 1)))
        TM, TN, mt, nt = _split_tasks(spec.batch, M, N, K, M, nb, VL, 1 << 30)
        return _Plan(batch=spec.batch, M=M, N=N, K=K, sa=tuple(sa), sb=tuple(sb),
                     sc=tuple(sc), a_arg=a_arg, b_arg=b_arg, bias=bias, MR=M, NV=1, VL=VL,
                     KC=K, MC=M, NC=TN, TM=TM, TN=TN, mt=mt, nt=nt, dot_nb=nb, **extra)

    MR, NV = (rows.MR, rows.NV) if a_implicit else _tile(isa, VL, M, N)
    if a_implicit:
        if spec.a_panel not in (0, NV * VL):
            raise ValueError(f"gemm_kernel: A packed in panels of {spec.a_panel} rows, the "
                             f"plan for this shape reads it as {NV * VL}-column panels of "
                             "its transpose (see prepack_rows)")
    elif spec.a_panel:
        if spec.a_panel != MR:
            raise ValueError(f"gemm_kernel: A packed in panels of {spec.a_panel} rows, the "
                             f"plan for this shape uses {MR} (see prepack_rows)")
    NR = NV * VL
    if spec.b_panel and spec.b_panel != NR:
        raise ValueError(f"gemm_kernel: B packed in panels of {spec.b_panel} columns, the "
                         f"plan for this shape uses {NR} (see prepack_cols)")
    # scale KC so the B micro-panel keeps its byte size when NR changes
    KC = max(16, min(2048, isa.kc * (isa.nv * (isa.vbytes // 4)) // NR))
    KC = _rup(KC, 4)
    # B packed into a buffer shared by the tasks (GemmSpec.share_b): plain packed B only
    share_min = opts.get("share_min", _SHARED_B_MIN)
    share = (spec.share_b and not extra["b_panel"] and extra["kmap"] is None
             and spec.b_cols is None and not a_implicit and not opts.get("no_share")
             and share_min <= max(K, 1) * N * es
             and batch * max(K, 1) * _rup(N, NR) * es <= _SHARED_B_MAX)
    # a shared B block is streamed by both cores at once: keep it within one core's L2
    # (measured at 2048^3: NC 2048 (2 MiB blocks) 47.9 ms, NC 1024 43.3 ms)
    nc_max = max(NR, _SHARED_B_BLOCK // (KC * es) // NR * NR) if share else isa.nc
    TM, TN, mt, nt = _split_tasks(batch, M, N, K, MR, NR, VL, min(isa.nc, nc_max),
                                  a_packed=extra["a_panel"] > 0,
                                  b_packed=extra["b_panel"] > 0)
    # Share only where tasks packing their own B would pack columns twice (row blocks) or
    # each pack a big A whole (column blocks): else nothing is saved, and a thread that
    # starts late leaves the other packing B alone (MLP 784-512-512-10 training step:
    # 2.6-3.1 ms unshared vs 4.0 ms shared with 128-row A).
    share = share and (mt > 1 or M * max(K, 1) * es >= share_min)
    if share:
        TM, TN, mt, nt = _split_tasks(batch, M, N, K, MR, NR, VL, min(isa.nc, nc_max),
                                      a_packed=extra["a_panel"] > 0,
                                      b_packed=extra["b_panel"] > 0, b_shared=True)
    if "split" in opts:   # a tuning knob (benchmarks, tests): (row blocks, column blocks)
        TM = _rup(_cdiv(M, int(opts["split"][0])), MR)
        TN = _rup(_cdiv(N, int(opts["split"][1])), NR)
        mt, nt = _cdiv(M, TM), _cdiv(N, TN)
    # A task with a single row of tiles uses each B panel once: packing would only add a copy.
    direct_b = (sb[2] == 1 and TM <= MR and spec.b_kmap is None and not spec.b_panel
                and spec.b_cols is None
                and not opts.get("no_direct"))
    if direct_b:
        # B rows are read in place, NR wide: short K blocks keep neighbouring panels on the
        # same DRAM pages / prefetch streams (measured: 64 beats 256 by ~1.3x at M <= 8).
        KC = min(KC, 64)
    elif K > KC and not a_implicit:
        # Narrow tasks (deep convolutions: K = 2304-4608, a few dozen columns): each K block
        # round-trips every C tile through memory (masked for c_ngrid). Take K blocks as
        # long as the task's packed B block stays within half of L2; B micro-panels then
        # stream from L2, which measured faster (resnet18 stage 4: 148 -> 180 GFLOP/s).
        KC = max(KC, min(K, (_L2_BUDGET // es) // max(_rup(min(TN, isa.nc), NR), 1)))
    # Even cache blocks inside a task, rounded to the tile.
    kb = _cdiv(max(K, 1), KC)
    KCe = max(1, _cdiv(max(K, 1), kb))
    if a_implicit and rows.tapmajor:   # blocks inside one tap
        KCe = rows.tapmajor[1]
    MCe = _rup(_cdiv(TM, _cdiv(TM, isa.mc)), MR)
    # implicit-GEMM B blocks (convolutions) are packed from the input per block: keep a
    # block within L2 (measured: NC 512 vs 2048 on a 64->64 56x56 conv, +6%)
    nc = min(isa.nc, _CONV_NC) if spec.b_kmap is not None else min(isa.nc, nc_max)
    nc = int(opts.get("nc", nc)) if "nc" in opts else nc
    NCe = _rup(_cdiv(TN, _cdiv(TN, nc)), NR)
    # only worth its counters where several row blocks read the same columns
    shared_arg = -1
    if share and mt > 1 and not direct_b and K > 0:
        shared_arg = 3 + (1 if spec.bias else 0) + (1 if "add" in spec.epilogue else 0)
    return _Plan(batch=batch, M=M, N=N, K=K, sa=tuple(sa), sb=tuple(sb), sc=tuple(sc),
                 a_arg=a_arg, b_arg=b_arg, bias=bias, MR=MR, NV=NV, VL=VL, KC=KCe, MC=MCe,
                 NC=NCe, TM=TM, TN=TN, mt=mt, nt=nt, direct_b=direct_b,
                 shared_arg=shared_arg, **extra)


# ---------------------------------------------------------------------------------------------
# IR text helpers
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Kernel emission
# ---------------------------------------------------------------------------------------------

class _Emitter:
    def __init__(self, name: str, spec: GemmSpec, plan: _Plan, isa: str,
                 plan_params: dict | None = None):
        self.name, self.spec, self.p, self.isa = name, spec, plan, isa
        self.T, self.es = _DTYPES[spec.dtype]
        self.VL = plan.VL
        self.V = f"<{self.VL} x {self.T}>"
        self.valign = self.VL * self.es
        self.decls: set[str] = set()
        self.fma_kind = _ISA_TABLE[isa].fma
        # elements of a prepacked A panel prefetched ahead of the micro-kernel (0: none)
        self.a_prefetch = int((plan_params or {}).get("a_prefetch", _A_PREFETCH)) \
            if plan.a_panel else 0
        # elements of the prepacked weight panel (B of a swapped implicit plan) prefetched
        # ahead of the micro-kernel, one request per cache line
        self.b_prefetch = int((plan_params or {}).get("b_prefetch", _B_PREFETCH)) \
            if plan.b_panel and plan.a_implicit else 0
        if self.a_prefetch or self.b_prefetch:
            self.decls.add("declare void @llvm.prefetch.p0(ptr, i32, i32, i32)")
        vec = _VectorFMA(self.T, self.VL, self.es, self.fma_kind, self.decls, _FM)
        self.splat, self.vfma = vec.splat, vec.fma

    def sym(self, suffix: str) -> str:
        return _ident(f"{self.name}.{suffix}")

    # --- scalar / vector helpers ---
    def splat_const(self, x: float) -> str:
        c = _fconst(x, self.spec.dtype)
        return "<" + ", ".join(f"{self.T} {c}" for _ in range(self.VL)) + ">"

    # --- packing ---
    def emit_pack(self, which: str) -> str:
        """Pack an `outer` x kc block into panels of W = NR (B) or MR (A) outer indices:
        ``dst[q][k][w] = src[(q*W + w)*so + k*sk]``, zero-padding the last, partial panel.

        B: outer = n (so = sb_n, sk = sb_k), W = NR.  A: outer = m (so = sa_m, sk = sa_k),
        W = MR.  Three ways to copy a full panel, picked by the (constant) strides:
        so == 1 (each k is a contiguous W-run: vector copies), sk == 1 (each outer index is a
        contiguous k-run: load VL x VL blocks and transpose them in registers, so every
        cache line read is used whole), else scalar gathers.
        """
        p, T, es, VL = self.p, self.T, self.es, self.VL
        if p.kmap and (which == "a") == p.a_implicit:
            return self.emit_pack_rows(which)
        if p.cols and which == "b":
            return self.emit_pack_cols()
        if which == "b":
            W, so, sk = p.NR, p.sb[2], p.sb[1]
        else:
            W, so, sk = p.MR, p.sa[1], p.sa[2]
        f = _Fn(f"define internal void {self.sym('pack' + which)}(ptr noalias %src, "
                f"ptr noalias %dst, i64 %nouter, i64 %kc) {_FN_ATTRS}")
        # packed panels start at multiples of W*kc elements of a 64-byte aligned buffer
        base_al = 64 if W * es % 64 == 0 else math.gcd(W * es, 64)

        def al(elems: int) -> int:
            return math.gcd(base_al, elems * es) if elems else base_al

        def vty(n: int) -> str:
            return f"<{n} x {T}>"

        def copy_row_scalar(sr: str, dr: str) -> None:
            """dst[w] = src[w*so] for w < W (one k)."""
            if so == 1:
                for w0 in range(0, W, VL):
                    n = min(VL, W - w0)
                    x = f.op(f"load {vty(n)}, ptr {f.gep(T, sr, w0)}, align {es}")
                    f.ins(f"store {vty(n)} {x}, ptr {f.gep(T, dr, w0, True)}, align {es}")
                return
            for w in range(W):
                x = f.op(f"load {T}, ptr {f.gep(T, sr, w * so)}, align {es}")
                f.ins(f"store {T} {x}, ptr {f.gep(T, dr, w, True)}, align {es}")

        def full_panel(s: str, d: str) -> None:
            if sk == 1 and so != 1 and VL > 1:
                nkb = f.udiv("%kc", VL)
                with f.loop(0, nkb) as kb:
                    k0 = f.mul(kb, VL)
                    sb0 = f.gep(T, s, k0)
                    db0 = f.gep(T, d, f.mul(k0, W), True)
                    for w0 in range(0, W, VL):
                        rows = min(VL, W - w0)
                        vecs = [f.op(f"load {self.V}, ptr {f.gep(T, sb0, (w0 + r) * so)}, "
                                     f"align {es}") for r in range(rows)]
                        cols = self.transpose(f, vecs)
                        for kk in range(VL):
                            x = cols[kk]
                            if rows < VL:
                                mask = ", ".join(f"i32 {i}" for i in range(rows))
                                x = f.op(f"shufflevector {self.V} {x}, {self.V} poison, "
                                         f"<{rows} x i32> <{mask}>")
                            dst = f.gep(T, db0, kk * W + w0, True)
                            f.ins(f"store {vty(rows)} {x}, ptr {dst}, "
                                  f"align {math.gcd(al(W), al(w0))}")
                kstart = f.mul(nkb, VL)
            else:
                kstart = 0
            with f.loop(kstart, "%kc") as k:
                copy_row_scalar(f.gep(T, s, f.mul(k, sk)), f.gep(T, d, f.mul(k, W), True))

        nfull = f.udiv("%nouter", W)
        with f.loop(0, nfull) as q:
            s = f.gep(T, "%src", f.mul(q, W * so))
            d = f.gep(T, "%dst", f.mul(f.mul(q, W), "%kc"), inb=True)
            full_panel(s, d)
        rem = f.urem("%nouter", W)
        has = f.op(f"icmp sgt i64 {rem}, 0")
        with f.if_(has):
            s = f.gep(T, "%src", f.mul(nfull, W * so))
            d = f.gep(T, "%dst", f.mul(f.mul(nfull, W), "%kc"), inb=True)
            with f.loop(0, "%kc") as k:
                sr = f.gep(T, s, f.mul(k, sk))
                dr = f.gep(T, d, f.mul(k, W), inb=True)
                with f.loop(0, rem) as w:
                    x = f.op(f"load {T}, ptr {f.gep(T, sr, f.mul(w, so))}, align {es}")
                    f.ins(f"store {T} {x}, ptr {f.gep(T, dr, w, True)}, align {es}")
                with f.loop(rem, W) as w:
                    f.ins(f"store {T} 0.0, ptr {f.gep(T, dr, w, True)}, align {es}")
        f.ins("ret void")
        return f.render()

    def b_row_offset(self, f: _Fn, k, kmap=None):
        """Element offset of B row ``k`` under ``b_kmap`` (digits of k times their strides;
        ``kmap``: other digits, e.g. ``b_cols`` over B's columns)."""
        kmap = kmap or self.p.kmap
        kmap = tuple(tuple(d) + ((1, 0) if len(d) == 2 else ()) for d in kmap)

        def term(v, stride, ph, pstride):
            if ph == 1:
                return f.mul(v, stride)
            return f.add(f.mul(f.udiv(v, ph), stride), f.mul(f.urem(v, ph), pstride))

        off, rest = 0, k
        for radix, stride, ph, pstride in reversed(kmap[1:]):
            off = f.add(off, term(f.urem(rest, radix), stride, ph, pstride))
            rest = f.udiv(rest, radix)
        return f.add(off, term(rest, *kmap[0][1:]))

    def row_table(self, f: _Fn, shift: int = 0) -> str:
        """A stack table of the element offsets (minus ``shift``) of B rows k0..k0+kc-1
        (``b_row_offset``), filled once per packed block."""
        table = f._name("rows")
        f.allocas.append(f"  {table} = alloca [{max(self.p.KC, 1)} x i64], align 16")
        with f.loop(0, "%kc") as k:
            off = f.sub(self.b_row_offset(f, f.add("%k0", k)), shift)
            f.ins(f"store i64 {off}, ptr {f.gep('i64', table, k, True)}, align 8")
        return table

    def pixel_offset(self, f: _Fn, pix) -> tuple:
        """(input element offset, pixel within its image) of row ``pix`` of a swapped
        implicit plan (``_Plan.a_rows``): images a batch stride apart, gridded outputs read
        their padded input rows."""
        hw, pitch, wo = self.p.a_rows
        img, q = f.udiv(pix, hw), f.urem(pix, hw)
        col = f.add(f.mul(f.udiv(q, wo), pitch), f.urem(q, wo)) if pitch else q
        return f.add(f.mul(img, self.p.sa[0]), col), q

    def panel_source(self, f: _Fn, which: str, first, W: int) -> tuple:
        """(source pointer, first pixel within its image) of the panel starting at panel
        index ``first`` (relative to %n0)."""
        if which == "a" and self.p.a_implicit:
            off, q = self.pixel_offset(f, f.add("%n0", f.mul(first, W)))
            return f.gep(self.T, "%src", off), q
        return f.gep(self.T, "%src", f.mul(first, W)), f.add("%n0", f.mul(first, W))

    def tap_masks(self, f: _Fn, pix: str, splat) -> tuple:
        """(rows, cols): per ky and per kx of the ``same`` geometry, the lanes of the pixel
        vector ``pix`` (<VL x i32> pixel indices within the image) whose tap input row /
        column lies inside the image (their AND is the lane mask of a tap)."""
        H, W, kh, kw, dh, dw, ph, pw = self.p.same
        vi, mk = f"<{self.VL} x i32>", f"<{self.VL} x i1>"
        oy = f.op(f"udiv {vi} {pix}, {splat(W)}")
        ox = f.op(f"urem {vi} {pix}, {splat(W)}")

        def inside(v, lo_shift, n):
            c = f.op(f"add {vi} {v}, {splat(lo_shift)}")
            ge = f.op(f"icmp sge {vi} {c}, zeroinitializer")
            return f.op(f"and {mk} {ge}, {f.op(f'icmp slt {vi} {c}, {splat(n)}')}")

        return ([inside(oy, ky * dh - ph, H) for ky in range(kh)],
                [inside(ox, kx * dw - pw, W) for kx in range(kw)])

    def emit_pack_cols(self) -> str:
        """Pack B for ``b_cols`` (a "same" convolution's weight gradient, dW = dY X^T):
        ``dst[q][k][w] = x[col(n0 + q*NR + w) + k0 + k]`` with the tap's out-of-image pixels
        0.  Each column is a contiguous, masked run of pixels: VL columns x VL pixels are
        loaded as VL masked vectors and transposed in registers into VL packed rows.  The
        masks (per tap and pixel vector of the block) and the columns' offsets and taps (per
        panel) come from small tables; columns past the block read a tap whose masks are 0,
        and a last, partial pixel vector is packed with scalar code."""
        p, T, es, VL, NR = self.p, self.T, self.es, self.VL, self.p.NR
        H, W, kh, kw, dh, dw, ph, pw = p.same
        taps = kh * kw
        mload, _ = self.masked_decls()
        vi, mk, mi = f"<{VL} x i32>", f"<{VL} x i1>", f"i{VL}"
        iota = "<" + ", ".join(f"i32 {i}" for i in range(VL)) + ">"
        f = _Fn(f"define internal void {self.sym('packb')}(ptr noalias %src, "
                f"ptr noalias %dst, i64 %nouter, i64 %kc, i64 %k0, i64 %n0) {_FN_ATTRS}")
        maxv = max(1, _cdiv(max(p.KC, 1), VL))

        def splat(x) -> str:
            v = f.op(f"insertelement {vi} poison, i32 {x}, i64 0")
            return f.op(f"shufflevector {vi} {v}, {vi} poison, {vi} zeroinitializer")

        masks = f._name("masks")
        f.allocas.append(f"  {masks} = alloca [{(taps + 1) * maxv} x {mi}], align 16")
        nkv = f.udiv("%kc", VL)
        with f.loop(0, nkv) as kv:      # lanes of each pixel vector inside the image, per tap
            p0 = f.op(f"trunc i64 {f.add('%k0', f.mul(kv, VL))} to i32")
            rows, cols = self.tap_masks(f, f.op(f"add {vi} {splat(p0)}, {iota}"), splat)
            for t in range(taps + 1):
                bits = "0" if t == taps else f.op(
                    f"bitcast {mk} {f.op(f'and {mk} {rows[t // kw]}, {cols[t % kw]}')} to {mi}")
                f.ins(f"store {mi} {bits}, ptr {f.gep(mi, masks, f.add(kv, t * maxv), True)}, "
                      "align 2")
        coltab, taptab = f._name("cols"), f._name("taps")
        f.allocas.append(f"  {coltab} = alloca [{NR} x i64], align 16")
        f.allocas.append(f"  {taptab} = alloca [{NR} x i64], align 16")
        end = f.add("%n0", "%nouter")
        with f.loop(0, f.udiv(f.add("%nouter", NR - 1), NR)) as q:
            with f.loop(0, NR) as w:     # this panel's columns: input offset and tap
                n = f.add(f.add("%n0", f.mul(q, NR)), w)
                ok = f.op(f"icmp ult i64 {n}, {end}")
                off = f.add(self.b_row_offset(f, n, p.cols), f.add("%k0", -(ph * W + pw)))
                off = f.op(f"select i1 {ok}, i64 {off}, i64 0")
                tap = f.op(f"select i1 {ok}, i64 {f.urem(n, taps)}, i64 {taps}")
                f.ins(f"store i64 {off}, ptr {f.gep('i64', coltab, w, True)}, align 8")
                f.ins(f"store i64 {tap}, ptr {f.gep('i64', taptab, w, True)}, align 8")
            dq = f.gep(T, "%dst", f.mul(f.mul(q, NR), "%kc"), True)
            with f.loop(0, nkv) as kv:
                for g0 in range(0, NR, VL):
                    vecs = []
                    for w in range(g0, g0 + VL):
                        off = f.op(f"load i64, ptr {f.gep('i64', coltab, w, True)}, align 8")
                        tap = f.op(f"load i64, ptr {f.gep('i64', taptab, w, True)}, align 8")
                        slot = f.gep(mi, masks, f.add(f.mul(tap, maxv), kv), True)
                        m = f.op(f"bitcast {mi} {f.op(f'load {mi}, ptr {slot}, align 2')} "
                                 f"to {mk}")
                        src = f.gep(T, "%src", f.add(off, f.mul(kv, VL)))
                        vecs.append(f.op(f"call {self.V} {mload}(ptr {src}, i32 {es}, {mk} "
                                         f"{m}, {self.V} zeroinitializer)"))
                    for i, row in enumerate(self.transpose(f, vecs)):
                        dst = f.gep(T, dq, f.add(f.mul(f.add(f.mul(kv, VL), i), NR), g0),
                                    True)
                        f.ins(f"store {self.V} {row}, ptr {dst}, align {es}")
            with f.loop(f.mul(nkv, VL), "%kc") as k:     # the last, partial pixel vector
                pk = f.add("%k0", k)
                oy, ox = f.udiv(pk, W), f.urem(pk, W)
                with f.loop(0, NR) as w:
                    off = f.op(f"load i64, ptr {f.gep('i64', coltab, w, True)}, align 8")
                    tap = f.op(f"load i64, ptr {f.gep('i64', taptab, w, True)}, align 8")
                    iy = f.add(oy, f.sub(f.mul(f.udiv(tap, kw), dh), ph))
                    ix = f.add(ox, f.sub(f.mul(f.urem(tap, kw), dw), pw))
                    ok = [f.op(f"icmp ult i64 {tap}, {taps}"),
                          f.op(f"icmp sge i64 {iy}, 0"), f.op(f"icmp slt i64 {iy}, {H}"),
                          f.op(f"icmp sge i64 {ix}, 0"), f.op(f"icmp slt i64 {ix}, {W}")]
                    c = ok[0]
                    for o in ok[1:]:
                        c = f.op(f"and i1 {c}, {o}")
                    dst = f.gep(T, dq, f.add(f.mul(k, NR), w), True)
                    f.ins(f"store {T} 0.0, ptr {dst}, align {es}")
                    with f.if_(c):
                        x = f.op(f"load {T}, ptr {f.gep(T, '%src', f.add(off, k))}, "
                                 f"align {es}")
                        f.ins(f"store {T} {x}, ptr {dst}, align {es}")
        f.ins("ret void")
        return f.render()

    def emit_pack_rows(self, which: str) -> str:
        """Pack the implicit operand for ``b_kmap`` (implicit im2col): ``dst[q][k][w] =
        src[row(k0 + k) + q*W + w]`` -- every row of the input matrix is a contiguous run of
        the input at a computed offset, copied with vector loads; the last, partial panel is
        zero-padded.  W = NR for B, MR for the A of a swapped plan (``a_implicit``: the same
        runs, pixels across the panel).  The kc row offsets go to a table first, so panels
        can be written one after the other (k-outer order would write ~nc/NR streams whose
        addresses alias in L1)."""
        p, T, es, VL = self.p, self.T, self.es, self.VL
        W = p.MR if which == "a" else p.NR
        if p.same is not None:
            return self.emit_pack_same(which)
        f = _Fn(f"define internal void {self.sym('pack' + which)}(ptr noalias %src, "
                f"ptr noalias %dst, i64 %nouter, i64 %kc, i64 %k0, i64 %n0) {_FN_ATTRS}")
        al = 64 if W * es % 64 == 0 else math.gcd(W * es, 64)
        table = self.row_table(f)
        nfull = f.udiv("%nouter", W)
        rem = f.urem("%nouter", W)
        with f.loop(0, nfull) as q:
            sq, _ = self.panel_source(f, which, q, W)
            dq = f.gep(T, "%dst", f.mul(f.mul(q, W), "%kc"), True)
            with f.loop(0, "%kc") as k:
                off = f.op(f"load i64, ptr {f.gep('i64', table, k, True)}, align 8")
                sr, dr = f.gep(T, sq, off), f.gep(T, dq, f.mul(k, W), True)
                for w0 in range(0, W, VL):
                    n = min(VL, W - w0)
                    x = f.op(f"load <{n} x {T}>, ptr {f.gep(T, sr, w0)}, align {es}")
                    f.ins(f"store <{n} x {T}> {x}, ptr {f.gep(T, dr, w0, True)}, "
                          f"align {math.gcd(al, w0 * es) if w0 else al}")
        has = f.op(f"icmp sgt i64 {rem}, 0")
        with f.if_(has):
            sq, _ = self.panel_source(f, which, nfull, W)
            dq = f.gep(T, "%dst", f.mul(f.mul(nfull, W), "%kc"), True)
            with f.loop(0, "%kc") as k:
                off = f.op(f"load i64, ptr {f.gep('i64', table, k, True)}, align 8")
                sr, dr = f.gep(T, sq, off), f.gep(T, dq, f.mul(k, W), True)
                with f.loop(0, rem) as w:
                    x = f.op(f"load {T}, ptr {f.gep(T, sr, w)}, align {es}")
                    f.ins(f"store {T} {x}, ptr {f.gep(T, dr, w, True)}, align {es}")
                with f.loop(rem, W) as w:
                    f.ins(f"store {T} 0.0, ptr {f.gep(T, dr, w, True)}, align {es}")
        f.ins("ret void")
        return f.render()

    def emit_pack_same(self, which: str) -> str:
        """Pack for ``b_same``: rows as ``emit_pack_rows`` over the unpadded input, each
        vector one masked load whose mask drops the lanes outside the image: output rows the
        tap's input row misses (a column range per row) and columns whose tap falls left or
        right of the image (``ox < L`` or ``ox >= W - R``, from a per-panel vector of the
        lanes' output columns) -- those would otherwise read the neighbouring row.  Panels
        NR wide (B) or MR wide (A of a swapped plan; a last, partial vector is masked to
        the panel and stored short)."""
        p, T, es, VL = self.p, self.T, self.es, self.VL
        NR = p.MR if which == "a" else p.NR
        H, W, kh, kw, dh, dw, ph, pw = p.same
        mload, _ = self.masked_decls()
        vi, mk = f"<{VL} x i32>", f"<{VL} x i1>"
        iota = "<" + ", ".join(f"i32 {i}" for i in range(VL)) + ">"
        f = _Fn(f"define internal void {self.sym('pack' + which)}(ptr noalias %src, "
                f"ptr noalias %dst, i64 %nouter, i64 %kc, i64 %k0, i64 %n0) {_FN_ATTRS}")
        table = self.row_table(f, ph * W + pw)

        def splat32(x, is32: bool = False) -> str:
            t = f.op(f"trunc i64 {x} to i32") if not (isinstance(x, int) or is32) else str(x)
            v = f.op(f"insertelement {vi} poison, i32 {t}, i64 0")
            return f.op(f"shufflevector {vi} {v}, {vi} poison, {vi} zeroinitializer")

        def smax(a, b):
            c = f.op(f"icmp sgt i64 {a}, {b}")
            return f.op(f"select i1 {c}, i64 {a}, i64 {b}")

        def row_geometry(kabs):
            """(valid column range [vlo, vhi), valid output columns [L, W - R)) of a row."""
            if which == "a" and p.tapmajor:
                kabs = f.udiv(kabs, p.tapmajor[0])     # the tap of a (tap, channel) row
            kx = f.urem(kabs, kw)
            ky = f.urem(f.udiv(kabs, kw), kh)
            top = f.sub(ph, f.mul(ky, dh))                 # output rows oy < top: no input
            vlo = f.mul(smax(top, 0), W)
            vhi = f.mul(f.smin(f.add(top, H), H), W)
            left = f.sub(pw, f.mul(kx, dw))
            return vlo, vhi, smax(left, 0), f.sub(W, smax(f.sub(0, left), 0))

        # Lane masks per panel and tap, computed once per panel (a few compares per tap and
        # vector) into a small table of iVL bit masks; the copy loop then only looks up the
        # row's tap (a per-block table) and its mask: the per-row compares had been half of
        # the packing instructions, and packing is ~10 % of a 64-channel layer.
        taps = kh * kw
        nvec = -(-NR // VL)
        ti = f._name("tap")
        f.allocas.append(f"  {ti} = alloca [{max(p.KC, 1)} x i32], align 16")
        with f.loop(0, "%kc") as k:
            kabs = f.add("%k0", k)
            # rows are (channel, tap), or (tap, channel) in a tap-major plan
            tap = f.udiv(kabs, p.tapmajor[0]) if which == "a" and p.tapmajor else \
                f.urem(kabs, taps)
            t32 = f.op(f"trunc i64 {tap} to i32")
            f.ins(f"store i32 {t32}, ptr {f.gep('i32', ti, k, True)}, align 4")
        mt = f._name("masks")
        mi = f"i{VL}"
        f.allocas.append(f"  {mt} = alloca [{taps * nvec} x {mi}], align 16")

        def panel_masks(nb) -> None:
            """mask[tap][j]: lanes of vector j whose tap input lies inside the image."""
            nb32 = f.op(f"trunc i64 {nb} to i32")
            for j, v0 in enumerate(range(0, NR, VL)):
                pix = f.op(f"add {vi} {splat32(f.op(f'add i32 {nb32}, {v0}'), True)}, {iota}")
                nl = min(VL, NR - v0)
                tail = f.op(f"icmp slt {vi} {iota}, {splat32(nl)}") if nl < VL else None
                rows, cols = self.tap_masks(f, pix, splat32)
                for ky in range(kh):
                    for kx in range(kw):
                        m = f.op(f"and {mk} {rows[ky]}, {cols[kx]}")
                        if tail is not None:
                            m = f.op(f"and {mk} {m}, {tail}")
                        bits = f.op(f"bitcast {mk} {m} to {mi}")
                        slot = f.gep(mi, mt, (ky * kw + kx) * nvec + j, True)
                        f.ins(f"store {mi} {bits}, ptr {slot}, align 2")

        nfull = f.udiv("%nouter", NR)
        rem = f.urem("%nouter", NR)
        with f.loop(0, nfull) as q:
            sq, nb = self.panel_source(f, which, q, NR)   # nb: the panel's first pixel
            dq = f.gep(T, "%dst", f.mul(f.mul(q, NR), "%kc"), True)
            panel_masks(nb)
            with f.loop(0, "%kc") as k:
                off = f.op(f"load i64, ptr {f.gep('i64', table, k, True)}, align 8")
                tap = f.op(f"load i32, ptr {f.gep('i32', ti, k, True)}, align 4")
                row = f.gep(mi, mt, f.mul(f.op(f"zext i32 {tap} to i64"), nvec), True)
                sr, dr = f.gep(T, sq, off), f.gep(T, dq, f.mul(k, NR), True)
                for j, v0 in enumerate(range(0, NR, VL)):
                    bits = f.op(f"load {mi}, ptr {f.gep(mi, row, j, True)}, align 2")
                    m = f.op(f"bitcast {mi} {bits} to {mk}")
                    nl = min(VL, NR - v0)
                    x = f.op(f"call {self.V} {mload}(ptr {f.gep(T, sr, v0)}, i32 {es}, "
                             f"{mk} {m}, {self.V} zeroinitializer)")
                    if nl < VL:   # the panel ends inside this vector
                        lanes = ", ".join(f"i32 {i}" for i in range(nl))
                        x = f.op(f"shufflevector {self.V} {x}, {self.V} poison, "
                                 f"<{nl} x i32> <{lanes}>")
                    f.ins(f"store <{nl} x {T}> {x}, ptr {f.gep(T, dr, v0, True)}, "
                          f"align {es}")
        has = f.op(f"icmp sgt i64 {rem}, 0")
        with f.if_(has):
            sq, nb = self.panel_source(f, which, nfull, NR)
            dq = f.gep(T, "%dst", f.mul(f.mul(nfull, NR), "%kc"), True)
            with f.loop(0, "%kc") as k:
                off = f.op(f"load i64, ptr {f.gep('i64', table, k, True)}, align 8")
                vlo, vhi, xlo, xhi = row_geometry(f.add("%k0", k))
                sr, dr = f.gep(T, sq, off), f.gep(T, dq, f.mul(k, NR), True)
                with f.loop(0, NR) as w:
                    f.ins(f"store {T} 0.0, ptr {f.gep(T, dr, w, True)}, align {es}")
                with f.loop(0, rem) as w:
                    n = f.add(nb, w)
                    ox = f.urem(n, W)
                    ok = [f.op(f"icmp sge i64 {n}, {vlo}"), f.op(f"icmp slt i64 {n}, {vhi}"),
                          f.op(f"icmp sge i64 {ox}, {xlo}"), f.op(f"icmp slt i64 {ox}, {xhi}")]
                    c = f.op(f"and i1 {ok[0]}, {ok[1]}")
                    c = f.op(f"and i1 {c}, {ok[2]}")
                    with f.if_(f.op(f"and i1 {c}, {ok[3]}")):
                        x = f.op(f"load {T}, ptr {f.gep(T, sr, w)}, align {es}")
                        f.ins(f"store {T} {x}, ptr {f.gep(T, dr, w, True)}, align {es}")
        f.ins("ret void")
        return f.render()

    def transpose(self, f: _Fn, rows: list[str]) -> list[str]:
        return _transpose(f, rows, self.VL, self.V)

    # --- micro-kernel + epilogue ---
    def emit_kernel(self, direct: bool = False, unroll: int = 4) -> str:
        """The MR x NR micro-kernel over one kc-long A panel and B panel, then the epilogue.

        Packed B advances NR elements per k (aligned vector loads); `direct` reads B in place,
        advancing a row (sb_k) per k -- used when a B panel would be used only once."""
        p, T, V, es, VL = self.p, self.T, self.V, self.es, self.VL
        MR, NV, NR = p.MR, p.NV, p.NR
        bstep, bal = (p.sb[1], es) if direct else (NR, self.valign)
        if p.b_panel:   # caller-packed panels: the buffer's alignment is the caller's
            bal = es
        fname = "kernd" if direct else "kern"
        f = _Fn(f"define internal void {self.sym(fname)}(ptr noalias %a, ptr noalias %b, "
                f"i64 %kc, ptr %c, i64 %mr, i64 %nr, i1 %first, ptr %bias, "
                f"ptr noalias %tile, i1 %last, i64 %col, ptr %res) {_FN_ATTRS}")

        def k_loop(tag: str, count: str, init, pa0, pb0, pred: str, U: int):
            """Counted loop over `count` iterations of U k-steps; returns final accs, pa, pb."""
            head, body, done = f.label_name(tag + "h"), f.label_name(tag + "b"), \
                f.label_name(tag + "x")
            f.br(head)
            f.label(head)
            iv = f._name("k")
            pa, pb = f._name("pa"), f._name("pb")
            acc = [[f._name("acc") for _ in range(NV)] for _ in range(MR)]
            nxt_i, nxt_pa, nxt_pb = f._name("k"), f._name("pa"), f._name("pb")
            nacc = [[None] * NV for _ in range(MR)]
            f.ins(f"{iv} = phi i64 [0, %{pred}], [{nxt_i}, %{body}]")
            f.ins(f"{pa} = phi ptr [{pa0}, %{pred}], [{nxt_pa}, %{body}]")
            f.ins(f"{pb} = phi ptr [{pb0}, %{pred}], [{nxt_pb}, %{body}]")
            phis_at = len(f.body)
            c = f.op(f"icmp ult i64 {iv}, {count}")
            f.ins(f"br i1 {c}, label %{body}, label %{done}")
            f.label(body)
            cur = [row[:] for row in acc]
            if self.a_prefetch and U > 1:
                # a prepacked A panel streams from memory (weights larger than the caches):
                # ask for its lines ahead of the FMAs
                ahead = f.gep(T, pa, self.a_prefetch)
                f.ins(f"call void @llvm.prefetch.p0(ptr {ahead}, i32 0, i32 3, i32 1)")
            for u in range(U):
                if self.b_prefetch:
                    for line in range(0, NR * es, 64):
                        ahead = f.gep(T, pb, u * bstep + self.b_prefetch + line // es)
                        f.ins(f"call void @llvm.prefetch.p0(ptr {ahead}, i32 0, i32 3, i32 1)")
                bv = [f.op(f"load {V}, ptr {f.gep(T, pb, u * bstep + v * VL, not direct)}, "
                           f"align {bal}") for v in range(NV)]
                for i in range(MR):
                    a = f.op(f"load {T}, ptr {f.gep(T, pa, u * MR + i, True)}, align {es}")
                    ab = self.splat(f, a)
                    for v in range(NV):
                        cur[i][v] = self.vfma(f, ab, bv[v], cur[i][v])
            f.ins(f"{nxt_i} = add i64 {iv}, 1")
            f.ins(f"{nxt_pa} = getelementptr inbounds {T}, ptr {pa}, i64 {U * MR}")
            f.ins(f"{nxt_pb} = getelementptr {T}, ptr {pb}, i64 {U * bstep}")
            f.br(head)
            phis = []
            for i in range(MR):
                for v in range(NV):
                    v0 = init[i][v]
                    phis.append(f"  {acc[i][v]} = phi {V} [{v0}, %{pred}], "
                                f"[{cur[i][v]}, %{body}]")
                    nacc[i][v] = acc[i][v]
            f.body[phis_at:phis_at] = phis
            f.label(done)
            return nacc, pa, pb, done

        entry = self.emit_tile_prefetch(f)
        init = [["zeroinitializer"] * NV for _ in range(MR)]
        if unroll > 1:
            n_main = f.op(f"lshr i64 %kc, {unroll.bit_length() - 1}")
            acc, pa, pb, lab = k_loop("ku", n_main, init, "%a", "%b", entry, unroll)
            n_rem = f.op(f"and i64 %kc, {unroll - 1}")
            acc, pa, pb, lab = k_loop("kr", n_rem, acc, pa, pb, lab, 1)
        else:
            acc, pa, pb, lab = k_loop("kr", "%kc", init, "%a", "%b", entry, 1)

        self.emit_epilogue(f, acc)
        f.ins("ret void")
        return f.render()

    def emit_tile_prefetch(self, f: _Fn) -> str:
        """Ask for the tile's C lines (first K block: they will be written) and residual
        lines (last K block: they will be read) before the K loop, so the misses overlap
        the FMAs: at batch 8 the outputs and residuals of a layer (MBs) live in L3/DRAM
        and the epilogue otherwise waits on each of the tile's rows in turn.  Tiles of a
        gridded C (rows mapped from %col) are left to the hardware.  Returns the label of
        the block it ends in."""
        p, T, es = self.p, self.T, self.es
        if p.ngrid is not None:
            return "entry"
        self.decls.add("declare void @llvm.prefetch.p0(ptr, i32, i32, i32)")
        scm, scn = p.sc[1], p.sc[2]
        if scn == 1:      # MR rows of NR contiguous elements
            runs = [(i * scm, p.NR) for i in range(p.MR)]
        else:             # transposed C: NR channels of MR contiguous pixels
            runs = [(j * scn, p.MR) for j in range(p.NR)] if scm == 1 else []
        lines = [(off, b) for off, n in runs for b in range(0, n * es, 64)]
        if not lines:
            return "entry"

        def fetch(base: str, rw: int, flag: str) -> str:
            go, done = f.label_name("pf"), f.label_name("pfx")
            f.ins(f"br i1 {flag}, label %{go}, label %{done}")
            f.label(go)
            for off, b in lines:
                ptr = f.gep("i8", f.gep(T, base, off), b)
                f.ins(f"call void @llvm.prefetch.p0(ptr {ptr}, i32 {rw}, i32 3, i32 1)")
            f.br(done)
            f.label(done)
            return done

        end = fetch("%c", 1, "%first")
        if p.resarg >= 0:
            end = fetch("%res", 0, "%last")
        return end

    def k_blocks(self) -> int:
        return _cdiv(max(self.p.K, 1), max(self.p.KC, 1))

    def grid_segments(self, f: _Fn, q) -> list:
        """(element offset of lane 0, lane mask) per output row touched by the VL logical
        columns q..q+VL-1 of a ``c_ngrid`` C: lanes of row r are stored contiguously."""
        P, Wd = self.p.ngrid
        VL = self.VL
        oy, ox = f.udiv(q, P), f.urem(q, P)
        off0 = f.add(f.mul(oy, Wd), ox)
        iota = "<" + ", ".join(f"i32 {i}" for i in range(VL)) + ">"
        vi = f"<{VL} x i32>"
        ox32 = f.op(f"trunc i64 {ox} to i32")
        segs = []
        for r in range((P - 1 + VL - 1) // P + 1):
            lo = f.op(f"sub i32 {r * P}, {ox32}")
            hi = f.op(f"add i32 {lo}, {Wd}")
            lov = f.op(f"insertelement {vi} poison, i32 {lo}, i64 0")
            lov = f.op(f"shufflevector {vi} {lov}, {vi} poison, {vi} zeroinitializer")
            hiv = f.op(f"insertelement {vi} poison, i32 {hi}, i64 0")
            hiv = f.op(f"shufflevector {vi} {hiv}, {vi} poison, {vi} zeroinitializer")
            c1 = f.op(f"icmp sge {vi} {iota}, {lov}")
            c2 = f.op(f"icmp slt {vi} {iota}, {hiv}")
            segs.append((f.add(off0, r * (Wd - P)), f.op(f"and <{VL} x i1> {c1}, {c2}")))
        return segs

    def masked_decls(self) -> tuple[str, str]:
        vt = f"v{self.VL}f{self.es * 8}"
        ld, st = f"@llvm.masked.load.{vt}.p0", f"@llvm.masked.store.{vt}.p0"
        mk = f"<{self.VL} x i1>"
        self.decls.add(f"declare {self.V} {ld}(ptr, i32, {mk}, {self.V})")
        self.decls.add(f"declare void {st}({self.V}, ptr, i32, {mk})")
        return ld, st

    def relu(self, f: _Fn, x: str, ty: str) -> str:
        zero = "zeroinitializer" if ty.startswith("<") else "0.0"
        c = f.op(f"fcmp ogt {ty} {x}, {zero}")
        return f.op(f"select {_mask_type(ty)} {c}, {ty} {x}, {ty} {zero}")

    def emit_epilogue(self, f: _Fn, acc) -> None:
        """Write the tile: alpha, then (first K block) beta*C and the bias or (later blocks)
        the partial C, then (last block) the epilogue steps.  ``%c``/``%res`` point at the
        tile's first element, or -- with ``c_ngrid`` -- at the row's logical column 0, the
        tile starting at logical column ``%col``.  Each stage is emitted once (the flags
        choose between branches that meet in phis): an epilogue per flag combination would
        multiply the code LLVM has to optimize."""
        p, T, V, es, VL, spec = self.p, self.T, self.V, self.es, self.VL, self.spec
        MR, NV, NR = p.MR, p.NV, p.NR
        scm, scn = p.sc[1], p.sc[2]
        beta = spec.beta
        dt = spec.dtype
        grid = p.ngrid is not None
        one_block = self.k_blocks() == 1        # then %first and %last are both true
        if grid:
            mload, mstore = self.masked_decls()

        def vload_c(row: str, v: int, segs) -> str:
            if grid:
                x = "zeroinitializer"
                for off, mask in segs[v]:
                    x = f.op(f"call {V} {mload}(ptr {f.gep(T, row, off)}, i32 {es}, "
                             f"<{VL} x i1> {mask}, {V} {x})")
                return x
            ptr = f.gep(T, row, v * VL * scn)
            if scn == 1:
                return f.op(f"load {V}, ptr {ptr}, align {es}")
            x = "poison"
            for lane in range(VL):
                s = f.op(f"load {T}, ptr {f.gep(T, ptr, lane * scn)}, align {es}")
                x = f.op(f"insertelement {V} {x}, {T} {s}, i64 {lane}")
            return x

        def vstore_c(x: str, row: str, v: int, segs) -> None:
            if grid:
                for off, mask in segs[v]:
                    f.ins(f"call void {mstore}({V} {x}, ptr {f.gep(T, row, off)}, i32 {es}, "
                          f"<{VL} x i1> {mask})")
                return
            ptr = f.gep(T, row, v * VL * scn)
            if scn == 1:
                f.ins(f"store {V} {x}, ptr {ptr}, align {es}")
                return
            for lane in range(VL):
                s = f.op(f"extractelement {V} {x}, i64 {lane}")
                f.ins(f"store {T} {s}, ptr {f.gep(T, ptr, lane * scn)}, align {es}")

        def cst(c: float, ty: str) -> str:
            if not ty.startswith("<"):
                return _fconst(c, dt)
            n = int(ty[1:].split(" x ")[0])
            return "<" + ", ".join(f"{T} {_fconst(c, dt)}" for _ in range(n)) + ">"

        def first_value(x, ty, load_c, bias, f=f):
            if beta != 0.0:
                cv = load_c()
                if beta != 1.0:
                    cv = f.op(f"fmul {_FM} {ty} {cv}, {cst(beta, ty)}")
                x = f.op(f"fadd {_FM} {ty} {x}, {cv}")
            for b in bias:
                if b is not None:
                    x = f.op(f"fadd {_FM} {ty} {x}, {b}")
            return x

        def epilogue_steps(x, ty, load_r, f=f):
            for step in p.epi:
                x = f.op(f"fadd {_FM} {ty} {x}, {load_r()}") if step == "add" \
                    else self.relu(f, x, ty)
            return x

        def branch(cond: str, then, other, xs: list, ty: str) -> list:
            """Values after ``cond ? then(xs) : other(xs)`` (two blocks meeting in phis)."""
            lt, lo, lj = f.label_name("bt"), f.label_name("bo"), f.label_name("bj")
            f.ins(f"br i1 {cond}, label %{lt}, label %{lo}")
            f.label(lt)
            a = then(xs)
            f.br(lj)
            f.label(lo)
            b = other(xs)
            f.br(lj)
            f.label(lj)
            return [f.op(f"phi {ty} [{x}, %{lt}], [{y}, %{lo}]") for x, y in zip(a, b)]

        # A swapped implicit GEMM's C is transposed (rows = pixels contiguous, columns =
        # channels a plane apart): its tiles are transposed in registers and stored as
        # masked pixel runs per channel, any %mr
        trans = p.a_implicit and scm == 1 and scn != 1 and not grid and MR <= VL
        full = f.op(f"icmp eq i64 %nr, {NR}")
        if not trans:
            full = f.op(f"and i1 {full}, {f.op(f'icmp eq i64 %mr, {MR}')}")
        L_fast, L_slow, L_end = (f.label_name(s) for s in ("fast", "slow", "done"))
        f.ins(f"br i1 {full}, label %{L_fast}, label %{L_slow}")
        f.label(L_fast)
        if trans:
            self.emit_transposed_store(f, acc, first_value, epilogue_steps, one_block)
            f.br(L_end)
        else:
            self.emit_tile_store(f, acc, first_value, epilogue_steps, branch, one_block,
                                 vload_c, vstore_c)
            f.br(L_end)

        # Edge tile: spill the registers to the tile buffer; a separate small function
        # (minsize: LLVM neither vectorizes nor unrolls it) does the scalar epilogue.
        f.label(L_slow)
        for i in range(MR):
            for v in range(NV):
                f.ins(f"store {V} {acc[i][v]}, ptr {f.gep(T, '%tile', i * NR + v * VL, True)}, "
                      f"align {self.valign}")
        f.ins(f"call void {self.sym('edge')}(ptr %c, ptr %res, ptr %bias, ptr %tile, i64 %mr, "
              f"i64 %nr, i1 %first, i1 %last, i64 %col)")
        f.br(L_end)
        f.label(L_end)
        self.edge_fn = self.emit_edge(first_value, epilogue_steps, one_block)

    def emit_transposed_store(self, f: _Fn, acc, first_value, epilogue_steps,
                              one_block: bool) -> None:
        """Full-width tile of a transposed C (``a_implicit``): VL x VL register transposes
        turn the MR pixel rows of every VL-channel vector into one MR-lane vector per
        channel, parked in the tile buffer; a loop over the channels then applies the
        epilogue and stores each with the lane mask ``i < %mr`` (one loop body, not NR
        unrolled copies: the IR, and so the compile time, stays that of a plain tile).
        C and the residual are read unconditionally and the flags pick with selects, as in
        the edge path."""
        p, T, es, spec = self.p, self.T, self.es, self.spec
        MR, NV, NR, scn = p.MR, p.NV, p.NR, p.sc[2]
        VM, MK = f"<{MR} x {T}>", f"<{MR} x i1>"
        vt = f"v{MR}f{es * 8}"
        ld, st = f"@llvm.masked.load.{vt}.p0", f"@llvm.masked.store.{vt}.p0"
        self.decls.add(f"declare {VM} {ld}(ptr, i32, {MK}, {VM})")
        self.decls.add(f"declare void {st}({VM}, ptr, i32, {MK})")
        vi = f"<{MR} x i32>"
        lanes = "<" + ", ".join(f"i32 {i}" for i in range(MR)) + ">"
        mr32 = f.op("trunc i64 %mr to i32")
        mrv = f.op(f"insertelement {vi} poison, i32 {mr32}, i64 0")
        mrv = f.op(f"shufflevector {vi} {mrv}, {vi} poison, {vi} zeroinitializer")
        mask = f.op(f"icmp slt {vi} {lanes}, {mrv}")
        for v in range(NV):
            cols = self.transpose(f, [acc[i][v] for i in range(MR)])
            for lane, c in enumerate(cols):
                x = f.op(f"shufflevector {self.V} {c}, {self.V} poison, <{MR} x i32> {lanes}")
                dst = f.gep(T, "%tile", (v * self.VL + lane) * MR, True)
                f.ins(f"store {VM} {x}, ptr {dst}, align {es}")
        bias_m = f.op(f"call {VM} {ld}(ptr %bias, i32 {es}, {MK} {mask}, {VM} "
                      "zeroinitializer)") if p.bias == "m" else None

        def load(base: str, j) -> str:
            return f.op(f"call {VM} {ld}(ptr {f.gep(T, base, f.mul(j, scn))}, i32 {es}, "
                        f"{MK} {mask}, {VM} zeroinitializer)")

        with f.loop(0, NR) as j:
            x = f.op(f"load {VM}, ptr {f.gep(T, '%tile', f.mul(j, MR), True)}, align {es}")
            if spec.alpha != 1.0:
                a = "<" + ", ".join(f"{T} {_fconst(spec.alpha, spec.dtype)}"
                                    for _ in range(MR)) + ">"
                x = f.op(f"fmul {_FM} {VM} {x}, {a}")
            cv = None if one_block and spec.beta == 0.0 else load("%c", j)
            bias_n = None
            if p.bias == "n":
                b = f.op(f"load {T}, ptr {f.gep(T, '%bias', j)}, align {es}")
                b = f.op(f"insertelement {VM} poison, {T} {b}, i64 0")
                bias_n = f.op(f"shufflevector {VM} {b}, {VM} poison, <{MR} x i32> "
                              "zeroinitializer")
            xf = first_value(x, VM, lambda cv=cv: cv, (bias_n, bias_m))
            if not one_block:
                xa = f.op(f"fadd {_FM} {VM} {x}, {cv}")
                xf = f.op(f"select i1 %first, {VM} {xf}, {VM} {xa}")
            if p.epi:
                xe = epilogue_steps(xf, VM, lambda j=j: load("%res", j))
                xf = xe if one_block else f.op(f"select i1 %last, {VM} {xe}, {VM} {xf}")
            f.ins(f"call void {st}({VM} {xf}, ptr {f.gep(T, '%c', f.mul(j, scn))}, "
                  f"i32 {es}, {MK} {mask})")

    def emit_tile_store(self, f: _Fn, acc, first_value, epilogue_steps, branch,
                        one_block: bool, vload_c, vstore_c) -> None:
        """Full tile: vector epilogue straight from the registers."""
        p, T, V, es, VL, spec = self.p, self.T, self.V, self.es, self.VL, self.spec
        MR, NV, scm = p.MR, p.NV, p.sc[1]
        alpha = spec.alpha
        grid = p.ngrid is not None
        segs = [self.grid_segments(f, f.add("%col", v * VL)) for v in range(NV)] \
            if grid else None
        rows = [f.gep(T, "%c", i * scm) for i in range(MR)]
        rrows = [f.gep(T, "%res", i * scm) for i in range(MR)] if p.resarg >= 0 else None
        tiles = [(i, v) for i in range(MR) for v in range(NV)]
        xs = [acc[i][v] for i, v in tiles]
        if alpha != 1.0:
            xs = [f.op(f"fmul {_FM} {V} {x}, {self.splat_const(alpha)}") for x in xs]

        def fast_first(xs):
            bias_n = [f.op(f"load {V}, ptr {f.gep(T, '%bias', v * VL)}, align {es}")
                      for v in range(NV)] if p.bias == "n" else None
            bias_m = [self.splat(f, f.op(f"load {T}, ptr {f.gep(T, '%bias', i)}, "
                                         f"align {es}")) for i in range(MR)] \
                if p.bias == "m" else None
            return [first_value(x, V, lambda i=i, v=v: vload_c(rows[i], v, segs),
                                (bias_n[v] if bias_n else None,
                                 bias_m[i] if bias_m else None))
                    for x, (i, v) in zip(xs, tiles)]

        def fast_acc(xs):
            return [f.op(f"fadd {_FM} {V} {x}, {vload_c(rows[i], v, segs)}")
                    for x, (i, v) in zip(xs, tiles)]

        def fast_epi(xs):
            return [epilogue_steps(x, V, lambda i=i, v=v: vload_c(rrows[i], v, segs))
                    for x, (i, v) in zip(xs, tiles)]

        xs = fast_first(xs) if one_block else branch("%first", fast_first, fast_acc, xs, V)
        if p.epi:
            xs = fast_epi(xs) if one_block else \
                branch("%last", fast_epi, lambda ys: list(ys), xs, V)
        for x, (i, v) in zip(xs, tiles):
            vstore_c(x, rows[i], v, segs)

    def emit_edge(self, first_value, epilogue_steps, one_block: bool) -> str:
        """The scalar epilogue of an edge tile (mr x nr of the tile buffer). C and the
        residual are read unconditionally (their addresses are valid) and the flags pick
        values with selects, so the loop body exists once."""
        p, T, es, spec = self.p, self.T, self.es, self.spec
        NR, scm, scn = p.NR, p.sc[1], p.sc[2]
        dt = spec.dtype
        f = _Fn(f"define internal void {self.sym('edge')}(ptr %c, ptr %res, ptr %bias, "
                f"ptr noalias %tile, i64 %mr, i64 %nr, i1 %first, i1 %last, i64 %col) "
                f"noinline minsize optsize {_FN_ATTRS}")
        with f.loop(0, "%mr") as i:
            row = f.gep(T, "%c", f.mul(i, scm))
            rrow = f.gep(T, "%res", f.mul(i, scm)) if p.resarg >= 0 else None
            trow = f.gep(T, "%tile", f.mul(i, NR), True)
            bm = f.op(f"load {T}, ptr {f.gep(T, '%bias', i)}, align {es}") \
                if p.bias == "m" else None
            with f.loop(0, "%nr") as j:
                skip = None
                if p.ngrid is not None:
                    P, Wd = p.ngrid
                    q = f.add("%col", j)
                    ox = f.urem(q, P)
                    off = f.add(f.mul(f.udiv(q, P), Wd), ox)
                    skip = _If(f, f.op(f"icmp ult i64 {ox}, {Wd}"))
                    skip.__enter__()
                else:
                    off = f.mul(j, scn)
                ptr = f.gep(T, row, off)
                bn = f.op(f"load {T}, ptr {f.gep(T, '%bias', j)}, align {es}") \
                    if p.bias == "n" else None
                x = f.op(f"load {T}, ptr {f.gep(T, trow, j, True)}, align {es}")
                if spec.alpha != 1.0:
                    x = f.op(f"fmul {_FM} {T} {x}, {_fconst(spec.alpha, dt)}")
                cv = None if one_block and spec.beta == 0.0 else \
                    f.op(f"load {T}, ptr {ptr}, align {es}")
                xf = first_value(x, T, lambda: cv, (bn, bm), f)
                if not one_block:
                    xa = f.op(f"fadd {_FM} {T} {x}, {cv}")
                    xf = f.op(f"select i1 %first, {T} {xf}, {T} {xa}")
                if p.epi:
                    xe = epilogue_steps(xf, T, lambda: f.op(
                        f"load {T}, ptr {f.gep(T, rrow, off)}, align {es}"), f)
                    xf = xe if one_block else f.op(f"select i1 %last, {T} {xe}, {T} {xf}")
                f.ins(f"store {T} {xf}, ptr {ptr}, align {es}")
                if skip is not None:
                    skip.__exit__(None, None, None)
        f.ins("ret void")
        return f.render()

    # --- the task entry point ---
    def scratch_layout(self) -> tuple[int, int, int]:
        """Byte offsets of the packed B block and packed A block, and the total."""
        p, es = self.p, self.es
        tile = _rup(p.MR * p.NR * es, 64)
        kc = max(p.KC, 1)
        ncp = p.NR if p.direct_b else _rup(min(p.NC, _rup(p.TN, p.NR)), p.NR)
        mcp = _rup(min(p.MC, _rup(p.TM, p.MR)), p.MR)
        b_off = tile
        a_off = b_off + _rup(kc * ncp * es, 64)
        if p.b_panel:
            a_off = b_off
        total = a_off + (0 if p.a_panel else _rup(kc * mcp * es, 64))
        return b_off, a_off, total

    def shared_layout(self) -> tuple[int, int, int, int, int]:
        """The shared packed-B buffer (``_Plan.shared_arg``): (column blocks per task, K
        blocks, elements per block, bytes of the claim counters in front, total bytes).

        Block (batch b, column block ni, NC block jcb, K block pcb) -- one packed KC x NC
        block, laid out as a task's own packed block -- has two i32 counters: panels claimed
        and panels packed."""
        p, es = self.p, self.es
        njc = _cdiv(p.TN, p.NC)
        npc = _cdiv(max(p.K, 1), p.KC)
        ncp = _rup(min(p.NC, _rup(p.TN, p.NR)), p.NR)
        blocks = p.batch * p.nt * njc * npc
        cnt = _rup(8 * blocks, 64)
        block = p.KC * ncp
        return njc, npc, block, cnt, cnt + blocks * block * es

    def pack_b_shared(self, f: _Fn, pS, src_b, b, ni, jc, n0, pc, nc, kc) -> str:
        """Pack this task's B block into the shared buffer together with every other task
        that needs it, and return its address once all its panels are packed.

        Each task takes panels off the block's claim counter until none is left, then waits
        for the packed counter to reach the panel count.  A task only ever waits for panels
        that running tasks have claimed and are packing without waiting themselves, so this
        holds under any split of the task range and any order, one thread or several."""
        p, T = self.p, self.T
        njc, npc, block, cnt, _ = self.shared_layout()
        blk = f.add(f.mul(f.add(f.mul(f.add(f.mul(b, p.nt), ni), njc),
                                f.udiv(f.sub(jc, n0), p.NC)), npc), f.udiv(pc, p.KC))
        claim = f.gep("i32", pS, f.mul(blk, 2))
        done = f.gep("i32", claim, 1)
        dst = f.gep(T, f.gep("i8", pS, cnt), f.mul(blk, block))
        npan = f.udiv(f.add(nc, p.NR - 1), p.NR)
        take, pack, wait, spin, ready = (f.label_name(x) for x in
                                         ("shc", "shp", "shw", "shs", "shr"))
        f.br(take)
        f.label(take)
        i32 = f.op(f"atomicrmw add ptr {claim}, i32 1 monotonic, align 4")
        i = f.op(f"zext i32 {i32} to i64")
        f.ins(f"br i1 {f.op(f'icmp slt i64 {i}, {npan}')}, label %{pack}, label %{wait}")
        f.label(pack)
        col = f.mul(i, p.NR)
        f.ins(f"call void {self.sym('packb')}(ptr {f.gep(T, src_b, f.mul(col, p.sb[2]))}, "
              f"ptr {f.gep(T, dst, f.mul(col, kc))}, i64 {f.smin(p.NR, f.sub(nc, col))}, "
              f"i64 {kc})")
        f.ins(f"atomicrmw add ptr {done}, i32 1 release, align 4")
        f.br(take)
        f.label(wait)
        d = f.op(f"zext i32 {f.op(f'load atomic i32, ptr {done} acquire, align 4')} to i64")
        f.ins(f"br i1 {f.op(f'icmp sge i64 {d}, {npan}')}, label %{ready}, label %{spin}")
        f.label(spin)
        f.br(wait)
        f.label(ready)
        return dst

    def tap_skip(self, f: _Fn, pc, row, mr, kc, first, last) -> tuple:
        """For a tap-major plan: (K length, label to continue at) of the tile at pixel row
        ``row``: a K block whose tap reads only padding rows for every pixel of the panel
        (whole output rows) contributes nothing -- its FMAs are skipped (K length 0: the
        first block still initialises C, the last still runs the epilogue) and, in between,
        so is the call.  Emits the branch around the call."""
        p = self.p
        H, W, _, kw, dh, _, ph, _ = p.same
        hw = p.a_rows[0]
        ky = f.udiv(f.udiv(pc, p.tapmajor[0]), kw)
        shift = f.sub(f.mul(ky, dh), ph)
        oy0 = f.udiv(f.urem(row, hw), W)
        oy1 = f.udiv(f.urem(f.sub(f.add(row, mr), 1), hw), W)
        above = f.op(f"icmp slt i64 {f.add(oy1, shift)}, 0")
        below = f.op(f"icmp sge i64 {f.add(oy0, shift)}, {H}")
        dead = f.op(f"or i1 {above}, {below}")
        kc_t = f.op(f"select i1 {dead}, i64 0, i64 {kc}")
        edge = f.op(f"or i1 {first}, {last}")
        skip = f.op(f"and i1 {dead}, {f.op(f'xor i1 {edge}, true')}")
        go, after = f.label_name("tap"), f.label_name("tapx")
        f.ins(f"br i1 {skip}, label %{after}, label %{go}")
        f.label(go)
        return kc_t, after

    def emit_entry(self) -> str:
        p, T = self.p, self.T
        f = _Fn(f"define void {_ident(self.name)}(i64 %task_begin, i64 %task_end, ptr %args, "
                f"ptr %scratch) {_FN_ATTRS}")
        if p.batch == 0 or p.M == 0 or p.N == 0:
            f.ins("ret void")
            return f.render()
        b_off, a_off, _ = self.scratch_layout()

        def arg(i: int) -> str:
            return f.op(f"load ptr, ptr {f.gep('ptr', '%args', i)}, align 8", "arg")

        pA, pB, pC = arg(p.a_arg), arg(p.b_arg), arg(2)
        pBias = arg(3) if p.bias else "null"
        pRes = arg(p.resarg) if p.resarg >= 0 else "null"
        tile_buf = "%scratch"
        Bp = f.gep("i8", "%scratch", b_off, True)
        Ap = f.gep("i8", "%scratch", a_off, True)
        per_b = p.mt * p.nt
        with f.loop("%task_begin", "%task_end") as t:
            b = f.udiv(t, per_b)
            r = f.urem(t, per_b)
            mi = f.udiv(r, p.nt)
            ni = f.urem(r, p.nt)
            m0 = f.mul(mi, p.TM)
            m1 = f.smin(f.add(m0, p.TM), p.M)
            n0 = f.mul(ni, p.TN)
            n1 = f.smin(f.add(n0, p.TN), p.N)
            Ab = f.gep(T, pA, f.mul(b, p.sa[0]))
            Bb = f.gep(T, pB, f.mul(b, p.sb[0]))
            Cb = f.gep(T, pC, f.mul(b, p.sc[0]))
            Rb = f.gep(T, pRes, f.mul(b, p.sc[0])) if p.resarg >= 0 else "null"
            biasb = f.gep(T, pBias, f.mul(b, self.spec.bias_stride_batch)) if p.bias else "null"
            with f.loop(n0, n1, p.NC) as jc:
                nc = f.smin(p.NC, f.sub(n1, jc))
                with f.loop(0, max(p.K, 1), p.KC) as pc:
                    kc = f.smin(p.KC, f.sub(p.K, pc))
                    first = f.op(f"icmp eq i64 {pc}, 0")
                    last = f.op(f"icmp sge i64 {f.add(pc, p.KC)}, {p.K}")
                    shared_b = None
                    if p.b_panel:
                        pass     # B prepacked: panels are read in place below
                    elif p.shared_arg >= 0:
                        src_b = f.gep(T, Bb, f.add(f.mul(pc, p.sb[1]), f.mul(jc, p.sb[2])))
                        shared_b = self.pack_b_shared(f, arg(p.shared_arg), src_b, b, ni, jc,
                                                      n0, pc, nc, kc)
                    elif (p.kmap and not p.a_implicit) or p.cols:   # offsets from (pc, jc)
                        src_b = f.gep(T, Bb, f.mul(jc, p.sb[2]))
                        f.ins(f"call void {self.sym('packb')}(ptr {src_b}, ptr {Bp}, "
                              f"i64 {nc}, i64 {kc}, i64 {pc}, i64 {jc})")
                    elif p.direct_b:
                        src_b = f.gep(T, Bb, f.add(f.mul(pc, p.sb[1]), f.mul(jc, p.sb[2])))
                        # full panels are read in place; only the ragged last one is packed
                        ncf = f.mul(f.udiv(nc, p.NR), p.NR)
                        with f.if_(f.op(f"icmp slt i64 {ncf}, {nc}")):
                            f.ins(f"call void {self.sym('packb')}(ptr {f.gep(T, src_b, ncf)}, "
                                  f"ptr {Bp}, i64 {f.sub(nc, ncf)}, i64 {kc})")
                    else:
                        src_b = f.gep(T, Bb, f.add(f.mul(pc, p.sb[1]), f.mul(jc, p.sb[2])))
                        f.ins(f"call void {self.sym('packb')}(ptr {src_b}, ptr {Bp}, "
                              f"i64 {nc}, i64 {kc})")
                    with f.loop(m0, m1, p.MC) as ic:
                        mc = f.smin(p.MC, f.sub(m1, ic))
                        if p.a_implicit:   # pixel panels packed off the input from pc
                            src_a = Ab     # the packer places each panel from its row
                            f.ins(f"call void {self.sym('packa')}(ptr {src_a}, ptr {Ap}, "
                                  f"i64 {mc}, i64 {kc}, i64 {pc}, i64 {ic})")
                        elif not p.a_panel:
                            src_a = f.gep(T, Ab, f.add(f.mul(ic, p.sa[1]),
                                                       f.mul(pc, p.sa[2])))
                            f.ins(f"call void {self.sym('packa')}(ptr {src_a}, ptr {Ap}, "
                                  f"i64 {mc}, i64 {kc})")
                        def tile(jr, ir):
                            nr = f.smin(p.NR, f.sub(nc, jr))
                            col = f.add(jc, jr)
                            if p.b_panel:   # col is a multiple of NR
                                bpan = f.gep(T, Bb, f.add(f.mul(col, p.K), f.mul(pc, p.NR)))
                            elif p.direct_b:
                                bpan = Bp
                                full_n = f.op(f"icmp eq i64 {nr}, {p.NR}")
                                bdir = f.gep(T, src_b, jr)
                            else:
                                bpan = f.gep(T, shared_b or Bp, f.mul(jr, kc), True)
                            mr = f.smin(p.MR, f.sub(mc, ir))
                            if p.a_panel:   # (ic + ir) is a multiple of MR
                                apan = f.gep(T, Ab, f.add(f.mul(f.add(ic, ir), p.K),
                                                          f.mul(pc, p.MR)))
                            else:
                                apan = f.gep(T, Ap, f.mul(ir, kc), True)
                            row = f.add(ic, ir)
                            # with c_ngrid the kernel maps columns itself from %col
                            cofs = f.add(f.mul(row, p.sc[1]),
                                         0 if p.ngrid else f.mul(col, p.sc[2]))
                            if p.a_rows:   # rows of several images: an image's plane
                                hw = p.a_rows[0]
                                cofs = f.add(f.add(f.mul(f.udiv(row, hw), p.sc[0]),
                                                   f.mul(f.urem(row, hw), p.sc[1])),
                                             f.mul(col, p.sc[2]))
                            cptr = f.gep(T, Cb, cofs)
                            rptr = f.gep(T, Rb, cofs) if p.resarg >= 0 else "null"
                            bptr = "null"
                            if p.bias == "m":
                                bptr = f.gep(T, biasb, row)
                            elif p.bias == "n":
                                bptr = f.gep(T, biasb, col)
                            kc_t, after = kc, None
                            if p.tapmajor:   # a panel whose tap row is all padding
                                kc_t, after = self.tap_skip(f, pc, row, mr, kc, first, last)
                            rest = (f"i64 {kc_t}, ptr {cptr}, i64 {mr}, i64 {nr}, "
                                    f"i1 {first}, ptr {bptr}, ptr {tile_buf}, i1 {last}, "
                                    f"i64 {col}, ptr {rptr})")
                            if p.direct_b:
                                lk, lp, lj = (f.label_name(x) for x in ("kd", "kp", "kj"))
                                f.ins(f"br i1 {full_n}, label %{lk}, label %{lp}")
                                f.label(lk)
                                f.ins(f"call void {self.sym('kernd')}(ptr {apan}, "
                                      f"ptr {bdir}, {rest}")
                                f.br(lj)
                                f.label(lp)
                                f.ins(f"call void {self.sym('kern')}(ptr {apan}, "
                                      f"ptr {bpan}, {rest}")
                                f.br(lj)
                                f.label(lj)
                            else:
                                f.ins(f"call void {self.sym('kern')}(ptr {apan}, "
                                      f"ptr {bpan}, {rest}")
                            if after is not None:
                                f.br(after)
                                f.label(after)

                        # BLIS order: the B micro-panel stays in L1 across the row tiles
                        with f.loop(0, nc, p.NR) as jr, f.loop(0, mc, p.MR) as ir:
                            tile(jr, ir)
        f.ins("ret void")
        return f.render()

    # --- dot-product schedule (few rows, K-contiguous B) ---
    def dot_a_packed(self) -> bool:
        return self.p.sa[2] != 1

    def emit_dot_tile(self, nb: int) -> str:
        """C[0:M, j0:j0+nb] from M rows of A and nb K-contiguous columns of B."""
        p, T, V, es, VL, spec = self.p, self.T, self.V, self.es, self.VL, self.spec
        M, K = p.M, p.K
        ars = K if self.dot_a_packed() else p.sa[1]
        bcs = p.sb[2]
        f = _Fn(f"define internal void {self.sym(f'dot{nb}')}(ptr noalias %a, ptr noalias %b, "
                f"ptr %c, ptr %bias, ptr %res) {_FN_ATTRS}")
        nvec = K // VL
        head, body, done = f.label_name("dh"), f.label_name("db"), f.label_name("dx")
        f.br(head)
        f.label(head)
        kk, kn = f._name("k"), f._name("k")
        acc = [[f._name("acc") for _ in range(nb)] for _ in range(M)]
        f.ins(f"{kk} = phi i64 [0, %entry], [{kn}, %{body}]")
        phis_at = len(f.body)
        c = f.op(f"icmp ult i64 {kk}, {nvec * VL}")
        f.ins(f"br i1 {c}, label %{body}, label %{done}")
        f.label(body)
        av = [f.op(f"load {V}, ptr {f.gep(T, f.gep(T, '%a', m * ars), kk)}, align {es}")
              for m in range(M)]
        new = [[None] * nb for _ in range(M)]
        for j in range(nb):
            bv = f.op(f"load {V}, ptr {f.gep(T, f.gep(T, '%b', j * bcs), kk)}, align {es}")
            for m in range(M):
                new[m][j] = self.vfma(f, av[m], bv, acc[m][j])
        f.ins(f"{kn} = add i64 {kk}, {VL}")
        f.br(head)
        f.body[phis_at:phis_at] = [
            f"  {acc[m][j]} = phi {V} [zeroinitializer, %entry], [{new[m][j]}, %{body}]"
            for m in range(M) for j in range(nb)]
        f.label(done)

        def reduce(x: str) -> str:   # fixed-order tree: same bits whichever task runs it
            w = VL
            while w > 1:
                h = w // 2
                lo = ", ".join(f"i32 {i}" for i in range(h))
                hi = ", ".join(f"i32 {i}" for i in range(h, w))
                vt = f"<{w} x {T}>"
                a = f.op(f"shufflevector {vt} {x}, {vt} poison, <{h} x i32> <{lo}>")
                b = f.op(f"shufflevector {vt} {x}, {vt} poison, <{h} x i32> <{hi}>")
                x = f.op(f"fadd {_FM} <{h} x {T}> {a}, {b}")
                w = h
            return f.op(f"extractelement <1 x {T}> {x}, i64 0")

        sums = [[reduce(acc[m][j]) for j in range(nb)] for m in range(M)]
        for k in range(nvec * VL, K):   # K tail (< VL steps), scalar
            a_s = [f.op(f"load {T}, ptr {f.gep(T, '%a', m * ars + k)}, align {es}")
                   for m in range(M)]
            for j in range(nb):
                b_s = f.op(f"load {T}, ptr {f.gep(T, '%b', j * bcs + k)}, align {es}")
                for m in range(M):
                    pr = f.op(f"fmul {_FM} {T} {a_s[m]}, {b_s}")
                    sums[m][j] = f.op(f"fadd {_FM} {T} {sums[m][j]}, {pr}")
        dt = spec.dtype
        for m in range(M):
            for j in range(nb):
                x = sums[m][j]
                ptr = f.gep(T, "%c", m * p.sc[1] + j * p.sc[2])
                if spec.alpha != 1.0:
                    x = f.op(f"fmul {_FM} {T} {x}, {_fconst(spec.alpha, dt)}")
                if spec.beta != 0.0:
                    cv = f.op(f"load {T}, ptr {ptr}, align {es}")
                    if spec.beta != 1.0:
                        cv = f.op(f"fmul {_FM} {T} {cv}, {_fconst(spec.beta, dt)}")
                    x = f.op(f"fadd {_FM} {T} {x}, {cv}")
                if p.bias:
                    bi = m if p.bias == "m" else j
                    bv = f.op(f"load {T}, ptr {f.gep(T, '%bias', bi)}, align {es}")
                    x = f.op(f"fadd {_FM} {T} {x}, {bv}")
                for step in p.epi:   # the dot schedule reduces all of K at once
                    if step == "add":
                        rp = f.gep(T, "%res", m * p.sc[1] + j * p.sc[2])
                        rv = f.op(f"load {T}, ptr {rp}, align {es}")
                        x = f.op(f"fadd {_FM} {T} {x}, {rv}")
                    else:
                        x = self.relu(f, x, T)
                f.ins(f"store {T} {x}, ptr {ptr}, align {es}")
        f.ins("ret void")
        return f.render()

    def dot_scratch(self) -> int:
        return _rup(self.p.M * self.p.K * self.es, 64) if self.dot_a_packed() else 0

    def emit_dot_entry(self) -> str:
        p, T, es = self.p, self.T, self.es
        f = _Fn(f"define void {_ident(self.name)}(i64 %task_begin, i64 %task_end, ptr %args, "
                f"ptr %scratch) {_FN_ATTRS}")

        def arg(i: int) -> str:
            return f.op(f"load ptr, ptr {f.gep('ptr', '%args', i)}, align 8", "arg")

        pA, pB, pC = arg(p.a_arg), arg(p.b_arg), arg(2)
        pBias = arg(3) if p.bias else "null"
        pRes = arg(p.resarg) if p.resarg >= 0 else "null"
        NB = p.dot_nb
        with f.loop("%task_begin", "%task_end") as t:
            b = f.udiv(t, p.nt)
            n0 = f.mul(f.urem(t, p.nt), p.TN)
            n1 = f.smin(f.add(n0, p.TN), p.N)
            Ab = f.gep(T, pA, f.mul(b, p.sa[0]))
            Bb = f.gep(T, pB, f.mul(b, p.sb[0]))
            Cb = f.gep(T, pC, f.mul(b, p.sc[0]))
            Rb = f.gep(T, pRes, f.mul(b, p.sc[0])) if p.resarg >= 0 else "null"
            biasb = f.gep(T, pBias, f.mul(b, self.spec.bias_stride_batch)) if p.bias else "null"
            if self.dot_a_packed():   # gather the M rows of A into K-contiguous rows
                for m in range(p.M):
                    with f.loop(0, p.K) as k:
                        src = f.gep(T, Ab, f.add(m * p.sa[1], f.mul(k, p.sa[2])))
                        x = f.op(f"load {T}, ptr {src}, align {es}")
                        dst = f.gep(T, "%scratch", f.add(m * p.K, k), True)
                        f.ins(f"store {T} {x}, ptr {dst}, align {es}")
                Ab = "%scratch"

            def call(nb: int, j) -> None:
                bp = f.gep(T, Bb, f.mul(j, p.sb[2]))
                cp = f.gep(T, Cb, f.mul(j, p.sc[2]))
                biasp = f.gep(T, biasb, j) if p.bias == "n" else biasb
                rp = f.gep(T, Rb, f.mul(j, p.sc[2])) if p.resarg >= 0 else "null"
                f.ins(f"call void {self.sym(f'dot{nb}')}(ptr {Ab}, ptr {bp}, ptr {cp}, "
                      f"ptr {biasp}, ptr {rp})")

            nfull = f.udiv(f.sub(n1, n0), NB)
            with f.loop(0, nfull) as q:
                call(NB, f.add(n0, f.mul(q, NB)))
            if NB > 1:
                with f.loop(f.add(n0, f.mul(nfull, NB)), n1) as j:
                    call(1, j)
        f.ins("ret void")
        return f.render()

    def render(self) -> tuple[str, int]:
        p = self.p
        if p.batch == 0 or p.M == 0 or p.N == 0:
            return self.emit_entry(), 0
        if p.dot_nb:
            parts = [self.emit_dot_tile(p.dot_nb)]
            if p.dot_nb > 1:
                parts.append(self.emit_dot_tile(1))
            parts.append(self.emit_dot_entry())
            return "\n".join(sorted(self.decls) + [""] + parts), max(64, self.dot_scratch())
        parts = ([] if p.b_panel else [self.emit_pack("b")]) + \
            ([] if p.a_panel else [self.emit_pack("a")]) + [self.emit_kernel()]
        if p.direct_b:
            parts.append(self.emit_kernel(direct=True))
        parts.append(self.edge_fn)
        parts.append(self.emit_entry())
        return "\n".join(sorted(self.decls) + [""] + parts), self.scratch_layout()[2]


def prepack_order(spec: GemmSpec, isa: str) -> tuple | None:
    """(channels, taps) when weights prepacked for ``spec`` must have their K axis reordered
    from (channel, tap) to (tap, channel) (``pack_a_panels(order=...)``), else None."""
    plan = _plan(spec, isa, {"_prepack": True})
    if not plan.tapmajor:
        return None
    channels = plan.tapmajor[0]
    return channels, plan.K // channels


def prepack_rows(spec: GemmSpec, isa: str) -> int:
    """The panel height (``GemmSpec.a_panel``) an A operand packed ahead of time must have
    for ``spec`` on ``isa``; 0 when this spec does not read A in row panels (the plan swaps
    the operands or uses the dot-product schedule), so A cannot be prepacked.  A swapped
    implicit GEMM reads A's transpose as B column panels: row panels of A, NR tall."""
    plan = _plan(spec, isa, {"_prepack": True})
    if plan.a_implicit:
        return plan.NR if plan.N and plan.K else 0
    if plan.a_arg != 0 or plan.dot_nb or plan.M == 0 or plan.K == 0:
        return 0
    return plan.MR


def prepack_cols(spec: GemmSpec, isa: str) -> int:
    """The panel width (``GemmSpec.b_panel``) a B operand packed ahead of time must have for
    ``spec`` on ``isa``; 0 when this spec does not read B in packed column panels (swapped
    operands, the dot-product or direct-B schedules, implicit-GEMM rows)."""
    plan = _plan(spec, isa, None)
    if plan.a_arg != 0 or plan.dot_nb or plan.direct_b or plan.kmap or plan.cols or \
            plan.N == 0 or plan.K == 0:
        return 0
    return plan.NR


def pack_b_panels(b, nr: int):
    """A (K, N) numpy matrix in the ``b_panel`` layout: (ceil(N/nr), K, nr), zero columns
    past N (runs once per weight at bind time)."""
    import numpy as np

    K, N = b.shape
    panels = -(-N // nr)
    out = np.zeros((K, panels * nr), b.dtype)
    out[:, :N] = b
    return np.ascontiguousarray(out.reshape(K, panels, nr).transpose(1, 0, 2))


def pack_a_panels(a, mr: int, order: tuple | None = None):
    """A (M, K) numpy matrix in the ``a_panel`` layout: (ceil(M/mr), K, mr), zero rows past
    M (runs once per weight at bind time); ``order`` = (channels, taps) reorders K from
    (channel, tap) to (tap, channel) first (``prepack_order``)."""
    import numpy as np

    M, K = a.shape
    if order is not None:
        ch, taps = order
        a = a.reshape(M, ch, taps).transpose(0, 2, 1).reshape(M, K)
    panels = -(-M // mr)
    out = np.zeros((panels * mr, K), a.dtype)
    out[:M] = a
    return np.ascontiguousarray(out.reshape(panels, mr, K).transpose(0, 2, 1))


def gemm_kernel(name: str, spec: GemmSpec, isa: str, *, _params: dict | None = None
                ) -> GemmKernel:
    """Render ``spec`` as a task-parallel kernel named ``name`` for ``isa``.

    ``_params`` overrides fields of the ISA table (tile and cache blocks) for tuning runs.
    """
    plan = _plan(spec, isa, _params)
    em = _Emitter(name, spec, plan, isa, _params)
    ir, scratch = em.render()
    empty = spec.batch == 0 or spec.M == 0 or spec.N == 0
    shared = zero = 0
    if plan.shared_arg >= 0 and not empty:
        _, _, _, zero, shared = em.shared_layout()
    return GemmKernel(name=name, ir=ir, n_tasks=1 if empty else plan.n_tasks,
                      scratch_bytes=scratch,
                      flops=2 * spec.batch * spec.M * spec.N * spec.K,
                      shared_bytes=shared, shared_zero_bytes=zero)
