"""Lowering: graph nodes to kernels over storage slots.

Each op's ``lower(ctx)`` receives a :class:`LowerCtx` with its inputs and outputs as
:class:`~mxc.ir.kernel.TensorRef` views and emits kernels through ``ctx.compute`` (tensor
expressions, scheduled by ``compiler.schedule``) or ``ctx.gemm`` (the GEMM template). The
context records which storage slot every buffer lives in, so the result is a flat list of
kernel calls the runtime can run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..base import CompileError
from ..ir import kernel as K
from ..ir.dtypes import as_dtype
from .schedule import schedule


@dataclass
class LoweredKernel:
    kernel: object             # K.Kernel | K.TemplateKernel; None: a compute awaiting fusion
    slots: list                # slot per kernel buffer
    node: str
    compute: object = None     # the K.ComputeOp of a deferred compute (compiler.fuse)
    buf_slots: dict = None     # type: ignore[assignment]  # buffer -> slot (deferred compute)
    node_op: str = ""          # op of ``node``
    members: list = None       # type: ignore[assignment]  # nodes fused into this kernel


@dataclass
class SlotTable:
    """Storage slots: byte sizes and what they hold."""

    nbytes: list = field(default_factory=list)
    kinds: list = field(default_factory=list)
    names: list = field(default_factory=list)
    #: slots of constant parameters read by one node only, which a GEMM may ask to hold its
    #: A operand prepacked (filled by the caller: ``compile_graph(constants=...)``)
    packable: set = field(default_factory=set)
    #: slot -> ("gemm_a", M, K, panel, order) or ("gemm_b", K, N, panel, transposed): the caller
    #: stores that parameter with ``codegen.gemm.pack_a_panels`` / ``pack_b_panels``
    #: (see ``Program.slot_layouts``)
    layouts: dict = field(default_factory=dict)

    def new(self, nbytes: int, kind: str = "temp", name: str = "") -> int:
        self.nbytes.append(int(nbytes))
        self.kinds.append(kind)
        self.names.append(name)
        return len(self.nbytes) - 1


#: Output pixels (N * Ho * Wo) per weight from which a convolution whose weights change
#: between runs takes the direct template anyway, repacking them every run: packing moves
#: each weight ~2x (8 bytes read + written per float32 at ~20 GB/s), the convolution does
#: 2 * N*Ho*Wo FLOPs with it at ~400 GFLOP/s; from ~1000 pixels packing costs < 5 %, less
#: than the implicit GEMM's own packing of its input.
DIRECT_REPACK_MIN_PIXELS = 1024


class LowerCtx:
    """What an op's ``lower`` sees: typed attrs, input/output views, kernel emitters."""

    def __init__(self, node, attrs, in_refs: list, out_refs: list, is_train: bool,
                 slots: SlotTable, buf_slot: dict, out: list, defer: bool = False) -> None:
        self.node = node
        #: computes are recorded unscheduled (``LoweredKernel.compute``) so that the fusion
        #: pass can inline producers into consumers; ``schedule_deferred`` schedules them
        self.defer = defer
        self.attrs = attrs
        self.inputs = in_refs
        self.outputs = out_refs
        self.is_train = is_train
        self._slots = slots
        self._buf_slot = buf_slot
        self._out = out
        self._n = 0

    # -- shapes/dtypes shortcuts ---------------------------------------------------------------
    @property
    def in_shapes(self) -> list:
        return [r.shape for r in self.inputs]

    @property
    def out_shapes(self) -> list:
        return [r.shape for r in self.outputs]

    @property
    def cpu_templates(self) -> bool:
        """Whether the CPU GEMM template's extras (implicit-GEMM addressing, fused epilogues)
        are available: not when lowering for the GPU."""
        from ..codegen.ptx import gpu_lowering
        return not gpu_lowering()

    def temp(self, shape, dtype) -> K.TensorRef:
        d = as_dtype(dtype)
        shape = tuple(int(s) for s in shape)
        slot = self._slots.new(math.prod(shape) * d.itemsize, "temp", f"{self.node.name}_tmp")
        buf = K.Buffer(f"t{slot}", d, math.prod(shape))
        self._buf_slot[buf] = slot
        return K.TensorRef(buf, shape)

    def rng_seed(self) -> K.TensorRef:
        """A 1-element uint64 buffer the runtime refills with a fresh random seed before every
        run (slot kind 'rng'), for counter-based random numbers (Dropout masks)."""
        d = as_dtype("uint64")
        slot = self._slots.new(8, "rng", f"{self.node.name}_seed")
        buf = K.Buffer(f"rng{slot}", d, 1)
        self._buf_slot[buf] = slot
        return K.TensorRef(buf, (1,))

    def compute(self, out: K.TensorRef, fn, name: str = "compute", *,
                offsets: dict | None = None) -> None:
        """One kernel computing every element of ``out`` from ``fn(*idx)``.

        ``offsets`` (buffer -> element offset) makes those offsets run-time pointer offsets
        of the call, so kernels differing only in where their views start share one function;
        such kernels are scheduled at once and never fused."""
        op = K.compute(out, fn, name)
        bufs = _buffers_of(op.body) + [out.buf]
        bufs = list(dict.fromkeys(bufs))
        if self.defer and offsets is None:
            bslots = {b: self._slot_of(b) for b in bufs}
            self._out.append(LoweredKernel(None, list(bslots.values()), self.node.name, op,
                                           bslots, self.node.op))
            return
        kern = schedule(op, "__K__", bufs)
        if offsets is not None:
            kern.offsets = [offsets.get(b, 0) for b in kern.buffers]  # type: ignore[attr-defined]
        self.emit(kern)

    def _slot_of(self, buf: K.Buffer) -> int:
        try:
            return self._buf_slot[buf]
        except KeyError:
            raise CompileError(f"{self.node.op} '{self.node.name}': kernel uses a buffer that "
                               f"is not an input, output or temp: {buf}") from None

    def compute_shifted(self, out: K.TensorRef, ins: list, fn, name: str = "shifted") -> None:
        """``out[idx] = fn(rel_ins, idx)`` as one kernel whose IR addresses every buffer
        relative to the lowest view offset used on it; those bases become per-call pointer
        offsets (as for the GEMM template). Kernels that differ only in where their views
        start (one per RNN timestep) thus share one compiled function."""
        refs = [out] + list(ins)
        base: dict = {}
        for r in refs:
            base[r.buf] = min(base.get(r.buf, r.offset), r.offset)
        rel = [K.TensorRef(r.buf, r.shape, r.strides, r.offset - base[r.buf]) for r in refs]
        op = K.compute(rel[0], lambda *i: fn(rel[1:], i), name)
        bufs = list(dict.fromkeys(_buffers_of(op.body) + [out.buf]))
        kern = schedule(op, "__K__", bufs)
        kern.offsets = [base.get(b, 0) for b in kern.buffers]  # type: ignore[attr-defined]
        self.emit(kern)

    def emit(self, kern) -> None:
        try:
            slots = [self._buf_slot[b] for b in kern.buffers]
        except KeyError as e:
            raise CompileError(f"{self.node.op} '{self.node.name}': kernel uses a buffer that "
                               f"is not an input, output or temp: {e}") from None
        self._out.append(LoweredKernel(kern, slots, self.node.name, node_op=self.node.op))

    def copy(self, dst: K.TensorRef, src: K.TensorRef) -> None:
        """dst = src elementwise (shapes must match; views allowed)."""
        if tuple(dst.shape) != tuple(src.shape):
            raise CompileError(f"copy {src.shape} -> {dst.shape}")
        self.compute(dst, lambda *i: K.cast(dst.dtype, src[i]), "copy")

    def gemm(self, a: K.TensorRef, b: K.TensorRef, c: K.TensorRef, *, trans_a: bool = False,
             trans_b: bool = False, alpha: float = 1.0, beta: float = 0.0,
             bias: K.TensorRef | None = None, bias_axis: str | None = None,
             bias_batch_stride: int = 0, b_kmap: tuple | None = None,
             c_ngrid: tuple | None = None, epilogue: tuple = (),
             residual: K.TensorRef | None = None, b_same: tuple | None = None,
             b_cols: tuple | None = None) -> None:
        """C[batch, m, n] = alpha * op(A) @ op(B) + beta*C (+ bias along m or n; with
        ``bias_batch_stride`` each batch entry reads its own bias, e.g. one per conv group).

        ``a``, ``b``, ``c`` are 2-D (m, k) / 3-D (batch, m, k) views; strides express the
        transposes, so no data is moved before the template's own packing. ``b_kmap``,
        ``c_ngrid``, ``b_same``, ``b_cols`` and ``epilogue`` are passed to ``GemmSpec``
        (implicit-GEMM convolution and weight gradient, fused epilogue); ``residual`` is the "add" operand, laid out exactly like ``c``.
        """
        from ..codegen.gemm import GemmSpec, gemm_kernel
        from ..codegen.ptx import gemm_template as gpu_gemm_template
        from ..codegen.ptx import gpu_lowering
        from ..codegen.targets import gemm_isa

        def three(r: K.TensorRef):
            if r.ndim == 2:
                return (1,) + tuple(r.shape), (0,) + tuple(r.strides)
            if r.ndim == 3:
                return tuple(r.shape), tuple(r.strides)
            raise CompileError(f"gemm operand must be 2-D or 3-D, got {r.shape}")

        (ba, a0, a1), sa = three(a)
        (bb, b0, b1), sb = three(b)
        (bc, M, N), sc = three(c)
        if trans_a:
            a0, a1, sa = a1, a0, (sa[0], sa[2], sa[1])
        if trans_b:
            b0, b1, sb = b1, b0, (sb[0], sb[2], sb[1])
        Kd = a1
        if a0 != M or b1 != N or b0 != Kd:
            raise CompileError(f"gemm shapes: A{a.shape}{'T' if trans_a else ''} "
                               f"B{b.shape}{'T' if trans_b else ''} C{c.shape}")
        batch = bc
        if ba == 1 and batch > 1:
            sa = (0, sa[1], sa[2])
        if bb == 1 and batch > 1:
            sb = (0, sb[1], sb[2])
        dt = c.dtype.name
        if dt not in ("float32", "float64") or a.dtype != c.dtype or b.dtype != c.dtype:
            raise CompileError(f"{self.node.op} '{self.node.name}': matrix product of "
                               f"{a.dtype.name}/{b.dtype.name} -> {dt} is not supported yet "
                               "(float32 and float64 only)")
        bias_stride = int(bias_batch_stride)

        def fields() -> dict:   # the GemmSpec the prepacking decisions plan with
            return dict(batch=batch, M=M, N=N, K=Kd, dtype=dt, a_strides=sa, b_strides=sb,
                        c_strides=sc, bias=bias_axis if bias is not None else None,
                        b_kmap=b_kmap, c_ngrid=c_ngrid, b_same=b_same, b_cols=b_cols)

        a_panel = 0
        if not gpu_lowering() and not trans_a:
            a_panel = self._prepack_a(a, M, Kd, sa, fields())
            if a_panel:
                sa = (0, 0, 0)
        b_panel = 0
        if not gpu_lowering() and not a_panel:
            b_panel = self._prepack_b(b, Kd, N, sb, fields())
            if b_panel:
                sb = (0, 0, 0)
        spec = GemmSpec(batch=batch, M=M, N=N, K=Kd, dtype=dt, a_strides=sa, b_strides=sb,
                        c_strides=sc, alpha=float(alpha), beta=float(beta),
                        bias=bias_axis if bias is not None else None,
                        bias_stride_batch=bias_stride, b_kmap=b_kmap, c_ngrid=c_ngrid,
                        epilogue=tuple(epilogue), a_panel=a_panel, b_panel=b_panel,
                        b_same=b_same, b_cols=b_cols, share_b=not gpu_lowering())
        # pointers are passed already offset; views with element offsets become slot offsets
        bufs = [a.buf, b.buf, c.buf] + ([bias.buf] if bias is not None else [])
        offs = [a.offset, b.offset, c.offset] + ([bias.offset] if bias is not None else [])
        if "add" in spec.epilogue:
            if residual is None or tuple(residual.strides) != tuple(c.strides):
                raise CompileError(f"{self.node.op} '{self.node.name}': the residual of a "
                                   "fused GEMM epilogue must be laid out like the output")
            bufs.append(residual.buf)
            offs.append(residual.offset)
        if gpu_lowering() and (b_kmap or c_ngrid or b_same or b_cols or spec.epilogue):
            raise CompileError(f"{self.node.op} '{self.node.name}': implicit-GEMM addressing "
                               "and fused epilogues are CPU-template features")
        if gpu_lowering():  # compiler.cuda_build: the PTX back end renders it from the spec
            kern = gpu_gemm_template(spec, bufs)
        else:
            gk = gemm_kernel("__K__", spec, gemm_isa())  # the AOT target's, else the host's
            writes = (2,)
            if gk.shared_bytes:   # B packed once for all tasks: the buffer, counters zeroed
                bufs.append(self.shared_packing(gk.shared_bytes, gk.shared_zero_bytes, dt))
                offs.append(0)
                writes = (2, len(bufs) - 1)
            kern = K.TemplateKernel("__K__", bufs, gk.ir, gk.n_tasks, gk.scratch_bytes,
                                    cost=gk.flops, note="gemm", writes=writes)
        kern.gemm_spec = spec  # type: ignore[attr-defined]
        kern.offsets = offs  # type: ignore[attr-defined]
        self.emit(kern)

    def shared_packing(self, nbytes: int, zero_bytes: int, dtype: str) -> K.Buffer:
        """A temporary of ``nbytes`` for a GEMM's shared packed B (``GemmSpec.share_b``)
        whose first ``zero_bytes`` (the claim counters) a kernel zeroes before every call."""
        d = as_dtype(dtype)
        buf = self.temp((-(-nbytes // d.itemsize),), d).buf
        self.compute(K.TensorRef(buf, (zero_bytes // d.itemsize,)),
                     lambda i: K.const(0, d), "zero_counters")
        return buf

    @property
    def direct_repack_min_pixels(self) -> int:
        """See ``DIRECT_REPACK_MIN_PIXELS``."""
        return DIRECT_REPACK_MIN_PIXELS

    def conv_direct(self, x: K.TensorRef, w: K.TensorRef, b: K.TensorRef | None,
                    y: K.TensorRef, geometry: dict, epilogue: tuple = (),
                    residual: K.TensorRef | None = None, *, dry_run: bool = False,
                    repack: bool = False) -> bool:
        """``y = conv(x, w) + b`` (+ epilogue) by the direct convolution template
        (``codegen/conv_template.py``) for contiguous NCHW x and w; y (and the residual,
        laid out like y) may have any positive strides. Returns False (nothing emitted) when
        it does not apply. The template reads its weights prepacked: a packable constant
        parameter (``compile_graph(constants=...)``) is stored so at bind time; other
        weights (training, executors) are repacked by a kernel on every run, worth it when
        each weight serves at least ``DIRECT_REPACK_MIN_PIXELS`` output pixels, or when the
        caller says so (``repack``: it computed the weights itself). ``dry_run``: only
        answer. ``geometry``: the ``ConvSpec`` fields N, C, H, W, F, kh, ... Wo."""
        from ..codegen.conv_template import ConvSpec, conv_kernel, plan_conv, weight_layout
        from ..codegen.targets import gemm_isa

        dt = y.dtype.name
        if dt not in ("float32", "float64") or any(r.dtype != y.dtype for r in (x, w)) or \
                (b is not None and (b.dtype != y.dtype or tuple(b.strides) != (1,))):
            return False
        g = geometry
        want = {x: (g["N"], g["C"], g["H"], g["W"]), w: (g["F"], g["C"], g["kh"], g["kw"])}
        for ref, shape in want.items():
            dense = K.TensorRef(ref.buf, shape, None, ref.offset)
            if ref.size != dense.size or tuple(ref.strides) != tuple(dense.strides):
                return False
        if tuple(y.shape) != (g["N"], g["F"], g["Ho"], g["Wo"]) or min(y.strides) < 1 or \
                (residual is not None and (tuple(residual.shape) != tuple(y.shape) or
                                           tuple(residual.strides) != tuple(y.strides))):
            return False
        spec = ConvSpec(dtype=dt, bias=b is not None, epilogue=tuple(epilogue),
                        y_strides=tuple(y.strides), **g)
        isa = gemm_isa()
        plan = plan_conv(spec, isa)
        if plan.lanes * 4 > 5 * spec.F or (plan.panels > 1 and plan.last.NV < 2 < plan.NV):
            # a fifth of the vector lanes would hold no output channel, or a one-vector last
            # panel beside wide ones (its 1 x MR tile is load-bound: 64+8 channels measured
            # 10 % slower than the GEMM, 64+16 even): the GEMM
            return False
        slot = self._buf_slot.get(w.buf)
        layout = weight_layout(spec, isa)
        Kd = spec.C * spec.kh * spec.kw
        constant = slot in self._slots.packable and w.offset == 0 and \
            w.buf.size == spec.F * Kd and self._slots.layouts.get(slot, layout) == layout
        if not constant and (spec.C % plan.CB or not (
                repack or spec.N * spec.Ho * spec.Wo >= DIRECT_REPACK_MIN_PIXELS)):
            return False
        if dry_run:
            return True
        if constant:
            self._claim(slot, layout, spec.F, Kd, w.dtype.itemsize,
                        nbytes=plan.lanes * Kd * w.dtype.itemsize)
            wp = w
        else:
            wp = self._repack_conv_weight(w, spec, plan)
        ck = conv_kernel("__K__", spec, isa)
        bufs = [x.buf, wp.buf, y.buf] + ([b.buf] if b is not None else []) + \
            ([residual.buf] if "add" in spec.epilogue else [])
        offs = [x.offset, wp.offset, y.offset] + ([b.offset] if b is not None else []) + \
            ([residual.offset] if "add" in spec.epilogue else [])
        kern = K.TemplateKernel("__K__", bufs, ck.ir, ck.n_tasks, ck.scratch_bytes,
                                cost=ck.flops, note="conv", writes=(2,))
        kern.conv_spec = spec  # type: ignore[attr-defined]
        kern.offsets = offs  # type: ignore[attr-defined]
        self.emit(kern)
        return True

    def _repack_conv_weight(self, w: K.TensorRef, spec, plan) -> K.TensorRef:
        """A temporary holding the (F, C, kh, kw) weight ``w`` in the direct convolution's
        layout (``conv_template.pack_weights``: per panel (blocks, kh, kw, CB, width), the
        last panel ``NR_last`` wide, zero lanes past F), written by a kernel every run (one
        per panel width)."""
        NR, F, P = plan.NR, spec.F, plan.panels
        Kd = spec.C * spec.kh * spec.kw
        t = self.temp((plan.lanes * Kd,), w.dtype)
        parts = [(0, P - 1, NR), (P - 1, 1, plan.NR_last)] if plan.NR_last != NR or P == 1 \
            else [(0, P, NR)]
        for p0, count, width in parts:
            if not count:
                continue
            view = K.TensorRef(t.buf, (count, plan.blocks, spec.kh, spec.kw, plan.CB, width),
                               None, p0 * NR * Kd)

            def fn(p, blk, ky, kx, c, lane, p0=p0):
                oc = (p + K.const(p0, "int64")) * K.const(NR, "int64") + lane
                ch = blk * K.const(plan.CB, "int64") + c
                v = w[K.minimum(oc, K.const(F - 1, "int64")), ch, ky, kx]
                return K.select(oc.lt(K.const(F, "int64")), v, K.const(0, w.dtype))

            self.compute(view, fn, "conv_weight_pack")
        return t

    def pool2d(self, x: K.TensorRef, y: K.TensorRef, **fields) -> None:
        """``y = Pooling(x)`` by the 2-D pooling template (``codegen/pool_template.py``):
        contiguous NCHW float32/float64 views, CPU only (``cpu_templates``)."""
        from ..codegen.pool_template import template_kernel
        self.emit(template_kernel(x, y, **fields))

    def conv_wgrad_direct(self, x: K.TensorRef, dy: K.TensorRef, dw: K.TensorRef,
                          geometry: dict) -> bool:
        """dw = the weight gradient of a convolution by the direct template
        (``codegen/conv_wgrad_template.py``): dy transposed to pixel-major, the template
        summing per pixel slice into a partial buffer, then one reduction into dw. x, dy and
        dw contiguous NCHW / (F, C, kh, kw); False (nothing emitted) otherwise."""
        from ..codegen.conv_wgrad_template import WgradSpec, plan_wgrad, wgrad_kernel
        from ..codegen.targets import gemm_isa

        dt = dw.dtype.name
        if dt not in ("float32", "float64") or x.dtype != dw.dtype or dy.dtype != dw.dtype:
            return False
        g = geometry
        shapes = {x: (g["N"], g["C"], g["H"], g["W"]), dy: (g["N"], g["F"], g["Ho"], g["Wo"]),
                  dw: (g["F"], g["C"], g["kh"], g["kw"])}
        for ref, shape in shapes.items():
            if tuple(ref.shape) != shape or \
                    tuple(ref.strides) != K.contiguous_strides(shape):
                return False
        spec = WgradSpec(dtype=dt, **g)
        isa = gemm_isa()
        p = plan_wgrad(spec, isa)
        F, taps = spec.F, spec.kh * spec.kw
        i64 = "int64"
        dyt = self.temp((spec.N, spec.Ho, spec.Wo, p.Fp), dy.dtype)
        self.compute(dyt, lambda n, oy, ox, f: K.select(
            f.lt(K.const(F, i64)), dy[n, K.minimum(f, K.const(F - 1, i64)), oy, ox],
            K.const(0, dy.dtype)), "dy_pixel_major")
        part = self.temp((p.slices, taps, spec.C, p.Fp), dw.dtype)
        wk = wgrad_kernel("__K__", spec, isa)
        kern = K.TemplateKernel("__K__", [x.buf, dyt.buf, part.buf], wk.ir, wk.n_tasks, 0,
                                cost=wk.flops, note="conv_wgrad", writes=(2,))
        kern.offsets = [x.offset, dyt.offset, part.offset]  # type: ignore[attr-defined]
        self.emit(kern)
        kw = spec.kw

        def total(f, c, ky, kx):
            r = K.reduce_axis(p.slices, "s")
            return K.reduce("sum", part[r.var, ky * K.const(kw, i64) + kx, c, f], [r])

        self.compute(dw, total, "wgrad_sum")
        return True

    def pool2d_max_backward(self, dy: K.TensorRef, x: K.TensorRef, y: K.TensorRef,
                            dx: K.TensorRef, **fields) -> None:
        """dx of a 2-D max pooling by its template (``codegen/pool_backward_template.py``):
        contiguous NCHW float32/float64 views, CPU only."""
        from ..codegen.pool_backward_template import template_kernel
        self.emit(template_kernel(dy, x, y, dx, **fields))

    def _prepack_a(self, a: K.TensorRef, M: int, Kd: int, sa: tuple, fields: dict) -> int:
        """The panel height when the A operand -- the whole of a packable constant
        parameter, row-major (M, K), shared by the batch -- is stored prepacked, else 0.
        Claims the slot's layout (and its padded size) on first use."""
        from ..codegen.gemm import GemmSpec, prepack_order, prepack_rows
        from ..codegen.targets import gemm_isa

        slot = self._buf_slot.get(a.buf)
        table = self._slots
        if slot not in table.packable or a.offset != 0 or sa[0] != 0 or \
                tuple(sa[1:]) != (Kd, 1) or a.buf.size != M * Kd or \
                a.dtype.name not in ("float32", "float64"):
            return 0
        spec = GemmSpec(**fields)
        panel = prepack_rows(spec, gemm_isa())
        layout = ("gemm_a", M, Kd, panel, prepack_order(spec, gemm_isa()) if panel else None)
        return self._claim(slot, layout, M, Kd, a.dtype.itemsize)

    def _prepack_b(self, b: K.TensorRef, Kd: int, N: int, sb: tuple, fields: dict) -> int:
        """The panel width when the B operand -- the whole of a packable constant parameter,
        (K, N) row-major or its transpose (a FullyConnected weight), shared by the batch --
        is stored prepacked, else 0. Claims the slot's layout on first use."""
        from ..codegen.gemm import GemmSpec, prepack_cols
        from ..codegen.targets import gemm_isa

        slot = self._buf_slot.get(b.buf)
        table = self._slots
        if tuple(sb[1:]) == (1, Kd):
            transposed = True
        elif tuple(sb[1:]) == (N, 1):
            transposed = False
        else:
            return 0
        if slot not in table.packable or b.offset != 0 or sb[0] != 0 or \
                b.buf.size != N * Kd or b.dtype.name not in ("float32", "float64"):
            return 0
        panel = prepack_cols(GemmSpec(**fields), gemm_isa())
        return self._claim(slot, ("gemm_b", Kd, N, panel, transposed), N, Kd,
                           b.dtype.itemsize)

    def _claim(self, slot: int, layout: tuple, outer: int, Kd: int, itemsize: int,
               nbytes: int | None = None) -> int:
        """Record ``layout`` (panel size ``layout[3]``, 0: none) for ``slot`` unless the slot
        holds another one already, and size the slot for whole panels of ``outer`` rows or
        columns (or ``nbytes``); returns the panel size granted (0: keep the plain array)."""
        panel = layout[3]
        table = self._slots
        if not panel or table.layouts.get(slot, layout) != layout:
            return 0
        table.layouts[slot] = layout
        table.nbytes[slot] = nbytes if nbytes is not None else \
            -(-outer // panel) * panel * Kd * itemsize
        return panel


def schedule_deferred(lk: LoweredKernel) -> LoweredKernel:
    """The kernel of a deferred compute, exactly as ``LowerCtx.compute`` would have made it."""
    bufs = list(lk.buf_slots)
    kern = schedule(lk.compute, "__K__", bufs)
    return LoweredKernel(kern, [lk.buf_slots[b] for b in bufs], lk.node, node_op=lk.node_op,
                         members=[lk.node])


def _buffers_of(e: K.Expr) -> list:
    out: list = []
    seen: set = set()

    def go(x):
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, K.Load):
            out.append(x.buf)
        for c in K.children(x):
            go(c)

    go(e)
    return out
