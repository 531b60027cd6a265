"""An index created before items were keyed by namespace is migrated in place: rows, keyword
index and vectors are kept, and the files are re-read once so every row gets its new keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from holdfast.memory import MemoryConfig, MemoryStore, NoEmbedder
from holdfast.memory.index_sqlite import MIGRATIONS
from holdfast.store.sqlite import SQLiteDB, migrate


class TinyEmbedder:
    name = "tiny"
    dim = 4

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray([[1.0, 0.0, 0.0, 0.0]] * len(texts), dtype=np.float32)


def test_version_1_index_is_migrated_keeping_rows_and_vectors(tmp_path: Path) -> None:
    db_path = tmp_path / "old.db"
    root = tmp_path / "memory"
    cfg = MemoryConfig(root=root, db_path=db_path)
    store = MemoryStore(cfg, embedder=TinyEmbedder())
    res = store.add("The VPN gateway is vpn2.internal.", namespace="ops")
    store.close()
    # Rebuild the same content in a version-1 database (items unique by id alone).
    db_path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    old = SQLiteDB(db_path)
    migrate(old, "memory", MIGRATIONS[:1])
    data = res.item.to_dict() | {"trust": "owner"}
    with old.transaction() as tx:
        tx.execute(
            "INSERT INTO memory_items (rid, id, namespace, kind, text, norm_hash, content_hash, "
            "path, line, mention_time, trust, status, data) VALUES (7, ?, 'ops', 'fact', ?, 'x', "
            "'old', 'ops/MEMORY.md', 3, 0, 'owner', 'active', ?)",
            (res.item.id, res.item.text, json.dumps(data)),
        )
        tx.execute(
            "INSERT INTO memory_fts (rowid, body, context, entities, ns) VALUES (7, ?, '', '', 'x')",
            (res.item.text,),
        )
        tx.execute(
            "INSERT INTO memory_chunks (rid, namespace, embedder, seq, vector) "
            "VALUES (7, 'ops', 'tiny', 0, ?)",
            (np.ones(4, dtype=np.float32).tobytes(),),
        )
    old.close()

    store = MemoryStore(cfg, embedder=TinyEmbedder())
    assert store.get(res.item.id, namespace="ops").text == res.item.text
    assert store.stats("ops")["vectors"] == 1  # kept: the text did not change
    row = store.index.get("ops", res.item.id)
    assert row is not None and row.rid == 7 and row.content_hash != "old"
    hits = store.search("vpn gateway", namespace="ops")
    assert hits and hits[0].item.id == res.item.id
    again = store.add("The VPN gateway is the vpn2.internal.", namespace="ops")
    assert again.status == "near_duplicate"  # the near-duplicate key was filled in
    store.close()
    plain = MemoryStore(cfg, embedder=NoEmbedder(warn=False))
    assert plain.stats("ops")["items"] == 1
    plain.close()
