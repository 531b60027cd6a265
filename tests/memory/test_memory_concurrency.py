"""Two processes writing to one namespace at once lose nothing (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from holdfast.memory import MemoryStore, parse_file

WRITER = textwrap.dedent(
    """
    import sys
    from holdfast.memory import MemoryConfig, MemoryStore, NoEmbedder

    tag, n = sys.argv[1], int(sys.argv[2])
    store = MemoryStore(MemoryConfig(), embedder=NoEmbedder(warn=False))
    for i in range(n):
        kind = "fact" if i % 2 else "episode"
        store.add(f"writer {tag} note number {i} zq{tag}{i}", namespace="shared", kind=kind)
    store.close()
    """
)


def test_two_writer_processes_lose_nothing(
    store: MemoryStore, holdfast_home: Path, tmp_path: Path
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    n = 40
    procs = [
        subprocess.Popen([sys.executable, str(script), tag, str(n)], stderr=subprocess.PIPE)
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    ids_in_files: list[str] = []
    for path in (store.root / "shared").rglob("*.md"):
        sections, issues = parse_file(path.read_text(), path.name, "shared")
        assert issues == []
        ids_in_files.extend(s.item.id for s in sections)
    assert len(ids_in_files) == 2 * n == len(set(ids_in_files))
    assert store.stats("shared")["items"] == 2 * n
    for tag in ("a", "b"):
        for i in (0, n // 2, n - 1):
            hits = store.search(f"zq{tag}{i}", namespace="shared")
            assert len(hits) == 1 and hits[0].item.text.endswith(f"zq{tag}{i}")
            path, _, line = hits[0].citation.partition("#")
            assert (store.root / path).read_text().split("\n")[
                int(line) - 1
            ] == f"## {hits[0].item.id} · {hits[0].item.kind.value}"
    assert store.issues("shared") == []
