"""The ``verifiers`` taskset id ``holdfast-tasks``: Holdfast's eval suites as a taskset.

verifiers resolves a taskset id to a top-level module, so this shim re-exports
:class:`holdfast.evals.vf.taskset.HoldfastTaskset`; importing it needs ``verifiers``.
"""

from holdfast.evals.vf.taskset import HoldfastTaskset

__all__ = ["HoldfastTaskset"]
