"""The seccomp filter every box loads into itself before it runs user code.

The filter is compiled on the host with ``pyseccomp`` (a thin binding of the system libseccomp)
into a classic BPF program; the worker, which may import only the standard library, loads the
bytes with ``prctl(PR_SET_SECCOMP)``. The default action is to allow; the listed system calls
fail with ``EPERM``, and ``socket()`` fails for every address family except ``AF_UNIX``.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import tempfile

from holdfast.sandbox.errors import SandboxUnavailable

DENIED_SYSCALLS: tuple[str, ...] = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "quotactl",
    "syslog",
    "lookup_dcookie",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "personality",
    # a descriptor of another process, and through it that process's descriptors (bubblewrap's
    # init holds the launcher's standard error)
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "process_madvise",
    "kcmp",
)

_CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)


@functools.lru_cache(maxsize=1)
def compiled_filter() -> bytes:
    """The filter as a BPF program for this machine's architecture (compiled once per process).

    Raises :class:`SandboxUnavailable` with a remedy when libseccomp or its binding is missing.
    """
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as exc:
        raise SandboxUnavailable(
            f"seccomp is unavailable: {exc}",
            remedy="install libseccomp2 (apt-get install libseccomp2) and the pyseccomp package, "
            "or ask for SandboxPolicy(seccomp=False)",
        ) from exc
    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(deny, name)
        except (ValueError, RuntimeError, OSError):
            continue  # a call this architecture does not have
    filt.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    for flag in _iter_bits(_CLONE_NAMESPACE_FLAGS):
        filt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, out of reach of a filter: make libc fall back to clone.
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as fh:
        filt.export_bpf(fh)
        fh.flush()
        fh.seek(0)
        program = fh.read()
    if not program or len(program) % 8:
        raise SandboxUnavailable(
            "libseccomp produced an empty filter", remedy="reinstall libseccomp2"
        )
    return program


def seccomp_status() -> tuple[bool, str]:
    """Whether the filter can be built here, and a one-line reason or remedy."""
    try:
        program = compiled_filter()
    except SandboxUnavailable as exc:
        return False, exc.message
    return True, f"libseccomp filter of {len(program) // 8} instructions ({os.uname().machine})"


def _iter_bits(mask: int) -> list[int]:
    return [1 << i for i in range(mask.bit_length()) if mask & (1 << i)]
