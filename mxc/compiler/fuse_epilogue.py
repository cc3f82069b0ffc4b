"""Epilogue fusion: the elementwise consumers of a matrix product run inside the GEMM template.

A Convolution / FullyConnected / dot lowers to GEMM template kernels writing a temporary; the
``relu`` (Activation, relu op) and residual ``elemwise_add`` computes that follow it would
read that temporary back once each. Here such a consumer is folded into the template's
epilogue (``GemmSpec.epilogue``): the GEMM kernels are rendered again, writing the consumer's
output directly, with the residual as one more operand, and the consumer kernel and the
temporary disappear. Repeated, this turns ``conv -> add -> relu`` (a ResNet block's tail) into
one kernel per convolution. The BatchNorm affine needs no epilogue step: inference binds fold
it into the convolution's weights and bias (``fold_constants``).

A consumer is folded when:

* its body is ``relu(y)``, ``y + r`` or ``r + y`` (after a fold: ``relu`` may follow ``add``)
  with every load element for element, its output contiguous and of y's dtype and size;
* y is a temporary written only by GEMM templates without an epilogue, none reading C
  (beta == 0), and read by nothing but this consumer (not a graph output);
* the residual r is ready when the GEMMs run: not written between the first GEMM and the
  consumer -- or, failing that, the GEMMs can move down to the consumer's place because
  nothing between rewrites their inputs.

Not applied when lowering for the GPU (the PTX GEMM has no epilogue steps). Needs: the
deferred lowered kernel list (``compiler.lower``) and the slot table. Provides: the new list,
the fused groups and the slots no kernel writes any more.
"""
from __future__ import annotations

import dataclasses

from ..ir import kernel as K
from .lower import LoweredKernel, _buffers_of

_FLOATS = ("float32", "float64")


def fuse_gemm_epilogues(lowered: list, nbytes: list, kinds: list, n_fwd: int,
                        keep: set) -> tuple[list, int, set]:
    """(kernels, forward kernel count, slots left unwritten) with consumers folded in."""
    from ..codegen.ptx import gpu_lowering

    if gpu_lowering():
        return lowered, n_fwd, set()
    items = list(lowered)
    gone: set = set()
    changed = True
    while changed:
        changed = False
        readers, writers = _access(items)
        for pos, lk in enumerate(items):
            if lk.kernel is not None:
                continue
            m = _match(lk, readers, writers, items, nbytes, kinds, keep, pos, n_fwd)
            if m is None:
                continue
            y, r, step, gemms, move = m
            so = lk.buf_slots[lk.compute.out.buf]
            new = [_refold(items[g], y, so, r, step, lk.node) for g in gemms]
            if move:
                keep_items = [it for i, it in enumerate(items) if i not in gemms and i != pos]
                at = pos - len(gemms)
                items = keep_items[:at] + new + keep_items[at:]
            else:
                for g, nk in zip(gemms, new):
                    items[g] = nk
                items.pop(pos)
            n_fwd -= 1 if pos < n_fwd else 0
            gone.add(y)
            changed = True
            break
    return items, n_fwd, gone


# ---------------------------------------------------------------------------------------------
def _access(items: list) -> tuple[dict, dict]:
    readers: dict = {}
    writers: dict = {}
    for i, lk in enumerate(items):
        if lk.kernel is None:
            op = lk.compute
            w = {lk.buf_slots[op.out.buf]}
            rd = {lk.buf_slots[b] for b in _buffers_of(op.body)}
        else:   # a template may read and write any argument
            w = rd = set(lk.slots)
        for s in rd:
            readers.setdefault(s, []).append(i)
        for s in w:
            writers.setdefault(s, []).append(i)
    return readers, writers


def _pattern(body: K.Expr):
    """("relu", y_load) | ("add", y_load, r_load) candidates of a consumer body, else None."""
    if isinstance(body, K.Select) and isinstance(body.cond, K.Bin) and body.cond.op == "gt":
        x = body.cond.a
        zero = body.cond.b
        if (isinstance(zero, K.Const) and zero.value == 0 and body.a == x
                and isinstance(body.b, K.Const) and body.b.value == 0 and isinstance(x, K.Load)):
            return [("relu", x, None)]
        return None
    if isinstance(body, K.Bin) and body.op == "add" and isinstance(body.a, K.Load) \
            and isinstance(body.b, K.Load) and body.a.dtype == body.b.dtype:
        return [("add", body.a, body.b), ("add", body.b, body.a)]
    return None


def _template_spec(k):
    """The spec of a template with an epilogue: a GEMM's ``GemmSpec`` or a direct
    convolution's ``ConvSpec`` (both write buffer 2 and take the residual last), else None."""
    return getattr(k, "gemm_spec", None) or getattr(k, "conv_spec", None)


def _is_gemm_writer(lk: LoweredKernel, y: int, step: str) -> bool:
    """A GEMM or direct convolution template writing y as its output (buffer 2), to which
    ``step`` can be appended: "add" to an empty epilogue (one residual operand), "relu" to
    one without a relu."""
    spec = _template_spec(lk.kernel)
    if spec is None or getattr(spec, "beta", 0.0) != 0.0 or len(lk.slots) < 3 or \
            lk.slots[2] != y \
            or lk.slots.count(y) != 1:
        return False
    return not spec.epilogue if step == "add" else "relu" not in spec.epilogue


def _match(lk, readers, writers, items, nbytes, kinds, keep, pos, n_fwd):
    op = lk.compute
    out = op.out
    if out.dtype.name not in _FLOATS or out.offset != 0 or \
            tuple(out.strides) != K.contiguous_strides(out.shape):
        return None
    cands = _pattern(op.body)
    if not cands:
        return None
    own = _flat(op)
    so = lk.buf_slots[out.buf]
    for step, yl, rl in cands:
        y = lk.buf_slots[yl.buf]
        if yl.dtype != out.dtype or not _same(yl.index, own):
            continue
        if y in keep or kinds[y] != "temp" or nbytes[y] != nbytes[so] or y == so:
            continue
        gemms = writers.get(y, [])
        if not gemms or any(g > pos or not _is_gemm_writer(items[g], y, step) for g in gemms):
            continue
        if sorted(set(readers.get(y, []))) != sorted(set(gemms) | {pos}):
            continue
        if any((g < n_fwd) != (pos < n_fwd) for g in gemms):
            continue
        r = None
        if rl is not None:
            r = lk.buf_slots[rl.buf]
            if r in (y, so) or not _same(rl.index, own) or nbytes[r] < nbytes[y]:
                continue
        first = min(gemms)
        late = [w for w in writers.get(r, []) if first <= w < pos] if r is not None else []
        move = bool(late)
        if move and not _movable(items, gemms, pos, writers, y):
            continue
        return y, r, step, gemms, move
    return None


def _movable(items, gemms, pos, writers, y) -> bool:
    """Whether the GEMMs may run at ``pos`` instead: no kernel in between (GEMMs excepted)
    writes what they read, and none of them reads what another one wrote before."""
    for g in gemms:
        for s in items[g].slots:
            if s == y:
                continue
            for w in writers.get(s, []):
                if g < w < pos and w not in gemms:
                    return False
    return True


def _flat(op: K.ComputeOp) -> K.Expr:
    if not op.axes:
        return K.const(0, K.INDEX)
    return K.TensorRef(op.out.buf, op.out.shape).flat_index(op.axes)


def _same(index: K.Expr, own: K.Expr) -> bool:
    from .fuse import _lin   # the fusion pass's linear-form comparison of index expressions
    return _lin(index) == _lin(own)


def _refold(lk: LoweredKernel, y: int, so: int, r, step: str, node: str) -> LoweredKernel:
    """The GEMM / convolution template ``lk`` rendered again with ``step`` appended to its
    epilogue, writing slot ``so`` instead of ``y`` (and reading the residual slot ``r``)."""
    from ..codegen.conv_template import conv_kernel
    from ..codegen.gemm import gemm_kernel
    from ..codegen.targets import gemm_isa

    old = lk.kernel
    old_spec = _template_spec(old)
    spec = dataclasses.replace(old_spec, epilogue=old_spec.epilogue + (step,))
    is_conv = getattr(old, "gemm_spec", None) is None
    gk = (conv_kernel if is_conv else gemm_kernel)("__K__", spec, gemm_isa())
    bufs = list(old.buffers)
    slots = [so if s == y else s for s in lk.slots]
    offs = list(getattr(old, "offsets", None) or [0] * len(bufs))
    # the shared packed-B buffer (GemmSpec.share_b) stays the last argument
    tail = 0 if is_conv or not getattr(gk, "shared_bytes", 0) else 1
    if step == "add":   # the residual is laid out like C: same element offset
        at = len(bufs) - tail
        bufs.insert(at, K.Buffer(f"res{r}", bufs[2].dtype, bufs[2].size))
        slots.insert(at, r)
        offs.insert(at, offs[2])
    kern = K.TemplateKernel("__K__", bufs, gk.ir, gk.n_tasks, gk.scratch_bytes, cost=gk.flops,
                            note=("conv+" if is_conv else "gemm+") + "+".join(spec.epilogue),
                            writes=(2, len(bufs) - 1) if tail else (2,))
    setattr(kern, "conv_spec" if is_conv else "gemm_spec", spec)
    kern.offsets = offs  # type: ignore[attr-defined]
    members = list(lk.members or [lk.node])
    if node not in members:
        members.append(node)
    return LoweredKernel(kern, slots, node, node_op=lk.node_op, members=members)
