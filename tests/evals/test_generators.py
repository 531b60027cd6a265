"""The generators: deterministic bytes, exact gold answers recomputed from the files alone."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from holdfast.errors import InvalidInput
from holdfast.evals.aggregate import aggregate_task, topic_of
from holdfast.evals.haystack import niah_task, write_haystack
from holdfast.evals.multihop import multihop_task

NEEDLE = re.compile(rb"The access code for vault ([A-Z]+-\d+) is ([A-Z0-9-]+)\.\n")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_haystack_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    a = niah_task(tmp_path / "a", seed=3, index=1, size=150_000, variant="single")
    b = niah_task(tmp_path / "b", seed=3, index=1, size=150_000, variant="single")
    c = niah_task(tmp_path / "c", seed=4, index=1, size=150_000, variant="single")
    assert sha(Path(a.inputs["context"])) == sha(Path(b.inputs["context"]))
    assert a.gold == b.gold and a.question == b.question
    assert sha(Path(a.inputs["context"])) != sha(Path(c.inputs["context"]))


@pytest.mark.parametrize("variant", ["single", "multi"])
def test_needles_are_exactly_where_the_gold_says(tmp_path: Path, variant: str) -> None:
    task = niah_task(tmp_path, seed=11, index=0, size=300_000, variant=variant, needles=6)
    data = Path(task.inputs["context"]).read_bytes()
    assert 290_000 < len(data) <= 300_000  # never past the size asked for
    found = {m.group(1).decode(): m.group(2).decode() for m in NEEDLE.finditer(data)}
    for pos in task.meta["needles"]:
        assert NEEDLE.match(data, pos["offset"]) is not None
    if variant == "single":
        key = task.meta["key"]
        assert found[key] == task.gold
        assert len(found) == 4  # the asked vault and three decoys
        assert key in task.question
    else:
        assert found == task.gold
        assert len(found) == 6
    # the filler never looks like a needle: only lower-case words
    assert len(NEEDLE.findall(data)) == len(found)
    assert not re.search(rb"[A-Z]", NEEDLE.sub(b"", data).replace(b"\n", b""))


def test_a_haystack_of_exactly_the_engine_limit_fits_it(tmp_path: Path) -> None:
    from holdfast.evals.haystack import MAX_BYTES
    from holdfast.rlm.inputs import DEFAULT_MAX_INPUT_BYTES

    layout = write_haystack(
        tmp_path / "h.txt", size=MIN_SIZE, needles=[("VEGA-10", "AB-1234-CD")], seed=3
    )
    assert layout["bytes"] <= MIN_SIZE
    assert MAX_BYTES == DEFAULT_MAX_INPUT_BYTES  # the largest haystack is a legal input


MIN_SIZE = 4_096


def test_haystack_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        write_haystack(tmp_path / "x", size=10, needles=[], seed=0)
    with pytest.raises(InvalidInput):
        niah_task(tmp_path, seed=0, index=0, size=100_000, variant="triple")


def test_a_truncated_haystack_is_regenerated(tmp_path: Path) -> None:
    task = niah_task(tmp_path, seed=1, index=0, size=100_000, variant="single")
    path = Path(task.inputs["context"])
    digest = sha(path)
    path.write_bytes(path.read_bytes()[:5000])
    again = niah_task(tmp_path, seed=1, index=0, size=100_000, variant="single")
    assert sha(Path(again.inputs["context"])) == digest
    assert not list(tmp_path.glob(".*partial"))


def _records(path: Path) -> list[tuple[str, str, float, str]]:
    out = []
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"\[(\S+)\] user=(\S+) city=(\S+) amount=(\S+) :: (.*)", line)
        assert m, line
        out.append((m.group(2), m.group(3), float(m.group(4)), m.group(5)))
    return out


def test_aggregation_gold_recomputed_from_the_file(tmp_path: Path) -> None:
    for index in range(6):
        task = aggregate_task(tmp_path, seed=5, index=index, records=600)
        recs = _records(Path(task.inputs["records"]))
        assert len(recs) == 600
        topics = [topic_of(r[3]) for r in recs]
        assert None not in topics
        kind = task.meta["kind"]
        if kind == "count":
            topic = re.search(r"about (\w+)\?", task.question).group(1)  # type: ignore[union-attr]
            assert task.gold == topics.count(topic)
            assert task.scorer == "numeric"
        elif kind == "group":
            topic = re.search(r"records about (\w+)\?", task.question).group(1)  # type: ignore[union-attr]
            totals: dict[str, float] = defaultdict(float)
            for r, t in zip(recs, topics, strict=True):
                if t == topic:
                    totals[r[1]] += r[2]
            assert task.gold == {c: round(v, 2) for c, v in sorted(totals.items())}
        else:
            a, b = re.findall(r"record about (\w+)", task.question)
            seen: dict[str, set[str]] = defaultdict(set)
            for r, t in zip(recs, topics, strict=True):
                seen[r[0]].add(t)  # type: ignore[arg-type]
            both = sorted(u for u, ts in seen.items() if a in ts and b in ts)
            assert sorted(map(tuple, task.gold)) == [
                (x, y) for i, x in enumerate(both) for y in both[i + 1 :]
            ]


def test_multihop_gold_follows_the_files(tmp_path: Path) -> None:
    for index in range(4):
        task = multihop_task(tmp_path, seed=2, index=index, people=30)
        root = Path(task.inputs["docs"])
        person, company, city = task.meta["chain"]
        assert (
            f"{person} works for {company} as"
            in (root / "people" / f"{person.lower().replace(' ', '-')}.md").read_text()
        )
        text = "\n".join(p.read_text() for p in root.rglob("*.md"))
        assert f"{company} is headquartered in {city}." in text
        if task.meta["hops"] == 3:
            assert f"{city} is a city in {task.gold}." in text
        else:
            assert task.gold == city
    sidecar = json.loads((tmp_path / "multihop-s2-30.json").read_text())
    assert sidecar["params"]["people"] == 30
