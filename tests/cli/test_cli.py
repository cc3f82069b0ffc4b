"""The mxc command line: demo, run, inspect (through click's test runner)."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mxc.cli.main import main

LENET = Path(__file__).resolve().parents[2] / "mxc" / "models" / "lenet"


def _run(args):
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    return r


def test_demo_matches_mxnet():
    r = _run(["demo", "--repeat", "2"])
    assert r.exit_code == 0, r.output
    assert "vs MXNet" in r.output and "(OK)" in r.output


def test_run_writes_output(tmp_path):
    x = np.load(LENET / "in_data.npy")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    r = _run(["run", str(LENET / "lenet-symbol.json"), "--params",
              str(LENET / "lenet-0000.params"), "--input", f"data={tmp_path / 'x.npy'}",
              "--output", str(out)])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(out), np.load(LENET / "out_0.npy"), rtol=1e-4, atol=1e-5)


def test_run_reports_bad_input_shape(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 28, 28), np.float32))
    r = CliRunner().invoke(main, ["run", str(LENET / "lenet-symbol.json"), "--params",
                                  str(LENET / "lenet-0000.params"), "--input",
                                  f"data={tmp_path / 'x.npy'}"])
    assert r.exit_code != 0
    assert "lenet_conv0" in r.output or "shape" in r.output


def test_inspect_table_json_and_dumps():
    sym = str(LENET / "lenet-symbol.json")
    r = _run(["inspect", sym, "--shape", "data=1,1,28,28", "--params",
              str(LENET / "lenet-0000.params"), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["parameters"] == 431080
    assert any(n["op"] == "Convolution" and n["flops"] > 0 for n in info["nodes"])
    r = _run(["inspect", sym, "--shape", "data=1,1,28,28", "--dump-ir", "--dump-llvm"])
    assert r.exit_code == 0, r.output
    assert "for " in r.output and "define void @mxc_k" in r.output


def test_inspect_missing_shape_names_the_input():
    r = CliRunner().invoke(main, ["inspect", str(LENET / "lenet-symbol.json")])
    assert r.exit_code != 0
    assert "data" in r.output


@pytest.mark.parametrize("content,needle", [
    ("{not json", "invalid JSON"),
    ('{"nodes": [{"op": "NoSuchOp", "name": "a", "inputs": []}], "arg_nodes": [], '
     '"heads": [[0, 0, 0]]}', "NoSuchOp"),
])
def test_inspect_bad_json(tmp_path, content, needle):
    p = tmp_path / "bad-symbol.json"
    p.write_text(content)
    r = CliRunner().invoke(main, ["inspect", str(p), "--shape", "data=1"])
    assert r.exit_code != 0
    assert needle in r.output
