"""The README's test command reports failure when a test fails (so CI does too)."""

import subprocess

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _run_make_pytest(tmp_path, body: str) -> subprocess.CompletedProcess:
    test_file = tmp_path / "test_sample.py"
    test_file.write_text(body)
    return subprocess.run(
        ["make", "--no-print-directory", "pytest", f"PYTEST_ARGS={test_file} -p no:cacheprovider -q"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_the_test_command_fails_when_a_test_fails(tmp_path):
    result = _run_make_pytest(tmp_path, "def test_fails():\n    assert 1 == 2\n")
    assert result.returncode != 0, result.stdout
    assert "1 failed" in result.stdout


def test_the_test_command_succeeds_when_tests_pass(tmp_path):
    result = _run_make_pytest(tmp_path, "def test_passes():\n    assert 1 == 1\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
