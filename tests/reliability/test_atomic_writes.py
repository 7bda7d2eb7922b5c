"""Issue 12.2: outputs are written atomically; killed and concurrent writers lose nothing.

Writers run in subprocesses (only :mod:`embedder.files` is imported there, no
TensorFlow), slowed down chunk by chunk so that ``kill -9`` lands at a known point.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from embedder.files import atomic_path, atomic_write_bytes, clean_stale_temporaries

OLD = b"the earlier, good output\n"
CHUNK = 64 * 1024
N_CHUNKS = 8

_WRITER = textwrap.dedent(
    f"""
    import os, sys, time
    from embedder.files import atomic_path

    target, fill, hold = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
    replace = os.replace

    def say(line):  # tell the test where we are; wait there to be killed if asked
        print(line, flush=True)
        time.sleep(60.0 if line == hold else 0.01)

    def slow_replace(src, dst):
        say("replacing")
        replace(src, dst)
        say("replaced")

    os.replace = slow_replace
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        for i in range({N_CHUNKS}):
            f.write(fill * {CHUNK})
            f.flush()
            say(f"chunk {{i}}")
    print("done", flush=True)
    """
)


def _start_writer(target, fill, hold="none"):
    """A writer that stops for 60 s at the point ``hold``, where the test kills it.

    Stopping there (rather than racing a short pause) keeps the test exact on a busy
    machine; other points pass after 10 ms, so concurrent writers interleave.
    """
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target), fill, hold],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _kill_at(process, line):
    for got in process.stdout:
        if got.strip() == line:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            return
    process.wait(timeout=30)
    pytest.fail(f"the writer ended before {line!r}: {process.stderr.read()}")


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("point", ["chunk 0", "chunk 3", "chunk 7", "replacing"])
def test_kill_before_the_rename_keeps_the_old_file(tmp_path, point):
    target = tmp_path / "embeddings.npy"
    target.write_bytes(OLD)
    _kill_at(_start_writer(target, "x", hold=point), point)
    assert target.read_bytes() == OLD  # intact, never partial
    assert len(_temporaries(tmp_path)) == 1  # the killed writer's leftover
    atomic_write_bytes(target, b"next run")  # the next save cleans it up
    assert target.read_bytes() == b"next run"
    assert _temporaries(tmp_path) == []


def test_kill_after_the_rename_leaves_the_complete_new_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_bytes(OLD)
    _kill_at(_start_writer(target, "y", hold="replaced"), "replaced")
    assert target.read_bytes() == b"y" * (N_CHUNKS * CHUNK)
    assert _temporaries(tmp_path) == []


def test_concurrent_writers_give_one_complete_file(tmp_path):
    target = tmp_path / "shared.csv"
    writers = [_start_writer(target, fill) for fill in "abcd"]
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
    content = target.read_bytes()
    assert len(content) == N_CHUNKS * CHUNK
    assert len(set(content)) == 1 and content[:1] in (b"a", b"b", b"c", b"d")
    assert _temporaries(tmp_path) == []


def test_failed_write_removes_its_temporary_and_keeps_the_target(tmp_path):
    target = tmp_path / "report.md"
    target.write_bytes(OLD)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == OLD
    assert _temporaries(tmp_path) == []


def test_temporaries_of_live_writers_are_kept(tmp_path):
    import fcntl

    def temporary(pid, hexdigit, locked=None, stem="out.csv", age=0.0):
        base = tmp_path / f".{stem}.{pid}-{hexdigit * 32}"
        base.with_name(base.name + ".tmp").write_bytes(b"partial")
        if age:
            os.utime(base.with_name(base.name + ".tmp"), (time.time() - age,) * 2)
        if locked is None:
            return None
        fd = os.open(base.with_name(base.name + ".lock"), os.O_CREAT | os.O_WRONLY)
        if locked:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        os.close(fd)
        return None

    # pid 1 is alive in every namespace, and says nothing about a writer elsewhere
    live = temporary(1, "0", locked=True, age=7200)  # an old, slow, live writer
    temporary(1, "1", locked=False)  # its writer ended: the kernel dropped the lock
    temporary(999999999, "2", locked=None)  # no lock (an older version): young, kept
    temporary(1, "3", locked=None, age=7200)  # no lock and old: stale
    temporary(1, "4", locked=False, stem="other.csv")
    fd = os.open(tmp_path / f".out.csv.1-{'5' * 32}.lock", os.O_CREAT | os.O_WRONLY)
    os.close(fd)  # a lock left without its temporary (killed after the rename)
    try:
        assert clean_stale_temporaries(tmp_path, "out.csv") == 2
    finally:
        os.close(live)
    assert _temporaries(tmp_path) == [f".other.csv.1-{'4' * 32}.tmp",
                                      f".out.csv.1-{'0' * 32}.tmp",
                                      f".out.csv.999999999-{'2' * 32}.tmp"]
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == [
        f".other.csv.1-{'4' * 32}.lock", f".out.csv.1-{'0' * 32}.lock"]


def _pid_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_NAMESPACED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from embedder.files import atomic_path

    target, go, wanted = sys.argv[1], sys.argv[2], int(sys.argv[3])
    while True:  # pids count up from 1 in a fresh namespace: fork until ours is `wanted`
        pid = os.fork()
        if pid == 0 and os.getpid() == wanted:
            break
        if pid == 0:
            os._exit(0)
        status = os.waitpid(pid, 0)[1]
        if pid == wanted:
            sys.exit(os.waitstatus_to_exitcode(status))
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(b"work of " + str(os.getpid()).encode())
        f.flush()
        print("writing", flush=True)
        while not os.path.exists(go):  # the other writer runs its clean-up meanwhile
            time.sleep(0.02)
    print("done", flush=True)
    """
)


def test_writer_in_another_pid_namespace_keeps_its_temporary(tmp_path):
    """Two PID namespaces on one folder: the writer's pid there is no process here."""
    if shutil.which("unshare") is None:
        pytest.skip("the unshare command (util-linux) is not installed")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid is not allowed here: {probe.stderr.strip()[:200]}")
    target, go = tmp_path / "shared.npy", tmp_path / "go"
    wanted = next(pid for pid in range(20, 30000) if not _pid_exists(pid))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c",
         _NAMESPACED_WRITER, str(target), str(go), str(wanted)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout.readline().strip() == "writing", writer.stderr.read()
        (partial,) = _temporaries(tmp_path)
        assert partial.startswith(f".shared.npy.{wanted}-")  # its pid inside its namespace
        atomic_write_bytes(target, b"second writer")  # cleans up stale temporaries first
        assert _temporaries(tmp_path) == [partial]
        go.touch()
        out, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    assert writer.returncode == 0 and out.strip() == "done", err
    assert target.read_bytes().startswith(b"work of ")  # its complete work, renamed last
    assert _temporaries(tmp_path) == []


def test_writing_under_a_regular_file_names_the_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"cannot write .*file/out\.npy: a part of its folder "
                       r".*file is a regular file, expected a folder"):
        atomic_write_bytes(tmp_path / "file" / "out.npy", b"")
