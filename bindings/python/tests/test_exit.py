"""Interpreter exit while the dispatcher still has notifications to deliver."""

import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import sys, time
    import datasync

    out = open(sys.argv[1], "w")
    ds = datasync.open("app", local=datasync.MemoryTier())
    users = ds.repo("User")

    def slow(rows):
        time.sleep(0.002)
        out.write(f"{len(rows)}\\n")
        out.flush()

    users.observe_all(slow)
    for i in range(200):
        users.save({"i": i})
    print("leaving without closing", flush=True)
    # No close(): the atexit hook must shut the instance down before finalisation.
    """
)


def test_exit_with_pending_notifications(tmp_path):
    out = tmp_path / "seen.txt"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    result = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "leaving without closing" in result.stdout
    assert "Fatal Python error" not in result.stderr
    seen = [int(line) for line in out.read_text().split()]
    assert seen and seen == sorted(seen)
    assert seen[-1] == 200, "the final state is delivered before the interpreter exits"


def test_exit_with_open_instance_and_logger(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(
        "import datasync\n"
        "datasync.add_logger(lambda *a: None, level='trace')\n"
        "ds = datasync.open('app', local=datasync.MemoryTier())\n"
        "ds.repo('User').observe_all(lambda rows: None)\n"
        "ds.repo('User').save({'x': 1})\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
