"""The in-process fake keeps the contract the layers above rely on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from holdfast.sandbox import HostFunctionSpec, Sandbox
from holdfast.testing.fake_sandbox import FakeSandbox


@pytest.mark.anyio
async def test_fake_sandbox_follows_the_contract(tmp_path: Path) -> None:
    async def llm_query(prompt: str) -> str:
        await asyncio.sleep(0)
        return prompt.upper()

    box = FakeSandbox(functions=[HostFunctionSpec("llm_query", llm_query)])
    assert isinstance(box, Sandbox)
    await box.start()
    (tmp_path / "doc.txt").write_text("some evidence")
    await box.load("context", path=tmp_path / "doc.txt")
    r = await box.execute("x = llm_query(context)\nprint(x)\nlen(x)")
    assert r.ok and r.stdout == "SOME EVIDENCE\n" and r.value_repr == "13"
    bad = await box.execute("1/0")
    assert bad.error is not None and bad.error.type == "ZeroDivisionError"
    await box.set("y", [1])
    assert await box.get("y") == [1]
    snap = await box.snapshot()
    assert snap == {"x": "SOME EVIDENCE", "y": [1]}
    slow = await box.execute("import time; time.sleep(0.5)", timeout=0.05)
    assert slow.timed_out
    await box.shutdown()
