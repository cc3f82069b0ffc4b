"""``mxc inspect --svg FILE``: the compiled graph drawn with graphviz.

Every op node is a box labelled with its name, op and output shape; nodes fused into one
kernel sit in one cluster ("kernel k: members"); every edge is labelled with the storage of
the value it carries: its slot and, for planned temporaries, the byte offset in the
workspace arena (values sharing bytes are visible as equal offsets), "view" when the op
only reinterprets its input and "fused" when the value is never materialized. The DOT text
is rendered by graphviz's ``dot`` program; a FILE ending in ``.dot`` gets the DOT text
itself (no graphviz needed).
"""
from __future__ import annotations

import shutil
import subprocess

from ..base import MXNetError


def graph_dot(cg) -> str:
    """DOT text for a ``CompiledGraph`` (``compile_graph(..., codegen=False)`` suffices)."""
    graph = cg.graph
    plan = cg.memory
    offsets = plan.offsets if plan is not None else {}
    slots = cg.program.slots
    kernel_of: dict = {}
    groups = []
    for i, k in enumerate(cg.kernels):
        members = list(k.members or [k.node])
        for m in members:
            kernel_of.setdefault(m, i)
        if len(members) > 1:
            groups.append((i, members))

    def q(s: str) -> str:
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def storage(key) -> str:
        s = cg.entry_slot.get(key)
        if s is None:
            return ""
        info = slots[s]
        if info.kind == "fused" or info.nbytes == 0:
            return "fused"
        if s in offsets:
            return f"slot {s} @{offsets[s]}"
        return f"slot {s} ({info.kind})"

    lines = ["digraph mxc {", "  rankdir=TB;", '  node [shape=box, fontsize=10];',
             '  edge [fontsize=8];']
    in_group = set()
    for i, members in groups:
        lines.append(f"  subgraph cluster_k{i} {{")
        lines.append(f'    label={q(f"kernel {i}")}; style=filled; color="#dde8f8";')
        for m in members:
            lines.append(f"    {q(m)};")
            in_group.add(m)
        lines.append("  }")
    for n in graph.nodes:
        if n.is_variable:
            lines.append(f"  {q(n.name)} [shape=ellipse, label={q(n.name)}];")
            continue
        shape = cg.shapes.get((n.uid, 0))
        label = f"{n.name}\\n{n.op}\\n{tuple(shape) if shape is not None else ''}"
        lines.append(f"  {q(n.name)} [label=\"{label}\"];")
    for n in graph.nodes:
        for e in n.inputs:
            st = storage((e.node.uid, e.index))
            if not e.node.is_variable and e.node.opdef.inplace_identity:
                st = st + " (view)" if st else "view"
            lines.append(f"  {q(e.node.name)} -> {q(n.name)} [label={q(st)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_svg(cg, path: str) -> None:
    """Write the drawing of ``cg`` to ``path`` (SVG through graphviz, or DOT for ``.dot``)."""
    dot = graph_dot(cg)
    if path.endswith(".dot"):
        with open(path, "w") as f:
            f.write(dot)
        return
    exe = shutil.which("dot")
    if exe is None:
        raise MXNetError("--svg needs graphviz's `dot` program (apt-get install graphviz, or "
                         "conda install graphviz); or give a FILE ending in .dot for the DOT "
                         "text")
    r = subprocess.run([exe, "-Tsvg", "-o", path], input=dot, text=True, capture_output=True,
                       check=False)
    if r.returncode != 0:
        raise MXNetError(f"graphviz failed to draw the graph: {r.stderr.strip()[:500]}")
