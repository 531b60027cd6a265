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
import shutil

from holdfast.sandbox.errors import SandboxUnavailable

_TOOLS = ("unshare", "setpriv", "chroot", "mount", "umount", "pivot_root", "env")
_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")

# $1 interpreter prefix, $2 mount point, $3 tmpfs size, $4 hostname, $5 /dev/shm size ("0":
# none), $6 the /proc files to mask; the command to run follows. The host moves the worker into
# the box's cgroups once it has started.
# The shell stays as pid 1 of the box (root, outside the worker's user namespace, so nothing in
# the box can signal or trace it) and waits for the worker: it carries unshare's --kill-child
# parent-death signal, so the whole pid namespace dies with the launcher, which dies with the host.
_SCRIPT = r"""
set -e
prefix="$1"; root="$2"; size="$3"; host="$4"; shm="$5"; masks="$6"; shift 6
hostname "$host" 2>/dev/null || true
mount -t tmpfs -o size=4m,mode=755,nosuid,nodev rootfs "$root"
for d in usr lib lib64 lib32 bin sbin; do
  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$root/$d";
  elif [ -d "/$d" ]; then mkdir "$root/$d"; mount --bind "/$d" "$root/$d";
       mount -o remount,bind,ro,nosuid,nodev "$root/$d"; fi
done
case "$prefix" in /usr/*) ;; *)
  mkdir -p "$root$prefix"; mount --bind "$prefix" "$root$prefix"
  mount -o remount,bind,ro,nosuid,nodev "$root$prefix";;
esac
mkdir -p "$root/etc" "$root/dev" "$root/proc" "$root/workspace" "$root/tmp" "$root/.old"
for f in /etc/ld.so.cache /etc/localtime; do
  if [ -e "$f" ]; then : > "$root$f"; mount --bind "$f" "$root$f";
     mount -o remount,bind,ro "$root$f"; fi
done
for d in null zero full random urandom tty; do
  : > "$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"
done
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
for f in $masks; do mount --bind /dev/null "$root/proc/$f"; done
if [ "$shm" != 0 ]; then
  mkdir "$root/dev/shm"
  mount -t tmpfs -o "size=$shm,mode=1777,nosuid,nodev" shm "$root/dev/shm"
fi
mount -t tmpfs -o "size=$size,mode=1777,nosuid,nodev" workspace "$root/workspace"
mount -t tmpfs -o "size=$size,mode=1777,nosuid,nodev" tmp "$root/tmp"
mount -o remount,ro,bind "$root"
cd "$root"
pivot_root . .old
umount -l /.old
set +e
chroot . "$@"
exit $?
"""


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
        _SCRIPT,
        "holdfast-launch",
        prefix,
        mnt,
        size,
        "box",
        f"{shm_mb}m" if shm_mb > 0 else "0",
        " ".join(proc_masks or []),
        *inner,
    ]
