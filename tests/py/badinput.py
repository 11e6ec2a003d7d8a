"""The hardening battery's runner: a bad input must end in a clean failure.

run_bad() runs the CLI under a timeout and an address-space limit and asserts what issue 17 asks of
every bad input: a non-zero exit (not a signal, not a hang, not an allocation abort) and exactly one
non-empty line on stderr, starting with the CLI's one error prefix. Tests add their own check that
nothing was left behind (no output directory, no temporary files).
"""
import resource
import subprocess

ERROR_PREFIX = "gptoss: error: "


def _limit_address_space(gib):
    def apply():
        b = gib << 30
        resource.setrlimit(resource.RLIMIT_AS, (b, b))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_bad(cmd, *, timeout=60, as_gib=8, input=None, cwd=None):
    """Runs cmd (a list; items are str()-ed) expecting a clean failure; returns the CompletedProcess."""
    cmd = [str(c) for c in cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                           preexec_fn=_limit_address_space(as_gib), input=input, cwd=cwd,
                           stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hung for {timeout} s: {' '.join(cmd)}")
    where = f"{' '.join(cmd)[:300]}\nstderr: {p.stderr[-1500:]}"
    assert p.returncode != 0, f"exit 0 on bad input: {where}"
    assert p.returncode > 0, f"killed by signal {-p.returncode}: {where}"
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {where}"
    assert lines[0].startswith(ERROR_PREFIX), f"stderr does not start with '{ERROR_PREFIX}': {where}"
    assert len(lines[0]) < 1000, f"error line of {len(lines[0])} characters: {where}"
    return p
