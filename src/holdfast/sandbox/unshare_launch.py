"""The ``namespace`` level without bubblewrap: util-linux ``unshare`` driven as root.

Used only when bubblewrap is missing and the host runs as root. ``unshare`` creates new mount,
pid, net, ipc and uts namespaces; a short shell script (run as root inside them) builds a
read-only root on a private tmpfs with the same view a bubblewrap box gets (``/usr``, the
interpreter prefix, a fresh ``/proc``, a few device nodes, size-limited ``/workspace`` and
``/tmp``) and pivots into it (a plain chroot would forbid the user namespace below), then
``setpriv`` drops to a one-off uid with no capabilities and no new
privileges, and an unprivileged ``unshare --user`` gives the worker its own user namespace. The
worker installs the seccomp filter itself. The launcher starts with an empty environment.
"""

from __future__ import annotations

import os
import shlex
import shutil

from holdfast.sandbox.errors import SandboxUnavailable

_TOOLS = ("unshare", "setpriv", "chroot", "mount", "umount", "pivot_root", "env")
_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")

# The shell stays as pid 1 of the box (root, outside the worker's user namespace, so nothing in
# the box can signal or trace it) and waits for the worker: it carries unshare's --kill-child
# parent-death signal, so the whole pid namespace dies with the launcher, which dies with the host.
# Every mount is made by one `mount -a` over a table built here (each program run costs a
# millisecond or two, and mounting one by one ran some thirty of them before the worker started);
# the table is read from a scratch tmpfs that the box's root then covers, so no copy of it is
# left inside the box. The host moves the worker into the box's cgroups once it has started.
# The host's system directories a box sees read-only (or as the same symlinks), at both backends.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")


def _fstab_field(path: str) -> str:
    """``path`` as one field of a mount table (libmount reads octal escapes)."""
    out = []
    for ch in path:
        if ch in " \t\n\\#":
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return "".join(out)


def _launch_script(prefix: str, root: str, size: str, shm: str | None, masks: list[str]) -> str:
    """The script pid 1 of the box runs before ``chroot`` into the new root ("$@" follows)."""
    q = shlex.quote
    table: list[tuple[str, str, str, str]] = []
    dirs = ["etc", "dev", "proc", "workspace", "tmp", ".old"]
    links: dict[str, list[str]] = {}
    for host in SYSTEM_DIRS:
        name = host.lstrip("/")
        if os.path.islink(host):
            target = os.readlink(host)
            # `ln -s T... DIR` names each link after its target: one run for all that match
            key = "" if os.path.basename(target.rstrip("/")) == name else name
            links.setdefault(key, []).append(target)
        elif os.path.isdir(host):
            table.append((host, f"{root}/{name}", "none", "bind,ro,nosuid,nodev,X-mount.mkdir"))
    if not prefix.startswith("/usr/"):
        table.append((prefix, f"{root}{prefix}", "none", "bind,ro,nosuid,nodev,X-mount.mkdir"))
    files = []
    for path in _ETC_FILES:
        if os.path.exists(path):
            files.append(path.lstrip("/"))
            table.append((path, f"{root}{path}", "none", "bind,ro"))
    for dev in _DEVICES:
        files.append(f"dev/{dev}")
        table.append((f"/dev/{dev}", f"{root}/dev/{dev}", "none", "bind"))
    table.append(("proc", f"{root}/proc", "proc", "nosuid,nodev,noexec"))
    for name in masks:
        table.append(("/dev/null", f"{root}/proc/{name}", "none", "bind,ro"))
    if shm is not None:
        dirs.append("dev/shm")
        table.append(("shm", f"{root}/dev/shm", "tmpfs", f"size={shm},mode=1777,nosuid,nodev"))
    for where in ("workspace", "tmp"):
        table.append((where, f"{root}/{where}", "tmpfs", f"size={size},mode=1777,nosuid,nodev"))
    fstab = "".join(
        f"{_fstab_field(src)} {_fstab_field(dst)} {kind} {opts} 0 0\n"
        for src, dst, kind, opts in table
    )
    lines = [
        "set -e",
        "hostname box 2>/dev/null || true",
        f"mount -t tmpfs -o size=64k,mode=700 holdfast-fstab {q(root)}",
        f"printf '%s' {q(fstab)} > {q(root + '/fstab')}",
        f"exec 3< {q(root + '/fstab')}",
        f"mount -t tmpfs -o size=4m,mode=755,nosuid,nodev rootfs {q(root)}",
        f"cd {q(root)}",
        "mkdir -p " + " ".join(q(d) for d in dirs),
    ]
    for key, targets in links.items():
        if key:
            lines += [f"ln -s {q(t)} {q(key)}" for t in targets]
        else:
            lines.append("ln -s " + " ".join(q(t) for t in targets) + " .")
    lines += [": > " + q(f) for f in files]
    lines += [
        "mount -a -T /dev/fd/3",
        "exec 3<&-",
        f"mount -o remount,ro,bind {q(root)}",
        "pivot_root . .old",
        "umount -l /.old",
        "set +e",
        'chroot . "$@"',
        "exit $?",
    ]
    return "\n".join(lines) + "\n"


def unshare_available() -> bool:
    """Whether this fallback can run here: root and the util-linux/coreutils tools."""
    return os.geteuid() == 0 and all(shutil.which(t, path=_PATH) for t in _TOOLS)


def build_unshare_argv(
    prefix: str,
    worker: list[str],
    env: dict[str, str],
    workspace_mb: int,
    uid: int,
    *,
    shm_mb: int = 16,
    proc_masks: list[str] | None = None,
) -> list[str]:
    """The full command line of a box under ``unshare`` (see the module docstring)."""
    if not unshare_available():
        raise SandboxUnavailable(
            "the 'namespace' level needs bubblewrap, or root with util-linux for unshare",
            remedy="install bubblewrap (apt-get install bubblewrap) or ask for "
            "SandboxPolicy(isolation='process'), which is not a security boundary",
        )
    mnt = next((d for d in ("/mnt", "/media", "/srv", "/opt") if os.path.isdir(d)), None)
    if mnt is None:
        raise SandboxUnavailable("no directory to build the box root on", remedy="mkdir /mnt")
    unshare = str(shutil.which("unshare", path=_PATH))
    size = f"{max(workspace_mb, 1)}m"
    script = _launch_script(
        prefix, mnt, size, f"{shm_mb}m" if shm_mb > 0 else None, list(proc_masks or [])
    )
    env_args = [f"{k}={v}" for k, v in env.items()]
    inner = [
        "/usr/bin/setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "/usr/bin/unshare",
        "--user",
        "--map-user=1000",
        "--map-group=1000",
        "/usr/bin/env",
        "-i",
        *env_args,
        *worker,
    ]
    return [
        unshare,
        "--mount",
        "--pid",
        "--net",
        "--ipc",
        "--uts",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        script,
        "holdfast-launch",
        *inner,
    ]
