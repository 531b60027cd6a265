"""The code run in each box before the model's first cell (and again if the box was restarted).

It wraps the raw host functions (registered as ``_hf_*``) into the REPL functions the prompt
documents: ``llm_query``, ``llm_batch``, ``rlm_query``, ``predict``, ``SUBMIT``, ``show_vars`` and
directory inputs with ``.files`` and ``.read()``. It runs inside the box with only the standard
library, so it is kept as source text here.
"""

from __future__ import annotations

from collections.abc import Sequence

PRELUDE = r'''
class SubCallError(str):
    """A failed item of llm_batch: a string starting with '[sub-call error]'."""
    is_error = True


class Prediction(dict):
    """A validated predict() result: a dict whose fields are also attributes."""
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class InputDir:
    """A directory input: `.files` lists (path, size); `.read(path)` returns its text."""
    def __init__(self, name, files):
        self.name = name
        self.files = [tuple(f) for f in files]
    def read(self, path, offset=0, length=4_000_000):
        return _hf_read_input(self.name, path, offset, length)
    def __len__(self):
        return len(self.files)
    def __iter__(self):
        return iter(p for p, _ in self.files)
    def __repr__(self):
        return "<directory input %r: %d files>" % (self.name, len(self.files))


def llm_query(prompt, model=None, schema=None):
    """Ask a sub-model one question; with schema= (a JSON schema or 'a: int, b: str') get a dict."""
    return _hf_llm_query(prompt, model, schema)


def llm_batch(prompts, model=None, schema=None):
    """Ask many prompts in parallel; results in order; a failed item is a SubCallError string."""
    out = _hf_llm_batch(list(prompts), model, schema)
    return [SubCallError("[sub-call error] " + r["error"]) if isinstance(r, dict) and set(r) == {"error"} else r for r in out]


def rlm_query(prompt, **inputs):
    """Run a child RLM (its own REPL) over the given inputs; returns its answer."""
    return _hf_rlm_query(prompt, inputs)


def predict(signature, **inputs):
    """A typed sub-call: predict("question, passage -> answer: str, score: float", question=..., passage=...)."""
    return Prediction(_hf_predict(signature, inputs))


def SUBMIT(*args, **fields):
    """Submit the final answer, checked against the job's output types."""
    _hf_submit(list(args), fields)
    print("SUBMIT accepted.")


def show_vars():
    """Print the variables defined in this REPL with their type and size."""
    hidden = {"SubCallError", "Prediction", "InputDir", "HostCallError"}
    for _name, _value in sorted(globals().items()):
        if _name.startswith("_") or _name in hidden or callable(_value) and not isinstance(_value, InputDir):
            continue
        try:
            _size = len(_value)
        except Exception:
            _size = None
        print("%s: %s%s" % (_name, type(_value).__name__, "" if _size is None else ", len %d" % _size))


if "answer" not in globals():
    answer = {"content": None, "ready": False}
'''


def prelude_with_dirs(
    dirs: dict[str, list[tuple[str, int]]], decode_json: Sequence[str] = ()
) -> str:
    """The prelude, one assignment per directory input, and the decoding of spilled JSON inputs."""
    lines = [PRELUDE]
    for name, files in dirs.items():
        listing = [[str(p), int(s)] for p, s in files]
        lines.append(f"{name} = InputDir({name!r}, {listing!r})")
    for name in decode_json:
        lines.append(f"if isinstance({name}, str):\n    {name} = __import__('json').loads({name})")
    return "\n".join(lines)
