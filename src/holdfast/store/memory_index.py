"""The knowledge-memory index: every SQL statement the memory layer runs.

The index is a rebuildable cache of the Markdown memory files: one row per item (with its JSON),
an FTS5 table (item text, neighbouring-turn context, entity names) for BM25, one row per embedded
chunk with its float32 vector, entity aliases, and the stat/hash of each indexed file so that
hand edits are found and re-read incrementally.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from holdfast.store.sqlite import SQLiteDB, migrate

COMPONENT = "memory"

MIGRATIONS = [
    """
    CREATE TABLE memory_items (
        rid INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        namespace TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        norm_hash TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        path TEXT NOT NULL,
        line INTEGER NOT NULL,
        mention_time REAL NOT NULL,
        event_start REAL,
        event_end REAL,
        valid_to REAL,
        trust TEXT NOT NULL,
        status TEXT NOT NULL,
        session TEXT,
        turn INTEGER,
        data TEXT NOT NULL
    );
    CREATE INDEX memory_items_ns ON memory_items(namespace, status);
    CREATE INDEX memory_items_norm ON memory_items(namespace, norm_hash);
    CREATE INDEX memory_items_session ON memory_items(namespace, session, turn);
    CREATE INDEX memory_items_path ON memory_items(path);
    CREATE VIRTUAL TABLE memory_fts USING fts5(
        body, context, entities, ns, tokenize = 'porter unicode61'
    );
    CREATE TABLE memory_chunks (
        chunk_id INTEGER PRIMARY KEY AUTOINCREMENT,
        rid INTEGER NOT NULL,
        namespace TEXT NOT NULL,
        embedder TEXT NOT NULL,
        seq INTEGER NOT NULL,
        vector BLOB NOT NULL
    );
    CREATE INDEX memory_chunks_rid ON memory_chunks(rid);
    CREATE INDEX memory_chunks_ns ON memory_chunks(namespace, embedder, chunk_id);
    CREATE TABLE memory_item_entities (
        rid INTEGER NOT NULL,
        namespace TEXT NOT NULL,
        canonical TEXT NOT NULL,
        PRIMARY KEY (rid, canonical)
    );
    CREATE INDEX memory_item_entities_name ON memory_item_entities(namespace, canonical, rid);
    CREATE TABLE memory_files (
        path TEXT PRIMARY KEY,
        namespace TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        lines INTEGER NOT NULL DEFAULT -1
    );
    CREATE TABLE memory_issues (
        path TEXT NOT NULL,
        namespace TEXT NOT NULL,
        line INTEGER NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX memory_issues_path ON memory_issues(path);
    CREATE TABLE memory_state (
        namespace TEXT PRIMARY KEY,
        vec_version INTEGER NOT NULL DEFAULT 0,
        vec_deletes INTEGER NOT NULL DEFAULT 0,
        ent_version INTEGER NOT NULL DEFAULT 0
    );
    """,
]


def ns_token(namespace: str) -> str:
    """A single FTS token standing for a namespace (names may hold characters FTS splits on)."""
    return "ns" + hashlib.sha1(namespace.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ItemRow:
    """What the index stores about one item (enough to rebuild the item from ``data``)."""

    rid: int
    id: str
    namespace: str
    path: str
    line: int
    content_hash: str
    data: dict[str, Any]


def _row(r: sqlite3.Row) -> ItemRow:
    return ItemRow(
        rid=r["rid"],
        id=r["id"],
        namespace=r["namespace"],
        path=r["path"],
        line=r["line"],
        content_hash=r["content_hash"],
        data=json.loads(r["data"]),
    )


class MemoryIndex:
    """SQL access for the memory layer; callers wrap writes in ``db.transaction()``."""

    def __init__(self, db: SQLiteDB) -> None:
        self.db = db
        migrate(db, COMPONENT, MIGRATIONS)

    # ----- items
    def upsert_item(
        self,
        tx: sqlite3.Connection,
        *,
        data: dict[str, Any],
        norm_hash: str,
        content_hash: str,
        path: str,
        line: int,
        times: tuple[float, float | None, float | None, float | None],
        body: str,
        entities_text: str,
    ) -> tuple[int, bool]:
        """Insert or replace an item; returns (rid, whether it needs embedding).

        Vectors are kept when only metadata changed, dropped when the text changed.
        """
        old = tx.execute(
            "SELECT rid, text FROM memory_items WHERE id = ?", (data["id"],)
        ).fetchone()
        src = data.get("source") or {}
        values = (
            data["namespace"],
            data["kind"],
            data["text"],
            norm_hash,
            content_hash,
            path,
            line,
            *times,
            data["trust"],
            data["status"],
            src.get("session"),
            src.get("turn"),
            json.dumps(data, ensure_ascii=False),
        )
        if old is None:
            cur = tx.execute(
                "INSERT INTO memory_items (namespace, kind, text, norm_hash, content_hash, path, "
                "line, mention_time, event_start, event_end, valid_to, trust, status, session, "
                "turn, data, id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*values, data["id"]),
            )
            rid = int(cur.lastrowid or 0)
            tx.execute(
                "INSERT INTO memory_fts (rowid, body, context, entities, ns) VALUES (?, ?, '', ?, ?)",
                (rid, body, entities_text, ns_token(data["namespace"])),
            )
            return rid, True
        else:
            rid = int(old["rid"])
            tx.execute(
                "UPDATE memory_items SET namespace=?, kind=?, text=?, norm_hash=?, content_hash=?, "
                "path=?, line=?, mention_time=?, event_start=?, event_end=?, valid_to=?, trust=?, "
                "status=?, session=?, turn=?, data=? WHERE rid=?",
                (*values, rid),
            )
            tx.execute(
                "UPDATE memory_fts SET body = ?, entities = ? WHERE rowid = ?",
                (body, entities_text, rid),
            )
            tx.execute("DELETE FROM memory_item_entities WHERE rid = ?", (rid,))
            if old["text"] != data["text"]:
                self._drop_chunks(tx, data["namespace"], [rid])
                return rid, True
            return rid, False

    def set_location(self, tx: sqlite3.Connection, item_id: str, path: str, line: int) -> None:
        tx.execute("UPDATE memory_items SET path = ?, line = ? WHERE id = ?", (path, line, item_id))

    def set_context(self, tx: sqlite3.Connection, rid: int, context: str) -> None:
        tx.execute("UPDATE memory_fts SET context = ? WHERE rowid = ?", (context, rid))

    def delete_items(self, tx: sqlite3.Connection, namespace: str, rids: Sequence[int]) -> None:
        if not rids:
            return
        self._drop_chunks(tx, namespace, rids)
        for rid in rids:
            tx.execute("DELETE FROM memory_fts WHERE rowid = ?", (rid,))
            tx.execute("DELETE FROM memory_item_entities WHERE rid = ?", (rid,))
            tx.execute("DELETE FROM memory_items WHERE rid = ?", (rid,))

    def _drop_chunks(self, tx: sqlite3.Connection, namespace: str, rids: Sequence[int]) -> None:
        n = 0
        for rid in rids:
            n += tx.execute("DELETE FROM memory_chunks WHERE rid = ?", (rid,)).rowcount
        if n:
            tx.execute(
                "INSERT INTO memory_state (namespace, vec_deletes) VALUES (?, 1) "
                "ON CONFLICT(namespace) DO UPDATE SET vec_deletes = vec_deletes + 1",
                (namespace,),
            )

    def add_chunks(
        self,
        tx: sqlite3.Connection,
        namespace: str,
        embedder: str,
        rows: Iterable[tuple[int, int, bytes]],
    ) -> None:
        """Store (rid, seq, float32 vector bytes) rows for ``embedder``."""
        tx.executemany(
            "INSERT INTO memory_chunks (rid, namespace, embedder, seq, vector) VALUES (?,?,?,?,?)",
            [(rid, namespace, embedder, seq, vec) for rid, seq, vec in rows],
        )
        tx.execute(
            "INSERT INTO memory_state (namespace, vec_version) VALUES (?, 1) "
            "ON CONFLICT(namespace) DO UPDATE SET vec_version = vec_version + 1",
            (namespace,),
        )

    def set_entities(
        self, tx: sqlite3.Connection, rid: int, namespace: str, names: Iterable[str]
    ) -> None:
        new_name = False
        for n in names:
            if not new_name:
                new_name = (
                    tx.execute(
                        "SELECT 1 FROM memory_item_entities WHERE namespace = ? AND canonical = ? "
                        "LIMIT 1",
                        (namespace, n),
                    ).fetchone()
                    is None
                )
            tx.execute(
                "INSERT OR IGNORE INTO memory_item_entities (rid, namespace, canonical) "
                "VALUES (?,?,?)",
                (rid, namespace, n),
            )
        if new_name:
            self.bump_entities(tx, namespace)

    def bump_entities(self, tx: sqlite3.Connection, namespace: str) -> None:
        tx.execute(
            "INSERT INTO memory_state (namespace, ent_version) VALUES (?, 1) "
            "ON CONFLICT(namespace) DO UPDATE SET ent_version = ent_version + 1",
            (namespace,),
        )

    def entity_state(self, namespace: str) -> int:
        r = (
            self.db.connection()
            .execute("SELECT ent_version FROM memory_state WHERE namespace = ?", (namespace,))
            .fetchone()
        )
        return int(r[0]) if r else 0

    def entity_names(self, namespace: str) -> list[str]:
        rows = self.db.connection().execute(
            "SELECT DISTINCT canonical FROM memory_item_entities WHERE namespace = ?", (namespace,)
        )
        return [r[0] for r in rows]

    # ----- reads
    def get(self, item_id: str) -> ItemRow | None:
        r = (
            self.db.connection()
            .execute("SELECT * FROM memory_items WHERE id = ?", (item_id,))
            .fetchone()
        )
        return _row(r) if r else None

    def get_many(self, rids: Sequence[int]) -> dict[int, ItemRow]:
        out: dict[int, ItemRow] = {}
        conn = self.db.connection()
        for start in range(0, len(rids), 500):
            part = list(rids[start : start + 500])
            q = f"SELECT * FROM memory_items WHERE rid IN ({','.join('?' * len(part))})"
            for r in conn.execute(q, part):
                out[int(r["rid"])] = _row(r)
        return out

    def by_norm_hash(self, namespace: str, norm_hash: str) -> list[ItemRow]:
        rows = self.db.connection().execute(
            "SELECT * FROM memory_items WHERE namespace = ? AND norm_hash = ? AND status = 'active'",
            (namespace, norm_hash),
        )
        return [_row(r) for r in rows]

    def items_in_path(self, path: str) -> dict[str, tuple[int, str]]:
        rows = self.db.connection().execute(
            "SELECT id, rid, content_hash FROM memory_items WHERE path = ?", (path,)
        )
        return {r["id"]: (int(r["rid"]), r["content_hash"]) for r in rows}

    def session_neighbours(
        self, namespace: str, session: str, turn: int, width: int
    ) -> list[tuple[int, int, str]]:
        """(rid, turn, text) of active items in ``session`` within ``width`` turns of ``turn``."""
        rows = self.db.connection().execute(
            "SELECT rid, turn, text, data FROM memory_items WHERE namespace = ? AND session = ? "
            "AND turn BETWEEN ? AND ? AND status = 'active' ORDER BY turn",
            (namespace, session, turn - width, turn + width),
        )
        out = []
        for r in rows:
            speaker = (json.loads(r["data"]).get("source") or {}).get("speaker")
            text = f"{speaker}: {r['text']}" if speaker else r["text"]
            out.append((int(r["rid"]), int(r["turn"]), text))
        return out

    def keyword(
        self, namespace: str, match: str, limit: int, weights: tuple[float, float, float]
    ) -> list[int]:
        """rids ranked by FTS5 BM25 (best first) for a MATCH expression, in one namespace.

        The namespace is a token in the FTS row, so the search never joins the items table;
        tombstoned or superseded rows are filtered by the caller.
        """
        w = ", ".join(f"{x:.4f}" for x in weights)
        rows = self.db.connection().execute(
            f"SELECT rowid FROM memory_fts WHERE memory_fts MATCH ? "
            f"ORDER BY bm25(memory_fts, {w}, 0.0) LIMIT ?",
            (f"ns:{ns_token(namespace)} AND ({match})", limit),
        )
        return [int(r[0]) for r in rows]

    def entity_items(self, namespace: str, names: Sequence[str], limit: int) -> list[int]:
        """rids naming the most of ``names``, newest first among ties (status filtered later)."""
        if not names:
            return []
        q = (
            "SELECT rid, COUNT(*) AS n FROM memory_item_entities WHERE namespace = ? AND canonical "
            f"IN ({','.join('?' * len(names))}) GROUP BY rid ORDER BY n DESC, rid DESC LIMIT ?"
        )
        rows = self.db.connection().execute(q, (namespace, *names, limit))
        return [int(r[0]) for r in rows]

    def vec_state(self, namespace: str) -> tuple[int, int]:
        r = (
            self.db.connection()
            .execute(
                "SELECT vec_version, vec_deletes FROM memory_state WHERE namespace = ?",
                (namespace,),
            )
            .fetchone()
        )
        return (int(r[0]), int(r[1])) if r else (0, 0)

    def chunks_after(
        self, namespace: str, embedder: str, after: int
    ) -> list[tuple[int, int, bytes]]:
        """(chunk_id, rid, vector) of chunks newer than ``after`` for one namespace and embedder."""
        rows = self.db.connection().execute(
            "SELECT chunk_id, rid, vector FROM memory_chunks WHERE namespace = ? AND embedder = ? "
            "AND chunk_id > ? ORDER BY chunk_id",
            (namespace, embedder, after),
        )
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    def vectors_by_text(self, namespace: str, embedder: str) -> dict[tuple[str, str], list[bytes]]:
        """(item id, text) -> chunk vectors in order, to carry over a reindex."""
        out: dict[tuple[str, str], list[bytes]] = {}
        rows = self.db.connection().execute(
            "SELECT i.id, i.text, c.vector FROM memory_chunks c JOIN memory_items i ON i.rid = c.rid "
            "WHERE c.namespace = ? AND c.embedder = ? ORDER BY c.rid, c.seq",
            (namespace, embedder),
        )
        for r in rows:
            out.setdefault((r[0], r[1]), []).append(bytes(r[2]))
        return out

    def restore_vectors(
        self,
        tx: sqlite3.Connection,
        namespace: str,
        embedder: str,
        kept: dict[tuple[str, str], list[bytes]],
    ) -> int:
        """Re-attach carried-over vectors to items whose id and text are unchanged."""
        rows = tx.execute(
            "SELECT rid, id, text FROM memory_items WHERE namespace = ?", (namespace,)
        ).fetchall()
        batch: list[tuple[int, int, bytes]] = []
        for r in rows:
            vecs = kept.get((r[1], r[2]))
            if vecs:
                batch.extend((int(r[0]), seq, v) for seq, v in enumerate(vecs))
        if batch:
            self.add_chunks(tx, namespace, embedder, batch)
        return len(batch)

    def rids_missing_vectors(self, namespace: str, embedder: str) -> list[int]:
        rows = self.db.connection().execute(
            "SELECT rid FROM memory_items i WHERE namespace = ? AND NOT EXISTS (SELECT 1 FROM "
            "memory_chunks c WHERE c.rid = i.rid AND c.embedder = ?)",
            (namespace, embedder),
        )
        return [int(r[0]) for r in rows]

    def active_meta(
        self, namespace: str, rids: Sequence[int]
    ) -> dict[int, tuple[float, float | None, float | None, float | None, str]]:
        """(mention, event_start, event_end, valid_to, trust) of the active ones among ``rids``."""
        out = {}
        conn = self.db.connection()
        for start in range(0, len(rids), 500):
            part = list(rids[start : start + 500])
            q = (
                "SELECT rid, mention_time, event_start, event_end, valid_to, trust FROM memory_items "
                f"WHERE status = 'active' AND rid IN ({','.join('?' * len(part))})"
            )
            for r in conn.execute(q, part):
                out[int(r[0])] = (float(r[1]), r[2], r[3], r[4], str(r[5]))
        return out

    def in_time_range(
        self, namespace: str, lo: float | None, hi: float | None, limit: int
    ) -> list[int]:
        """rids whose event range (or mention time) meets [lo, hi], latest first."""
        lo_v = lo if lo is not None else -1e18
        hi_v = hi if hi is not None else 1e18
        rows = self.db.connection().execute(
            "SELECT rid FROM memory_items WHERE namespace = ? AND status = 'active' "
            "AND COALESCE(event_end, event_start, mention_time) >= ? "
            "AND COALESCE(event_start, mention_time) <= ? ORDER BY mention_time DESC LIMIT ?",
            (namespace, lo_v, hi_v, limit),
        )
        return [int(r[0]) for r in rows]

    # ----- files and issues
    def file_state(self, namespace: str) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, sha256 or '' when only the stat is known)."""
        rows = self.db.connection().execute(
            "SELECT path, size, mtime_ns, sha256 FROM memory_files WHERE namespace = ?",
            (namespace,),
        )
        return {r[0]: (int(r[1]), int(r[2]), r[3]) for r in rows}

    def file_stat(self, path: str) -> tuple[int, int, int] | None:
        """(size, mtime_ns, line count or -1) recorded for a file, when indexed."""
        r = (
            self.db.connection()
            .execute("SELECT size, mtime_ns, lines FROM memory_files WHERE path = ?", (path,))
            .fetchone()
        )
        return (int(r[0]), int(r[1]), int(r[2])) if r else None

    def set_file_state(
        self,
        tx: sqlite3.Connection,
        namespace: str,
        path: str,
        size: int,
        mtime_ns: int,
        sha: str,
        lines: int = -1,
    ) -> None:
        tx.execute(
            "INSERT INTO memory_files (path, namespace, size, mtime_ns, sha256, lines) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET size=excluded.size, "
            "mtime_ns=excluded.mtime_ns, sha256=excluded.sha256, lines=excluded.lines",
            (path, namespace, size, mtime_ns, sha, lines),
        )

    def forget_file(self, tx: sqlite3.Connection, path: str) -> None:
        tx.execute("DELETE FROM memory_files WHERE path = ?", (path,))
        tx.execute("DELETE FROM memory_issues WHERE path = ?", (path,))

    def set_issues(
        self, tx: sqlite3.Connection, namespace: str, path: str, issues: Iterable[tuple[int, str]]
    ) -> None:
        tx.execute("DELETE FROM memory_issues WHERE path = ?", (path,))
        tx.executemany(
            "INSERT INTO memory_issues (path, namespace, line, message) VALUES (?,?,?,?)",
            [(path, namespace, line, msg) for line, msg in issues],
        )

    def issues(self, namespace: str) -> list[tuple[str, int, str]]:
        rows = self.db.connection().execute(
            "SELECT path, line, message FROM memory_issues WHERE namespace = ? ORDER BY path, line",
            (namespace,),
        )
        return [(r[0], int(r[1]), r[2]) for r in rows]

    def clear_namespace(self, tx: sqlite3.Connection, namespace: str) -> None:
        rids = [
            int(r[0])
            for r in tx.execute("SELECT rid FROM memory_items WHERE namespace = ?", (namespace,))
        ]
        for rid in rids:
            tx.execute("DELETE FROM memory_fts WHERE rowid = ?", (rid,))
        tx.execute("DELETE FROM memory_chunks WHERE namespace = ?", (namespace,))
        tx.execute("DELETE FROM memory_item_entities WHERE namespace = ?", (namespace,))
        tx.execute("DELETE FROM memory_items WHERE namespace = ?", (namespace,))
        tx.execute("DELETE FROM memory_files WHERE namespace = ?", (namespace,))
        tx.execute("DELETE FROM memory_issues WHERE namespace = ?", (namespace,))
        tx.execute(
            "INSERT INTO memory_state (namespace, vec_deletes) VALUES (?, 1) "
            "ON CONFLICT(namespace) DO UPDATE SET vec_deletes = vec_deletes + 1",
            (namespace,),
        )

    def stats(self, namespace: str) -> dict[str, Any]:
        conn = self.db.connection()
        by_kind = {
            r[0]: int(r[1])
            for r in conn.execute(
                "SELECT kind, COUNT(*) FROM memory_items WHERE namespace = ? AND status = 'active' "
                "GROUP BY kind",
                (namespace,),
            )
        }
        by_trust = {
            r[0]: int(r[1])
            for r in conn.execute(
                "SELECT trust, COUNT(*) FROM memory_items WHERE namespace = ? AND status = 'active' "
                "GROUP BY trust",
                (namespace,),
            )
        }
        one = conn.execute(
            "SELECT COUNT(*), SUM(status != 'active'), SUM(valid_to IS NOT NULL) FROM memory_items "
            "WHERE namespace = ?",
            (namespace,),
        ).fetchone()
        chunks = conn.execute(
            "SELECT COUNT(*) FROM memory_chunks WHERE namespace = ?", (namespace,)
        ).fetchone()[0]
        return {
            "items": int(one[0] or 0),
            "deleted": int(one[1] or 0),
            "superseded": int(one[2] or 0),
            "by_kind": by_kind,
            "by_trust": by_trust,
            "vectors": int(chunks),
            "files": len(self.file_state(namespace)),
        }
