"""The attack suite: code a hostile model might write, each attempt contained, the host healthy.

Each test runs the attack inside a real ``namespace`` box and asserts both that the attack failed
inside the box and that the host is unaffected. Boxes are reused where the attack does not kill
the box; the attacks that do (bombs, forged frames, kills) get a fresh one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator

import pytest
from tests.sandbox.conftest import BACKENDS

from holdfast.sandbox import (
    HostFunctionSpec,
    SandboxPolicy,
    SyncSandbox,
    launch,
    open_sync_sandbox,
)

pytestmark = pytest.mark.sandbox

FAKE_KEY = "sk-holdfast-fake-" + "7" * 32


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every attack runs under bubblewrap and, as root, under the unshare fallback too (forced
    by ``SandboxPolicy(backend="unshare")`` even where bubblewrap is installed)."""
    return str(request.param)


@pytest.fixture(scope="module")
def box(backend: str) -> Iterator[SyncSandbox]:
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = FAKE_KEY
    os.environ["HOLDFAST_TEST_SECRET"] = FAKE_KEY
    try:
        sandbox = open_sync_sandbox(
            SandboxPolicy(cell_timeout_s=20, max_output_bytes=8000, backend=backend),  # type: ignore[arg-type]
            [HostFunctionSpec("echo", lambda value: value)],
        )
    finally:
        if old is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = old
        os.environ.pop("HOLDFAST_TEST_SECRET", None)
    yield sandbox
    sandbox.shutdown()


@pytest.fixture
def fresh(backend: str) -> Iterator[SyncSandbox]:
    sandbox = open_sync_sandbox(
        SandboxPolicy(
            cell_timeout_s=20,
            memory_mb=256,
            max_processes=32,
            workspace_mb=16,
            max_file_mb=8,
            max_output_bytes=8000,
            max_message_bytes=1 << 20,
            backend=backend,  # type: ignore[arg-type]
        ),
        [HostFunctionSpec("echo", lambda value: value)],
    )
    yield sandbox
    sandbox.shutdown()


def run(box: SyncSandbox, code: str) -> str:
    """Runs a cell that must complete normally and returns its echoed value."""
    r = box.execute(code)
    assert r.ok, f"{r.error}\n{r.stderr}"
    assert r.value_repr is not None
    return r.value_repr


def attempt(body: str) -> str:
    """A cell that reports the exception type an attempt raised, or 'ESCAPED' if none."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return f"try:\n{indented}\n    outcome = 'ESCAPED'\nexcept BaseException as e:\n    outcome = type(e).__name__ + ': ' + str(e)\noutcome"


# network ---------------------------------------------------------------------------------------


@pytest.fixture
def host_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on the host's loopback that records anything it receives."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    got: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            got.append(conn.recv(100))
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    stop.set()
    t.join()
    srv.close()


def test_tcp_to_host_loopback_is_blocked(
    box: SyncSandbox, host_listener: tuple[int, list[bytes]]
) -> None:
    port, got = host_listener
    out = run(
        box,
        attempt(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2).send(b'x')"),
    )
    assert out != "'ESCAPED'" and "Address family not supported" in out
    assert got == []


def test_udp_to_loopback_is_blocked(box: SyncSandbox) -> None:
    out = run(
        box,
        attempt(
            "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))"
        ),
    )
    assert out != "'ESCAPED'"


def test_tcp_and_udp_to_outside_are_blocked(box: SyncSandbox) -> None:
    out = run(box, attempt("import socket\nsocket.create_connection(('93.184.216.34', 80), 2)"))
    assert out != "'ESCAPED'"
    out = run(
        box,
        attempt(
            "import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'x', ('2001:4860:4860::8888', 53))"
        ),
    )
    assert out != "'ESCAPED'"


def test_network_is_blocked_below_seccomp_too(box: SyncSandbox) -> None:
    """Even a raw syscall finds no interface but loopback: the net namespace is empty."""
    out = run(
        box,
        "import os\nsorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else open('/proc/net/dev').read().count(':')",
    )
    assert out in ("['lo']", "1")


def test_dns_lookup_fails(box: SyncSandbox) -> None:
    out = run(box, attempt("import socket\nsocket.getaddrinfo('example.com', 80)"))
    assert out != "'ESCAPED'"


def test_raw_and_packet_sockets_are_blocked(box: SyncSandbox) -> None:
    out = run(
        box,
        attempt(
            "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)"
        ),
    )
    assert out != "'ESCAPED'"
    out = run(box, attempt("import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)"))
    assert out != "'ESCAPED'"
    out = run(box, attempt("import socket\nsocket.socket(socket.AF_NETLINK, socket.SOCK_RAW)"))
    assert out != "'ESCAPED'"


def test_network_tools_have_nothing_to_reach(box: SyncSandbox) -> None:
    r = box.execute(
        "import subprocess\n"
        "p = subprocess.run(['curl', '-sS', '--max-time', '3', 'http://93.184.216.34/'], capture_output=True)\n"
        "q = subprocess.run(['wget', '-q', '-T', '3', '-O-', 'http://127.0.0.1:1/'], capture_output=True)\n"
        "(p.returncode, q.returncode)"
    )
    assert r.ok, r.error
    codes = json.loads(r.value_repr.replace("(", "[").replace(")", "]"))  # type: ignore[union-attr]
    assert all(code != 0 for code in codes)


# secrets and the host's files ------------------------------------------------------------------


def test_host_environment_never_appears(box: SyncSandbox) -> None:
    out = run(
        box,
        "import os, glob\n"
        "found = [k for k, v in os.environ.items() if 'sk-holdfast-fake' in v]\n"
        "for p in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        if b'sk-holdfast-fake' in open(p, 'rb').read(): found.append(p)\n"
        "    except OSError: pass\n"
        "(found, sorted(os.environ))",
    )
    assert "sk-holdfast" not in out and "OPENAI_API_KEY" not in out
    assert out.startswith("([],")


def test_proc_1_environ_is_empty_of_host_values(box: SyncSandbox, backend: str) -> None:
    code = (
        "sorted(v.split(b'=')[0] for v in open('/proc/1/environ', 'rb').read().split(b'\\0') if v)"
    )
    if backend == "unshare":  # pid 1 is the launcher's root shell, out of the box's reach
        assert "PermissionError" in run(box, attempt(code))
        return
    out = run(box, code)
    assert "sk-holdfast" not in out and "HOLDFAST" not in out
    # bubblewrap's init has an empty environment; under unshare pid 1 is the worker itself
    assert set(eval(out)) <= {k.encode() for k in launch.BOX_ENV} | {b"PWD"}


def test_etc_shadow_and_host_home_are_invisible(box: SyncSandbox) -> None:
    out = run(box, attempt("open('/etc/shadow').read()"))
    assert "FileNotFoundError" in out
    out = run(
        box,
        "import os\n(os.listdir('/root'), os.path.exists('/home'), os.path.exists('/work/main'), "
        "sorted(os.listdir('/etc')))",
    )
    assert out.startswith("(['.pyenv'], False, False,") or out.startswith("([], False, False,")
    assert "passwd" not in out and "shadow" not in out and "ssh" not in out


def test_proc_mount_tricks_reach_only_the_box(box: SyncSandbox) -> None:
    out = run(
        box,
        "import os\nmounts = open('/proc/self/mounts').read()\n"
        "(os.path.exists('/proc/1/root/etc/shadow'), os.path.exists('/proc/self/root/root/.bashrc'),"
        " 'holdfast' in mounts, not os.access('/proc/1/root/', os.R_OK) or len(os.listdir('/proc/1/root/')) < 15)",
    )
    assert out == "(False, False, False, True)"
    assert run(box, attempt("open('/proc/sys/kernel/hostname', 'w').write('pwned')")) != "'ESCAPED'"
    # Never write to these even in a failing test: open for writing only, which is the check.
    for path in (
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/vm/drop_caches",
        "/proc/sysrq-trigger",
    ):
        out = run(box, attempt(f"import os\nos.close(os.open({path!r}, os.O_WRONLY))"))
        assert "PermissionError" in out or "FileNotFoundError" in out, path


def test_writes_outside_the_workspace_fail(box: SyncSandbox) -> None:
    for path in ("/usr/evil", "/etc/evil", "/evil", "/root/.pyenv/evil", "/proc/evil"):
        assert run(box, attempt(f"open({path!r}, 'w').write('x')")) != "'ESCAPED'", path
    assert run(box, "open('/workspace/ok.txt', 'w').write('fine')") == "4"
    assert not os.path.exists("/workspace/ok.txt")


def test_symlink_out_of_the_workspace_reads_nothing_of_the_host(box: SyncSandbox) -> None:
    out = run(
        box,
        attempt(
            "import os\nos.symlink('/etc/shadow', '/workspace/s1')\n"
            "os.symlink('/root/.bashrc', '/workspace/s2')\n"
            "open('/workspace/s1').read()"
        ),
    )
    assert "FileNotFoundError" in out
    assert "FileNotFoundError" in run(box, attempt("open('/workspace/s2').read()"))


def test_another_box_is_invisible(box: SyncSandbox, fresh: SyncSandbox) -> None:
    run(box, "open('/workspace/box_a_secret', 'w').write('A'); 1")
    out = run(
        fresh,
        "import os\n(os.listdir('/workspace'), sorted(p for p in os.listdir('/proc') if p.isdigit()))",
    )
    assert "box_a_secret" not in out
    # its own init and worker, nothing else
    assert len(eval(out)[1]) == 2 and eval(out)[1][0] == "1"


def test_dev_holds_only_harmless_devices(box: SyncSandbox) -> None:
    out = run(box, "import os\nsorted(os.listdir('/dev'))")
    for dangerous in ("kmsg", "mem", "kvm", "loop0", "sda", "vda", "fuse", "net", "cpu"):
        assert f"'{dangerous}'" not in out
    assert run(box, attempt("open('/dev/kmsg').read(10)")) != "'ESCAPED'"


# resource exhaustion ---------------------------------------------------------------------------


def test_fork_bomb_is_capped(fresh: SyncSandbox) -> None:
    r = fresh.execute(
        "import os, time\nkids = 0\n"
        "try:\n"
        "    for _ in range(10000):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        kids += 1\n"
        "except OSError as e:\n"
        "    err = type(e).__name__\n"
        "(kids, err)",
        timeout=20,
    )
    assert r.ok, r.error
    kids = int(r.value_repr.strip("()").split(",")[0])  # type: ignore[union-attr]
    assert kids < 32 and "BlockingIOError" in r.value_repr  # type: ignore[operator]


def test_memory_bomb_is_a_memory_error(fresh: SyncSandbox) -> None:
    r = fresh.execute("x = bytearray(4 * 1024**3)")
    assert r.error is not None and r.error.type == "MemoryError"
    assert fresh.execute("'still here'").ok


def test_cpu_spin_and_sleep_forever_hit_the_wall_clock(fresh: SyncSandbox) -> None:
    for code in (
        "while True: pass",
        "import time; time.sleep(10**6)",
        "import threading; threading.Event().wait()",
    ):
        r = fresh.execute(code, timeout=0.5)
        assert r.timed_out and not r.fatal
    assert fresh.execute("'recovered'").value_repr == "'recovered'"


def test_disk_fill_stops_at_the_workspace_and_file_caps(fresh: SyncSandbox) -> None:
    out = run(
        fresh,
        attempt(
            "with open('/workspace/big', 'wb') as f:\n    while True: f.write(b'x' * 1024 * 1024)"
        ),
    )
    assert "File too large" in out or "No space left" in out
    out = run(
        fresh,
        attempt(
            "import os\nfor i in range(100):\n"
            "    with open(f'/workspace/f{i}', 'wb') as f: f.write(b'y' * 4 * 1024 * 1024)"
        ),
    )
    assert "No space left" in out


def test_stdout_flood_is_capped_with_head_and_tail(fresh: SyncSandbox) -> None:
    r = fresh.execute(
        "import os\nfor _ in range(200): os.write(1, b'z' * 1024 * 1024)\nprint('END')"
    )
    assert r.ok and r.stdout_truncated
    assert r.stdout.rstrip().endswith("END") and len(r.stdout) < 10000


def test_open_file_limit(fresh: SyncSandbox) -> None:
    out = run(fresh, attempt("fs = [open('/dev/null') for _ in range(100000)]"))
    assert "Too many open files" in out


# the protocol ------------------------------------------------------------------------------------


def test_forged_frames_on_stdout_are_just_text(box: SyncSandbox) -> None:
    forged = json.dumps({"op": "result", "id": 999, "ok": True, "stdout": "forged"})
    r = box.execute(
        "import struct, sys, os\n"
        f"frame = {forged!r}.encode()\n"
        "os.write(1, struct.pack('>I', len(frame)) + frame)\n"
        f"print({forged!r})"
    )
    assert r.ok and r.stdout.count('"forged"') == 2


def _protocol_fd_code(payload: str) -> str:
    return (
        "import os, struct, json\n"
        "fds = []\n"
        "for f in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        if os.readlink(f'/proc/self/fd/{f}').startswith('socket:'): fds.append(int(f))\n"
        "    except OSError: pass\n"
        f"{payload}\n"
        "for fd in fds: os.write(fd, data)\n"
        "import time; time.sleep(5)"
    )


def test_forged_reply_on_the_protocol_fd_kills_and_restarts_the_box(fresh: SyncSandbox) -> None:
    fresh.execute("kept = 'safe'")
    body = "b = json.dumps({'op': 'result', 'id': 424242, 'ok': True}).encode()\ndata = struct.pack('>I', len(b)) + b"
    r = fresh.execute(_protocol_fd_code(body))
    assert r.error is not None and r.error.type == "SandboxDied"
    assert "protocol violation" in r.error.message
    assert fresh.execute("kept").value_repr == "'safe'"


def test_oversized_frame_header_is_refused(fresh: SyncSandbox) -> None:
    r = fresh.execute(_protocol_fd_code("data = struct.pack('>I', 2**31) + b'{' * 64"))
    assert r.error is not None and "exceeds" in r.error.message
    assert fresh.execute("1").ok


def test_flood_of_forged_host_calls_is_cut_off(fresh: SyncSandbox) -> None:
    body = (
        "frames = []\n"
        "for i in range(5000):\n"
        "    b = json.dumps({'op': 'call', 'call': i + 10**6, 'name': 'echo', 'args': [1], 'kwargs': {}}).encode()\n"
        "    frames.append(struct.pack('>I', len(b)) + b)\n"
        "data = b''.join(frames)"
    )
    r = fresh.execute(_protocol_fd_code(body))
    # a fast host function answers each forged call at once (the replies match no waiting thread
    # and are dropped in the box); a slow one would leave them in flight, and past the cap the box
    # is killed
    assert r.error is None or (r.error.type == "SandboxDied" and "in flight" in r.error.message)
    assert fresh.execute("'ok'").value_repr == "'ok'"


def test_oversized_host_call_is_refused_in_the_box(fresh: SyncSandbox) -> None:
    out = run(fresh, attempt("echo('a' * (2 * 1024 * 1024))"))
    assert "exceeds" in out
    assert run(fresh, "echo('small')") == "'small'"


def test_undeclared_host_functions_are_refused(box: SyncSandbox) -> None:
    out = run(
        box,
        attempt(
            "import gc\nw = [o for o in gc.get_objects() if type(o).__name__ == 'Worker'][0]\n"
            "w.host_call('run_shell_on_host', ['id'], {})"
        ),
    )
    assert "HostCallError" in out and "not a declared host function" in out


# kernel surface ----------------------------------------------------------------------------------


_LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def test_ptrace_of_the_parent_is_denied(box: SyncSandbox) -> None:
    out = run(
        box,
        _LIBC
        + "(libc.ptrace(16, os.getppid(), 0, 0), ctypes.get_errno(), libc.ptrace(16, 1, 0, 0))",
    )
    assert out == "(-1, 1, -1)"


def test_signals_cannot_reach_host_processes(box: SyncSandbox) -> None:
    host_pid = os.getpid()
    out = run(box, attempt(f"import os, signal\nos.kill({host_pid}, signal.SIGKILL)"))
    assert (host_pid > 2 and "ProcessLookupError" in out) or "PermissionError" in out
    out = run(box, attempt("import os, signal\nos.kill(1, signal.SIGKILL)"))
    os.kill(host_pid, 0)  # still alive


def test_kill_everything_in_the_box_only_restarts_it(fresh: SyncSandbox) -> None:
    out = run(fresh, attempt("import os, signal\nos.kill(-1, signal.SIGKILL)"))
    assert "ProcessLookupError" in out  # nothing else in its pid namespace it may signal
    r = fresh.execute("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    # a worker that is its namespace's pid 1 (the unshare fallback) cannot be killed from inside
    assert r.error is None or r.error.type == "SandboxDied"
    assert fresh.execute("'back'").value_repr == "'back'"


def test_mount_unshare_and_setns_are_denied(box: SyncSandbox) -> None:
    out = run(
        box,
        _LIBC + "(libc.unshare(0x10000000), libc.unshare(0x00020000), "
        "libc.mount(b'none', b'/workspace', b'tmpfs', 0, None), libc.setns(0, 0), "
        "libc.chroot(b'/workspace'), os.setuid(0) if False else 0)",
    )
    assert out == "(-1, -1, -1, -1, -1, 0)"
    out = run(box, attempt("import os\nos.setuid(0)"))
    assert "PermissionError" in out or "Invalid argument" in out  # uid 0 is not even mapped
    r = box.execute(
        "import subprocess\nsubprocess.run(['unshare', '-r', 'id'], capture_output=True).returncode"
    )
    assert r.ok and r.value_repr != "0"


def test_raw_syscalls_through_ctypes_are_filtered(box: SyncSandbox) -> None:
    out = run(
        box,
        _LIBC + "res = {}\n"
        "for name, nr, args in [('socket_inet', 41, (2, 1, 0)), ('bpf', 321, (0, 0, 0)),\n"
        "                       ('keyctl', 250, (0, 0, 0)), ('io_uring_setup', 425, (1, 0, 0)),\n"
        "                       ('perf_event_open', 298, (0, 0, -1)), ('init_module', 175, (0, 0, 0)),\n"
        "                       ('kexec_load', 246, (0, 0, 0)), ('userfaultfd', 323, (0, 0, 0))]:\n"
        "    rc = libc.syscall(nr, *args)\n"
        "    res[name] = (rc, ctypes.get_errno())\n"
        "res",
    )
    values = eval(out)
    assert all(rc == -1 for rc, _ in values.values()), values
    assert values["socket_inet"][1] == 97  # EAFNOSUPPORT
    assert values["bpf"][1] == 1 and values["keyctl"][1] == 1  # EPERM


def test_exec_of_a_shell_sees_the_same_box(box: SyncSandbox) -> None:
    r = box.execute(
        "import subprocess\n"
        "p = subprocess.run(['/bin/sh', '-c', 'id -u; env; cat /etc/shadow; ls /root/.ssh'],\n"
        "                   capture_output=True, text=True)\n"
        "(p.stdout, p.stderr)"
    )
    assert r.ok, r.error
    assert r.value_repr is not None and r.value_repr.startswith("('1000\\n")
    assert "sk-holdfast" not in r.value_repr and "No such file" in r.value_repr


def test_system_exit_and_os_exit_do_not_take_the_host(fresh: SyncSandbox) -> None:
    r = fresh.execute("raise SystemExit(0)")
    assert r.error is not None and r.error.type == "SystemExit"
    r = fresh.execute("import os; os._exit(0)")
    assert r.error is not None and r.error.type == "SandboxDied" and not r.fatal
    assert fresh.execute("2 + 2").value_repr == "4"


def test_host_is_healthy_after_the_suite(box: SyncSandbox) -> None:
    """The shared box still answers, and the host can still start and stop boxes."""
    assert box.execute("echo('ok')").value_repr == "'ok'"
    with open_sync_sandbox() as again:
        assert again.execute("1").ok
