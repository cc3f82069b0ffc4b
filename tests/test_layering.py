"""The dependency direction of DESIGN.md: ir <- codegen <- compiler <- frontend <- cli, and
ir <- runtime. A deployed model needs only runtime, so runtime must never import the compiler
or the code generator (checked on the source, so lazy imports inside functions count too)."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mxc"

FORBIDDEN = {
    "runtime": {"compiler", "codegen", "frontend", "cli"},
    "ir": {"compiler", "codegen", "runtime", "frontend", "cli"},
    "codegen": {"compiler", "runtime", "frontend", "cli"},
    "compiler": {"frontend", "cli"},
}


def _imports(path: Path, package: str) -> set:
    tree = ast.parse(path.read_text(), str(path))
    mods = set()
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                mods.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[:-node.level]) if path.name != "__init__.py" else \
                    list(parts[: len(parts) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
                mods.add(mod)
                if not node.module:
                    for a in node.names:
                        mods.add(mod + "." + a.name)
            else:
                mods.add(node.module)
    return {m for m in mods if m and m.startswith(package)}


def test_stage_imports_follow_the_design():
    bad = []
    for stage, forbidden in FORBIDDEN.items():
        for f in (PKG / stage).rglob("*.py"):
            for m in _imports(f, "mxc"):
                parts = m.split(".")
                if len(parts) > 1 and parts[1] in forbidden:
                    bad.append(f"{f.relative_to(PKG.parent)} imports {m}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_checker_sees_violations(tmp_path):
    # the checker itself must be able to fail: a fake runtime module importing the compiler
    fake = PKG / "runtime" / "_layering_probe.py"
    fake.write_text("from ..compiler import build\n")
    try:
        assert "mxc.compiler" in _imports(fake, "mxc")
    finally:
        fake.unlink()


def test_test_module_names_are_unique():
    # tests/ has no packages: two test files with one basename break collection
    names = [p.name for p in PKG.parent.joinpath("tests").rglob("test_*.py")]
    dups = sorted({n for n in names if names.count(n) > 1})
    assert not dups, f"duplicate test file names: {dups}"
