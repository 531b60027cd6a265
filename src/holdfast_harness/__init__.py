"""The ``verifiers`` harness id ``holdfast-harness``: Holdfast's RLM loop as the harness.

verifiers resolves a harness id to a top-level module, so this shim re-exports
:class:`holdfast.evals.vf.harness.HoldfastHarness`; importing it needs ``verifiers``.
"""

from holdfast.evals.vf.harness import HoldfastHarness

__all__ = ["HoldfastHarness"]
