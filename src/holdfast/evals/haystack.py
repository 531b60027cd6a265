"""Needle-in-a-haystack inputs from 1 MB to 1 GB, streamed to disk, seeded, exact.

The haystack is lines of lower-case pseudo-words drawn from a seeded pool of blocks; needles are
sentences ``The access code for vault ORION-17 is QX-4821-ZK.`` whose keys and codes use upper
case and digits, which the filler never does, so no filler line can be mistaken for a needle and
the gold answer is exactly what the generator wrote. Generation writes blocks of a few megabytes
at a time (a 1 GB haystack never sits in memory) into a temporary file renamed into place.

- ``single``: one asked-for needle among ``decoys`` needles of other vaults;
- ``multi``: ``needles`` needles, all asked for (scored per vault).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, BinaryIO

from holdfast.errors import InvalidInput
from holdfast.evals.tasks import EvalTask, cached_json, write_atomically, write_json

MIN_BYTES = 4_096
MAX_BYTES = 1 << 30
_POOL_BLOCKS = 1024
_BLOCK_LINES = 48
_WRITE_BLOCKS = 1024
_ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z"]
_NUCLEI = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_STARS = ["ORION", "LYRA", "VEGA", "CETUS", "DRACO", "HYDRA", "PAVO", "ARA", "NORMA", "CRUX"]
_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


def _words(rng: random.Random, n: int) -> list[str]:
    return [
        "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) for _ in range(rng.randint(1, 3)))
        for _ in range(n)
    ]


def _pool(seed: int) -> list[bytes]:
    rng = random.Random(f"haystack-pool-{seed}")
    vocab = _words(rng, 3000)
    blocks = []
    for _ in range(_POOL_BLOCKS):
        lengths = [rng.randint(6, 16) for _ in range(_BLOCK_LINES)]
        words = rng.choices(vocab, k=sum(lengths))
        lines, at = [], 0
        for n in lengths:
            lines.append(" ".join(words[at : at + n]) + ".\n")
            at += n
        blocks.append("".join(lines).encode("ascii"))
    return blocks


def _code(rng: random.Random) -> str:
    return (
        "".join(rng.choice(_LETTERS) for _ in range(2))
        + f"-{rng.randrange(1000, 10000)}-"
        + "".join(rng.choice(_LETTERS) for _ in range(2))
    )


def needle_line(key: str, code: str) -> str:
    return f"The access code for vault {key} is {code}.\n"


def write_haystack(
    path: Path, *, size: int, needles: list[tuple[str, str]], seed: int
) -> dict[str, Any]:
    """Write about ``size`` bytes of haystack with ``needles`` (key, code) at seeded places;
    returns where each needle went (byte offset) and the final size."""
    if not MIN_BYTES <= size <= MAX_BYTES:
        raise InvalidInput(f"a haystack must be {MIN_BYTES} to {MAX_BYTES} bytes, not {size}")
    pool = _pool(seed)
    # the block sequence first (indices only), so the file never passes ``size``: an input of
    # exactly 1 GiB stays within the engine's default input limit
    order_rng = random.Random(f"haystack-blocks-{seed}-{size}")
    lines = [needle_line(*n).encode("ascii") for n in needles]
    total = sum(len(x) for x in lines)
    if total > size:
        raise InvalidInput(f"{len(needles)} needles do not fit in {size} bytes")
    order: list[int] = []
    while True:
        b = order_rng.randrange(len(pool))
        if total + len(pool[b]) > size:
            break
        order.append(b)
        total += len(pool[b])
    blocks = len(order)
    rng = random.Random(f"haystack-order-{seed}-{size}")
    slots = sorted(rng.sample(range(blocks + 1), min(len(needles), blocks + 1)))
    while len(slots) < len(needles):
        slots.append(slots[-1] if slots else 0)
    place: dict[int, tuple[int, ...]] = {}
    for i, slot in enumerate(slots):
        place[slot] = (*place.get(slot, ()), i)
    positions: list[dict[str, Any]] = [{} for _ in needles]
    written = 0

    def write(fh: BinaryIO) -> None:
        nonlocal written
        buf: list[bytes] = []
        pending = 0
        for b in range(blocks + 1):
            for i in place.get(b, ()):
                positions[i] = {
                    "key": needles[i][0],
                    "offset": written + pending,
                    "depth": round(b / max(1, blocks), 4),
                }
                buf.append(lines[i])
                pending += len(lines[i])
            if b < blocks:
                block = pool[order[b]]
                buf.append(block)
                pending += len(block)
            if len(buf) >= _WRITE_BLOCKS:
                fh.write(b"".join(buf))
                written += pending
                buf, pending = [], 0
        fh.write(b"".join(buf))
        written += pending

    write_atomically(path, write)
    return {"bytes": written, "needles": positions}


def niah_task(
    data_dir: Path,
    *,
    seed: int,
    index: int,
    size: int,
    variant: str,
    needles: int = 8,
    decoys: int = 3,
) -> EvalTask:
    """One needle-in-a-haystack task (``variant`` ``single`` or ``multi``), generated on first use."""
    if variant not in ("single", "multi"):
        raise InvalidInput(f"the haystack variant is single or multi, not {variant!r}")
    count = 1 + decoys if variant == "single" else needles
    if count < 1 or count > 200:
        raise InvalidInput("a haystack holds 1 to 200 needles")
    rng = random.Random(f"niah-{variant}-{seed}-{index}")
    keys: list[str] = []
    while len(keys) < count:
        key = f"{rng.choice(_STARS)}-{rng.randrange(10, 100)}"
        if key not in keys:
            keys.append(key)
    pairs = [(k, _code(rng)) for k in keys]
    asked = pairs[0]
    rng.shuffle(pairs)
    params = {
        "v": 1,
        "variant": variant,
        "seed": seed,
        "index": index,
        "size": size,
        "count": count,
    }
    name = f"niah-{variant}-s{seed}-i{index}-{size}"
    path = data_dir / f"{name}.txt"
    sidecar = data_dir / f"{name}.json"
    meta = cached_json(sidecar, params)
    if meta is None or not path.exists() or path.stat().st_size != meta["layout"]["bytes"]:
        layout = write_haystack(path, size=size, needles=pairs, seed=seed * 1_000_003 + index)
        meta = {"params": params, "layout": layout}
        write_json(sidecar, meta)
    if variant == "single":
        question = f"What is the access code for vault {asked[0]}? The text hides it somewhere."
        return EvalTask(
            suite="niah-single",
            task_id=name,
            question=question,
            gold=asked[1],
            scorer="exact",
            inputs={"context": str(path)},
            signature="context -> code: str",
            meta={
                "bytes": meta["layout"]["bytes"],
                "needles": meta["layout"]["needles"],
                "key": asked[0],
            },
        )
    question = (
        "The text hides several sentences giving the access code of a vault. List the access "
        "code of every vault mentioned, as an object mapping vault name to code."
    )
    return EvalTask(
        suite="niah-multi",
        task_id=name,
        question=question,
        gold=dict(pairs),
        scorer="mapping",
        inputs={"context": str(path)},
        signature="context -> codes: dict[str, str]",
        meta={"bytes": meta["layout"]["bytes"], "needles": meta["layout"]["needles"]},
    )
