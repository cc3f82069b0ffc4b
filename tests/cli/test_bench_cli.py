"""`mxc bench`: the command line only (the benchmarks themselves are not run in tests)."""
from click.testing import CliRunner

from mxc.cli.main import main


def test_bench_help():
    r = CliRunner().invoke(main, ["bench", "--help"])
    assert r.exit_code == 0, r.output
    assert "--repeats" in r.output and "--threads" in r.output


def test_bench_unknown_name_fails_clearly():
    r = CliRunner().invoke(main, ["bench", "no-such-bench"])
    assert r.exit_code != 0
    assert "unknown benchmark" in r.output and "no-such-bench" in r.output
