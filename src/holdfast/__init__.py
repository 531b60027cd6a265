"""Holdfast: a runtime for long-horizon LLM agents.

Three memories (knowledge, continuity, reasoning) and a durable control plane. Importing this
package is cheap: subpackages load their heavy dependencies lazily.
"""

from holdfast.errors import (
    BudgetExceeded,
    Cancelled,
    ConfigError,
    HoldfastError,
    InvalidInput,
    RetryableFailure,
    RuntimeFailure,
    UserError,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "Cancelled",
    "ConfigError",
    "HoldfastError",
    "InvalidInput",
    "RetryableFailure",
    "RuntimeFailure",
    "UserError",
    "__version__",
]
