"""The model of the multi-host test: a FakeOpenAIServer on every address of the hub.

Usage: ``python _multihost_model.py LOG HOLD_FILE``. The agent's reply depends only on how many
assistant turns its conversation holds, so a worker that takes a task over asks the same turn
again and gets the same reply. An RLM job (its system prompt is the REPL's) counts the ERROR lines
of its input; anything else gets a reply the test does not expect. The first time turn ``HOLD_TURN`` is asked, ``HOLD_FILE`` is written and the reply
is held back (up to a minute): the worker is then mid-task, waiting on the model, and the test
kills it there. Every request is appended to LOG as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from holdfast.lm.types import Completion
from holdfast.testing import FakeOpenAIServer, reply, tool_call

FACT = "The lexer of the parser port lives in src/lex.c"
HOLD_TURN = 2
SCRIPT = [
    reply("", tool_call("memory_add", {"text": FACT, "entities": ["lexer"]})),
    reply("", tool_call("analyze", {"question": "How many ERROR lines?", "paths": ["app.log"]})),
    reply("", tool_call("record_progress", {"text": "counted the errors"})),
    reply("", tool_call("memory_search", {"query": "lexer"})),
    reply("", tool_call("finish", {"result": "ported"})),
]
RLM_CODE = "```python\nSUBMIT(answer=str(source.count('ERROR')))\n```"


def main() -> None:
    log, hold = Path(sys.argv[1]), Path(sys.argv[2])
    held: list[bool] = []

    async def handler(body: dict[str, Any]) -> Completion | str:
        messages = body.get("messages", [])
        system = str(messages[0].get("content", "")) if messages else ""
        if system.startswith("You answer a query by writing Python code"):
            kind = "rlm"
        else:
            kind = "agent" if body.get("tools") else "other"
        done = sum(1 for m in messages if m.get("role") == "assistant")
        with log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, "turn": done, "messages": messages}) + "\n")
        if kind == "rlm":
            return RLM_CODE
        if kind == "other":
            return "not a request this test makes"
        if done == HOLD_TURN and not held:
            held.append(True)
            hold.write_text("held", encoding="utf-8")
            await asyncio.sleep(60)
        return SCRIPT[min(done, len(SCRIPT) - 1)]

    with FakeOpenAIServer(handler, host="0.0.0.0") as server:
        print(server.port, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
