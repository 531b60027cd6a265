"""Holdfast over the Model Context Protocol: memory, ``analyze`` and tasks for coding agents.

``holdfast mcp serve`` runs the server over stdio (what coding agents launch) or streamable HTTP
behind a bearer token. Everything is built on the official ``mcp`` SDK (extra ``mcp``)::

    from holdfast.mcp import MCPSettings, build_server
    server = build_server(MCPSettings(roots=(Path("."),), namespace="project-demo"))
"""

from holdfast.mcp.settings import AnalyzeCaps, MCPSettings, default_namespace

__all__ = ["AnalyzeCaps", "MCPSettings", "build_server", "default_namespace"]


def __getattr__(name: str) -> object:
    if name == "build_server":
        try:
            from holdfast.mcp.server import build_server
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("mcp"):
                from holdfast.errors import ConfigError

                raise ConfigError(
                    "the MCP server needs the 'mcp' package: pip install 'holdfast[mcp]'"
                ) from exc
            raise
        return build_server
    raise AttributeError(name)
