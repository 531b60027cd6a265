"""What isolation this machine can give a box, and what to do about what it cannot.

:func:`diagnose` backs ``holdfast sandbox check``: it probes bubblewrap and user namespaces for
the ``namespace`` level, the tools the root launcher needs, the seccomp filter and the cgroups
that cap a box's process count and memory, and says for each what is missing and the remedy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from holdfast.sandbox import launch
from holdfast.sandbox.cgroup import cgroup_status
from holdfast.sandbox.seccomp import seccomp_status
from holdfast.sandbox.unshare_launch import unshare_available


@dataclass(frozen=True)
class Capability:
    """One feature: whether it is available and either what it is or how to get it."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Diagnosis:
    """The result of :func:`diagnose`; ``namespace_ok`` is what the default policy needs."""

    namespace_ok: bool
    capabilities: list[Capability] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace_ok": self.namespace_ok,
            "capabilities": [asdict(c) for c in self.capabilities],
        }


def _bwrap_version(path: str) -> str:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, env={}, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"
    return out.stdout.strip() or "unknown version"


def diagnose() -> Diagnosis:
    """Probes the machine (starts one throwaway bubblewrap process; no box)."""
    caps: list[Capability] = []
    bwrap = launch.bwrap_path()
    if bwrap is None:
        caps.append(
            Capability(
                "bubblewrap",
                False,
                "not installed; remedy: apt-get install bubblewrap (or dnf install bubblewrap)",
            )
        )
        namespace_ok = unshare_available()
        caps.append(
            Capability(
                "unshare fallback",
                namespace_ok,
                "namespace boxes through util-linux unshare, pivot_root and setpriv (as root)"
                if namespace_ok
                else "needs root and util-linux; remedy: install bubblewrap",
            )
        )
    else:
        caps.append(Capability("bubblewrap", True, f"{bwrap} ({_bwrap_version(bwrap)})"))
        problem = launch.namespace_problem(bwrap)
        namespace_ok = problem is None
        if problem is None:
            caps.append(
                Capability(
                    "namespaces",
                    True,
                    "new user, pid, net, ipc and uts namespaces; read-only system; tmpfs workspace",
                )
            )
        else:
            caps.append(
                Capability(
                    "namespaces", False, f"{problem}; remedy: {launch.namespace_remedy(problem)}"
                )
            )
    if os.geteuid() == 0:
        missing = [t for t in ("unshare", "setpriv", "mount") if shutil.which(t) is None]
        caps.append(
            Capability(
                "root launcher",
                not missing,
                "boxes run as a one-off unprivileged uid through unshare and setpriv"
                if not missing
                else f"missing {', '.join(missing)}; remedy: apt-get install util-linux",
            )
        )
    ok, detail = seccomp_status()
    caps.append(Capability("seccomp", ok, detail))
    ok, detail = cgroup_status()
    caps.append(Capability("cgroup", ok, detail))
    caps.append(
        Capability(
            "process level",
            True,
            "always available when asked for by name; NOT a security boundary",
        )
    )
    return Diagnosis(namespace_ok=namespace_ok, capabilities=caps)
