"""How a box's process is started: the bubblewrap command line, or a plain limited subprocess.

The launcher itself starts with an empty environment, so nothing of the host's environment can be
read from inside (``/proc/1/environ`` included). The worker script is passed with ``-c`` to the
host's own interpreter, whose installation prefix is bind-mounted read-only at the same path; the
rest of the host home stays out of sight.
"""

from __future__ import annotations

import functools
import marshal
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from holdfast.sandbox.errors import SandboxUnavailable
from holdfast.sandbox.types import SandboxPolicy
from holdfast.sandbox.unshare_launch import SYSTEM_DIRS as _SYSTEM_DIRS
from holdfast.sandbox.unshare_launch import build_unshare_argv, unshare_available

WORKSPACE = "/workspace"
BOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": WORKSPACE,
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "MALLOC_ARENA_MAX": "2",
}
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives")
_TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin"
_MOUNT_POINTS = ("/mnt", "/media", "/srv", "/opt")
# Kernel-wide /proc files a box has no use for: the boot command line, kernel symbols and memory,
# keys, timers and scheduler internals. Each is replaced by an empty file (``/dev/null``).
PROC_MASKED = (
    "cmdline",
    "kcore",
    "kallsyms",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "modules",
    "config.gz",
    "vmallocinfo",
    "iomem",
    "ioports",
    "slabinfo",
    "pagetypeinfo",
    "zoneinfo",
    "buddyinfo",
    "partitions",
    "diskstats",
    "swaps",
    "devices",
    "misc",
    "execdomains",
    "fb",
    "mtrr",
    "bootconfig",
)


def proc_masks() -> list[str]:
    """The masked /proc files that exist on this kernel."""
    return [name for name in PROC_MASKED if os.path.exists(f"/proc/{name}")]


def pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL``: the launcher dies with the host thread that started it."""
    setpriv = shutil.which("setpriv", path=_TOOL_PATH)
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


# Runs first in the box: says hello (one zero byte; the kernel attaches this process's pid, which
# the host moves into the box's cgroups while the worker loads), then reads the marshalled worker
# (length-prefixed) from the protocol socket and runs it, so a box does not re-compile the
# worker's source at every start.
BOOTSTRAP = (
    "import marshal,os,sys\n"
    "fd=int(sys.argv[1])\n"
    "os.write(fd,b'\\0')\n"
    "def take(n):\n"
    " b=b''\n"
    " while len(b)<n:\n"
    "  c=os.read(fd,n-len(b))\n"
    "  if not c:os._exit(2)\n"
    "  b+=c\n"
    " return b\n"
    "code=marshal.loads(take(int.from_bytes(take(4),'big')))\n"
    "del take\n"
    "exec(code)\n"
)


@functools.lru_cache(maxsize=1)
def worker_source() -> str:
    """The text of the in-box worker program."""
    return (Path(__file__).with_name("_worker.py")).read_text(encoding="utf-8")


def worker_code() -> bytes:
    """The worker compiled for this interpreter (the box runs the same one), marshalled."""
    return _compile(worker_source())


@functools.lru_cache(maxsize=4)
def _compile(source: str) -> bytes:
    return marshal.dumps(compile(source, "<holdfast-worker>", "exec", dont_inherit=True))


def interpreter() -> tuple[str, str]:
    """The real interpreter binary and the installation prefix it needs (stdlib, libpython)."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    return exe, prefix


@dataclass(frozen=True)
class Launch:
    """An argv and the environment to start a box with."""

    argv: list[str]
    env: dict[str, str]
    workspace: str | None
    backend: str = "process"
    seccomp_in_launcher: bool = False


def bwrap_path() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin:/usr/sbin")


@functools.lru_cache(maxsize=4)
def namespace_problem(bwrap: str) -> str | None:
    """None when bubblewrap can create the namespaces here, else bubblewrap's own complaint."""
    exe, prefix = interpreter()
    try:
        chain, prefix_src = _privilege_drop(prefix)
    except SandboxUnavailable as exc:
        return exc.message
    argv = [*chain, bwrap, *_ns_flags(), *_mounts(prefix, 8, 1, prefix_src)]
    argv += ["--", exe, "-I", "-S", "-c", "pass"]
    try:
        proc = subprocess.run(argv, env={}, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        return proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
    return None


def namespace_remedy(problem: str) -> str:
    """What a user can do when user namespaces are blocked."""
    hints = []
    if "ermission" in problem or "Operation not permitted" in problem:
        hints.append(
            "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            "or on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0), or raise "
            "user.max_user_namespaces; inside a container, run it with --privileged or a "
            "seccomp profile that allows unshare/clone"
        )
    hints.append("or ask for SandboxPolicy(isolation='process'), which is not a security boundary")
    return "; ".join(hints)


def build_launch(policy: SandboxPolicy, sock_fd: int, seccomp_fd: int | None = None) -> Launch:
    """The command that starts one box at the policy's isolation level (fails closed).

    ``seccomp_fd`` (namespace level) is a readable descriptor holding the compiled filter, which
    bubblewrap installs just before it starts the worker. The box's cgroups are joined by the
    host, which moves the worker there before it runs anything but its own start-up
    (:meth:`holdfast.sandbox.process.BoxProcess.start`).
    """
    exe, prefix = interpreter()
    worker = [exe, "-I", "-S", "-B", "-c", BOOTSTRAP, str(sock_fd)]
    if policy.isolation == "process":
        return Launch(argv=[*pdeathsig_prefix(), *worker], env=dict(BOX_ENV), workspace=None)
    if policy.isolation != "namespace":
        raise SandboxUnavailable(
            f"unknown isolation level {policy.isolation!r}",
            remedy="use 'namespace' (the default) or 'process'",
        )
    if policy.backend not in ("auto", "bwrap", "unshare"):
        raise SandboxUnavailable(
            f"unknown namespace backend {policy.backend!r}",
            remedy="use 'auto' (the default), 'bwrap' or 'unshare'",
        )
    bwrap = bwrap_path() if policy.backend != "unshare" else None
    if bwrap is None and policy.backend == "bwrap":
        raise SandboxUnavailable(
            "the 'bwrap' backend was asked for and bubblewrap is not installed",
            remedy="install it (apt-get install bubblewrap) or use backend='auto'",
        )
    if bwrap is None:
        if not unshare_available():
            raise SandboxUnavailable(
                "the 'namespace' isolation level needs bubblewrap, which is not installed",
                remedy="install it (apt-get install bubblewrap, dnf install bubblewrap) or ask "
                "for SandboxPolicy(isolation='process'), which is not a security boundary",
            )
        argv = build_unshare_argv(
            prefix,
            worker,
            BOX_ENV,
            policy.workspace_mb,
            box_uid(),
            shm_mb=policy.shm_mb,
            proc_masks=proc_masks(),
        )
        return Launch(
            argv=[*pdeathsig_prefix(), *argv], env={}, workspace=WORKSPACE, backend="unshare"
        )
    problem = namespace_problem(bwrap)
    if problem is not None:
        raise SandboxUnavailable(
            f"bubblewrap cannot create namespaces here: {problem}",
            remedy=namespace_remedy(problem),
        )
    env_flags: list[str] = []
    for key, value in BOX_ENV.items():
        env_flags += ["--setenv", key, value]
    chain, prefix_src = _privilege_drop(prefix)
    argv = [
        *chain,
        bwrap,
        *_ns_flags(),
        *_mounts(prefix, policy.workspace_mb, policy.shm_mb, prefix_src),
        *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
        *env_flags,
        "--chdir",
        WORKSPACE,
        "--",
        *worker,
    ]
    return Launch(
        argv=argv,
        env={},
        workspace=WORKSPACE,
        backend="bwrap",
        seccomp_in_launcher=seccomp_fd is not None,
    )


def box_uid() -> int:
    """A host uid for one box, from a range no real account uses (1.5e9 to 1.6e9)."""
    return 1_500_000_000 + secrets.randbelow(100_000_000)


def _privilege_drop(prefix: str) -> tuple[list[str], str]:
    """As root, the commands that put bubblewrap under a fresh unprivileged uid.

    Run as root, bubblewrap maps the box's user to host uid 0, and root-owned files such as
    ``/proc/sys/kernel/core_pattern`` would count as the box's own. So the launcher enters a
    private mount namespace, bind-mounts the interpreter prefix (which may sit under a home
    directory only root can traverse) read-only onto a directory everyone can reach (``/mnt``,
    only in that namespace), and runs bubblewrap as a one-off uid with no capabilities. Not as
    root: bubblewrap runs as the caller.
    """
    if os.geteuid() != 0:
        return [], prefix
    tools = {name: shutil.which(name, path=_TOOL_PATH) for name in ("unshare", "setpriv")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        raise SandboxUnavailable(
            f"running as root, the sandbox needs {', '.join(missing)} to drop privileges",
            remedy="install util-linux (apt-get install util-linux), or run as a non-root user",
        )
    mnt = next((d for d in _MOUNT_POINTS if os.path.isdir(d)), None)
    if mnt is None:
        raise SandboxUnavailable(
            "no directory to mount the interpreter on privately",
            remedy="create /mnt (mkdir /mnt), or run as a non-root user",
        )
    uid = str(box_uid())
    script = (
        'prefix="$1"; mnt="$2"; shift 2; '
        # one mount(8): a read-only bind (mount binds, then remounts it read-only)
        'mount --bind -o ro "$prefix" "$mnt" && exec "$@"'
    )
    chain = [
        str(tools["unshare"]),
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        script,
        "holdfast-launch",
        prefix,
        mnt,
        str(tools["setpriv"]),
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]
    return chain, mnt


def _ns_flags() -> list[str]:
    return [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--cap-drop",
        "ALL",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--hostname",
        "box",
    ]


def _mounts(
    prefix: str, workspace_mb: int, shm_mb: int, prefix_src: str | None = None
) -> list[str]:
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    if not any(prefix == d or prefix.startswith(d + "/") for d in _SYSTEM_DIRS):
        args += ["--ro-bind", prefix_src or prefix, prefix]
    for path in _ETC_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    size = str(max(workspace_mb, 1) * 1024 * 1024)
    args += ["--proc", "/proc"]
    for name in proc_masks():
        args += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    # bubblewrap's /dev is a tmpfs without a size: it is made read-only, and /dev/shm (POSIX
    # shared memory, semaphores) is a tmpfs of its own with a size, or stays read-only and empty.
    args += ["--dev", "/dev"]
    if shm_mb > 0:
        args += ["--size", str(shm_mb * 1024 * 1024), "--perms", "1777", "--tmpfs", "/dev/shm"]
    args += ["--remount-ro", "/dev"]
    args += [
        "--size",
        size,
        "--tmpfs",
        WORKSPACE,
        "--size",
        size,
        "--tmpfs",
        "/tmp",
        "--remount-ro",
        "/",
    ]
    return args


def spawn(launch: Launch, fds: tuple[int, ...], stderr: int) -> subprocess.Popen[bytes]:
    """Starts the box process in its own session (so a kill reaches the whole group)."""
    return subprocess.Popen(
        launch.argv,
        env=launch.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        pass_fds=fds,
        close_fds=True,
        start_new_session=True,
        cwd="/",
    )
