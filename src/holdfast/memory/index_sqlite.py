"""The knowledge-memory index on SQLite: every SQL statement of the memory layer.

FTS5 (Porter stemming, unicode61) ranks keywords with BM25; chunk vectors are float32 blobs read
into an in-process matrix by :mod:`holdfast.memory.vectors` (this Python's ``sqlite3`` cannot
load sqlite-vec). Items are unique per ``(namespace, id)``.

Erasure (:meth:`SQLiteMemoryIndex.erase`) turns on ``secure_delete`` so deleted cells and freed
pages are overwritten with zeros, merges the FTS5 segments so no deleted token survives in the
keyword index, and truncates the write-ahead log, which still holds earlier page images.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from holdfast.errors import RuntimeFailure
from holdfast.memory.fusion import CandidateInfo
from holdfast.memory.index import (
    IN_TIME_RANGE_SQL,
    ItemRow,
    Link,
    MemoryIndex,
    Meta,
    SharedId,
    Times,
    Tx,
    in_time_range_params,
)
from holdfast.memory.keyword_index import KeywordMirror
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
    # 2: items unique per (namespace, id), so a copied namespace folder never takes over the
    # original's rows; the near-duplicate key; links between items. Content hashes and file
    # states are cleared so the next sync re-reads every file (vectors are kept: text unchanged).
    """
    CREATE TABLE memory_items_v2 (
        rid INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        namespace TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        norm_hash TEXT NOT NULL,
        loose_hash TEXT NOT NULL DEFAULT '',
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
        data TEXT NOT NULL,
        UNIQUE (namespace, id)
    );
    INSERT INTO memory_items_v2 (rid, id, namespace, kind, text, norm_hash, content_hash, path,
        line, mention_time, event_start, event_end, valid_to, trust, status, session, turn, data)
        SELECT rid, id, namespace, kind, text, norm_hash, '', path, line, mention_time,
        event_start, event_end, valid_to, trust, status, session, turn, data FROM memory_items;
    DROP TABLE memory_items;
    ALTER TABLE memory_items_v2 RENAME TO memory_items;
    CREATE INDEX memory_items_ns ON memory_items(namespace, status);
    CREATE INDEX memory_items_norm ON memory_items(namespace, norm_hash);
    CREATE INDEX memory_items_loose ON memory_items(namespace, loose_hash);
    CREATE INDEX memory_items_session ON memory_items(namespace, session, turn);
    CREATE INDEX memory_items_path ON memory_items(path);
    CREATE INDEX memory_items_id ON memory_items(id);
    CREATE TABLE memory_links (
        rid INTEGER NOT NULL,
        namespace TEXT NOT NULL,
        ref TEXT NOT NULL,
        relation TEXT NOT NULL,
        PRIMARY KEY (rid, ref, relation)
    );
    CREATE INDEX memory_links_ref ON memory_links(namespace, ref);
    UPDATE memory_files SET size = -1, sha256 = '';
    """,
    # 3: beliefs and observations are looked up by kind on every write.
    """
    CREATE INDEX memory_items_kind ON memory_items(namespace, kind, status);
    """,
    # 4: the row ids of keyword-index rows changed by each write, in commit order, so that an
    # in-process mirror of the keyword index (holdfast.memory.keyword_index) re-reads only those.
    """
    CREATE TABLE memory_kw_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        rid INTEGER NOT NULL
    );
    """,
]

KW_LOG_KEEP = 50_000
"""Log entries kept; a process further behind than this rebuilds its keyword mirror."""
KW_LOG_PRUNE_EVERY = 4_096


def ns_token(namespace: str) -> str:
    """A single FTS token standing for a namespace (names may hold characters FTS splits on)."""
    return "ns" + hashlib.sha1(namespace.encode()).hexdigest()[:16]


def fts_match(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression that ORs the quoted terms (quotes make any word literal)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


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


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SQLiteMemoryIndex(MemoryIndex):
    """The memory index in the shared SQLite store."""

    def __init__(self, db: SQLiteDB, *, keyword_mirror: bool = True) -> None:
        self.db = db
        migrate(db, COMPONENT, MIGRATIONS)
        self._mirror: KeywordMirror | None = KeywordMirror() if keyword_mirror else None

    def _log_keyword(self, tx: Tx, rids: Iterable[int]) -> None:
        """Record rows of the keyword index this transaction changes (see migration 4)."""
        for rid in rids:
            seq = int(tx.execute("INSERT INTO memory_kw_log (rid) VALUES (?)", (rid,)).lastrowid)
            if seq % KW_LOG_PRUNE_EVERY == 0:
                tx.execute("DELETE FROM memory_kw_log WHERE seq <= ?", (seq - KW_LOG_KEEP,))

    def _conn(self) -> sqlite3.Connection:
        return self.db.connection()

    def transaction(self) -> AbstractContextManager[Tx]:
        return self.db.transaction()

    def close(self) -> None:
        if self._mirror is not None:
            self._mirror.close()
        self.db.close()

    @property
    def location(self) -> str:
        return str(self.db.path)

    def size_bytes(self) -> int:
        db = Path(str(self.db.path))
        if str(db) == ":memory:":
            return 0
        return sum(os.path.getsize(p) for p in (db, Path(f"{db}-wal")) if p.exists())

    # ----- items
    def upsert_item(
        self,
        tx: Tx,
        *,
        data: dict[str, Any],
        norm_hash: str,
        loose_hash: str,
        content_hash: str,
        path: str,
        line: int,
        times: Times,
        body: str,
        entities_text: str,
        links: Sequence[Link],
    ) -> tuple[int, bool]:
        old = tx.execute(
            "SELECT rid, text FROM memory_items WHERE namespace = ? AND id = ?",
            (data["namespace"], data["id"]),
        ).fetchone()
        src = data.get("source") or {}
        values = (
            data["kind"],
            data["text"],
            norm_hash,
            loose_hash,
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
        needs_vectors = True
        if old is None:
            cur = tx.execute(
                "INSERT INTO memory_items (kind, text, norm_hash, loose_hash, content_hash, path, "
                "line, mention_time, event_start, event_end, valid_to, trust, status, session, "
                "turn, data, namespace, id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*values, data["namespace"], data["id"]),
            )
            rid = int(cur.lastrowid or 0)
            tx.execute(
                "INSERT INTO memory_fts (rowid, body, context, entities, ns) VALUES (?, ?, '', ?, ?)",
                (rid, body, entities_text, ns_token(data["namespace"])),
            )
            self._log_keyword(tx, [rid])
        else:
            rid = int(old["rid"])
            tx.execute(
                "UPDATE memory_items SET kind=?, text=?, norm_hash=?, loose_hash=?, "
                "content_hash=?, path=?, line=?, mention_time=?, event_start=?, event_end=?, "
                "valid_to=?, trust=?, status=?, session=?, turn=?, data=? WHERE rid=?",
                (*values, rid),
            )
            tx.execute(
                "UPDATE memory_fts SET body = ?, entities = ? WHERE rowid = ?",
                (body, entities_text, rid),
            )
            self._log_keyword(tx, [rid])
            tx.execute("DELETE FROM memory_item_entities WHERE rid = ?", (rid,))
            tx.execute("DELETE FROM memory_links WHERE rid = ?", (rid,))
            if old["text"] != data["text"]:
                self._drop_chunks(tx, data["namespace"], [rid])
            else:
                needs_vectors = False
        tx.executemany(
            "INSERT OR IGNORE INTO memory_links (rid, namespace, ref, relation) VALUES (?,?,?,?)",
            [(rid, data["namespace"], link.ref, link.relation) for link in links],
        )
        return rid, needs_vectors

    def set_location(self, tx: Tx, namespace: str, item_id: str, path: str, line: int) -> None:
        tx.execute(
            "UPDATE memory_items SET path = ?, line = ? WHERE namespace = ? AND id = ?",
            (path, line, namespace, item_id),
        )

    def set_context(self, tx: Tx, rid: int, context: str) -> None:
        tx.execute("UPDATE memory_fts SET context = ? WHERE rowid = ?", (context, rid))
        self._log_keyword(tx, [rid])

    def delete_items(self, tx: Tx, namespace: str, rids: Sequence[int]) -> None:
        if not rids:
            return
        self._drop_chunks(tx, namespace, rids)
        self._log_keyword(tx, rids)
        for rid in rids:
            tx.execute("DELETE FROM memory_fts WHERE rowid = ?", (rid,))
            tx.execute("DELETE FROM memory_item_entities WHERE rid = ?", (rid,))
            tx.execute("DELETE FROM memory_links WHERE rid = ?", (rid,))
            tx.execute("DELETE FROM memory_items WHERE rid = ?", (rid,))

    def _drop_chunks(self, tx: Tx, namespace: str, rids: Sequence[int]) -> None:
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
        self, tx: Tx, namespace: str, embedder: str, rows: Iterable[tuple[int, int, bytes]]
    ) -> None:
        tx.executemany(
            "INSERT INTO memory_chunks (rid, namespace, embedder, seq, vector) VALUES (?,?,?,?,?)",
            [(rid, namespace, embedder, seq, vec) for rid, seq, vec in rows],
        )
        tx.execute(
            "INSERT INTO memory_state (namespace, vec_version) VALUES (?, 1) "
            "ON CONFLICT(namespace) DO UPDATE SET vec_version = vec_version + 1",
            (namespace,),
        )

    def set_entities(self, tx: Tx, rid: int, namespace: str, names: Iterable[str]) -> None:
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
            tx.execute(
                "INSERT INTO memory_state (namespace, ent_version) VALUES (?, 1) "
                "ON CONFLICT(namespace) DO UPDATE SET ent_version = ent_version + 1",
                (namespace,),
            )

    def entity_state(self, namespace: str) -> int:
        r = (
            self._conn()
            .execute("SELECT ent_version FROM memory_state WHERE namespace = ?", (namespace,))
            .fetchone()
        )
        return int(r[0]) if r else 0

    def entity_names(self, namespace: str) -> list[str]:
        rows = self._conn().execute(
            "SELECT DISTINCT canonical FROM memory_item_entities WHERE namespace = ?", (namespace,)
        )
        return [r[0] for r in rows]

    # ----- reads
    def get(self, namespace: str, item_id: str) -> ItemRow | None:
        r = (
            self._conn()
            .execute(
                "SELECT * FROM memory_items WHERE namespace = ? AND id = ?", (namespace, item_id)
            )
            .fetchone()
        )
        return _row(r) if r else None

    def find(self, item_id: str) -> list[ItemRow]:
        rows = self._conn().execute(
            "SELECT * FROM memory_items WHERE id = ? ORDER BY namespace", (item_id,)
        )
        return [_row(r) for r in rows]

    def get_many(self, rids: Sequence[int]) -> dict[int, ItemRow]:
        out: dict[int, ItemRow] = {}
        conn = self._conn()
        for start in range(0, len(rids), 500):
            part = list(rids[start : start + 500])
            q = f"SELECT * FROM memory_items WHERE rid IN ({_marks(len(part))})"
            for r in conn.execute(q, part):
                out[int(r["rid"])] = _row(r)
        return out

    def by_hash(
        self, namespace: str, *, norm: str | None = None, loose: str | None = None
    ) -> list[ItemRow]:
        column, value = ("norm_hash", norm) if norm is not None else ("loose_hash", loose)
        if not value:
            return []
        rows = self._conn().execute(
            f"SELECT * FROM memory_items WHERE namespace = ? AND {column} = ? "
            "AND status = 'active' ORDER BY rid",
            (namespace, value),
        )
        return [_row(r) for r in rows]

    def items_in_path(self, path: str) -> dict[str, tuple[int, str]]:
        rows = self._conn().execute(
            "SELECT id, rid, content_hash FROM memory_items WHERE path = ?", (path,)
        )
        return {r["id"]: (int(r["rid"]), r["content_hash"]) for r in rows}

    def rids(self, namespace: str, kinds: Sequence[str] | None = None) -> list[int]:
        if kinds:
            rows = self._conn().execute(
                f"SELECT rid FROM memory_items WHERE namespace = ? AND kind IN ({_marks(len(kinds))}) "
                "ORDER BY rid",
                (namespace, *kinds),
            )
        else:
            rows = self._conn().execute(
                "SELECT rid FROM memory_items WHERE namespace = ? ORDER BY rid", (namespace,)
            )
        return [int(r[0]) for r in rows]

    def linking(self, namespace: str, refs: Sequence[str]) -> list[int]:
        out: set[int] = set()
        conn = self._conn()
        for start in range(0, len(refs), 500):
            part = list(refs[start : start + 500])
            rows = conn.execute(
                f"SELECT DISTINCT rid FROM memory_links WHERE namespace = ? AND ref IN ({_marks(len(part))})",
                (namespace, *part),
            )
            out.update(int(r[0]) for r in rows)
        return sorted(out)

    def session_neighbours(
        self, namespace: str, session: str, turn: int, width: int
    ) -> list[tuple[int, int, str]]:
        rows = self._conn().execute(
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
        self, namespace: str, terms: Sequence[str], limit: int, weights: tuple[float, float, float]
    ) -> list[tuple[int, float]]:
        if not terms:
            return []
        if self._mirror is not None:
            found = self._mirror.search(self._conn(), ns_token(namespace), terms, limit, weights)
            if found is not None:
                return found
        return self.keyword_sql(namespace, terms, limit, weights)

    def keyword_sql(
        self, namespace: str, terms: Sequence[str], limit: int, weights: tuple[float, float, float]
    ) -> list[tuple[int, float]]:
        """The same ranking from FTS5 itself (every matching row scored by ``bm25()``): the
        fallback for query words FTS5 reads as phrases, and the reference the mirror is
        tested against."""
        if not terms:
            return []
        w = ", ".join(f"{x:.4f}" for x in weights)
        rows = self._conn().execute(
            f"SELECT rowid, bm25(memory_fts, {w}, 0.0) AS score FROM memory_fts "
            "WHERE memory_fts MATCH ? ORDER BY score LIMIT ?",
            (f"ns:{ns_token(namespace)} AND ({fts_match(terms)})", limit),
        )
        return [(int(r[0]), -float(r[1])) for r in rows]

    def doc_freqs(self, namespace: str, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        conn = self._conn()
        token = ns_token(namespace)
        total = conn.execute(
            "SELECT COUNT(*) FROM memory_fts WHERE memory_fts MATCH ?", (f"ns:{token}",)
        ).fetchone()[0]
        out: dict[str, int] = {}
        for t in terms:
            out[t] = conn.execute(
                "SELECT COUNT(*) FROM memory_fts WHERE memory_fts MATCH ?",
                (f"ns:{token} AND {fts_match([t])}",),
            ).fetchone()[0]
        return int(total), out

    def entity_items(self, namespace: str, names: Sequence[str], limit: int) -> list[int]:
        if not names:
            return []
        conn = self._conn()
        present = [
            n
            for n in sorted(set(names))
            if conn.execute(
                "SELECT 1 FROM memory_item_entities WHERE namespace = ? AND canonical = ? LIMIT 1",
                (namespace, n),
            ).fetchone()
        ]
        if len(present) <= 1:
            # Each row then names it once: the same order (count, then newest) straight off
            # the (namespace, canonical, rid) index, not a count over every row that names it.
            if not present:
                return []
            rows = conn.execute(
                "SELECT rid FROM memory_item_entities WHERE namespace = ? AND canonical = ? "
                "ORDER BY rid DESC LIMIT ?",
                (namespace, present[0], limit),
            )
            return [int(r[0]) for r in rows]
        q = (
            "SELECT rid, COUNT(*) AS n FROM memory_item_entities WHERE namespace = ? AND canonical "
            f"IN ({_marks(len(names))}) GROUP BY rid ORDER BY n DESC, rid DESC LIMIT ?"
        )
        rows = self._conn().execute(q, (namespace, *names, limit))
        return [int(r[0]) for r in rows]

    def candidate_info(self, rids: Sequence[int]) -> dict[int, CandidateInfo]:
        out: dict[int, CandidateInfo] = {}
        conn = self._conn()
        for start in range(0, len(rids), 500):
            part = list(rids[start : start + 500])
            q = (
                "SELECT rid, text, session, event_start, "
                "json_extract(data, '$.source.speaker') AS speaker FROM memory_items "
                f"WHERE rid IN ({_marks(len(part))})"
            )
            for r in conn.execute(q, part):
                out[int(r[0])] = CandidateInfo(r[1], r[4], r[2], r[3] is not None)
        return out

    def has_kind(self, namespace: str, kind: str) -> bool:
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM memory_items WHERE namespace = ? AND kind = ? AND status = 'active' "
                "LIMIT 1",
                (namespace, kind),
            )
            .fetchone()
        )
        return row is not None

    def claims_like(
        self, namespace: str, terms: Sequence[str], kinds: Sequence[str], limit: int
    ) -> list[int]:
        if not terms or not kinds:
            return []
        rows = self._conn().execute(
            "SELECT f.rowid FROM memory_fts AS f JOIN memory_items AS i ON i.rid = f.rowid "
            f"WHERE memory_fts MATCH ? AND i.kind IN ({_marks(len(kinds))}) "
            "AND i.status = 'active' AND i.valid_to IS NULL "
            "ORDER BY bm25(memory_fts, 1.0, 0.0, 0.5, 0.0) LIMIT ?",
            (f"ns:{ns_token(namespace)} AND ({fts_match(terms)})", *kinds, limit),
        )
        return [int(r[0]) for r in rows]

    def entity_items_of_kinds(
        self, namespace: str, names: Sequence[str], kinds: Sequence[str], limit: int
    ) -> list[int]:
        if not names or not kinds:
            return []
        rows = self._conn().execute(
            "SELECT e.rid, COUNT(*) AS n FROM memory_item_entities AS e "
            "JOIN memory_items AS i ON i.rid = e.rid "
            f"WHERE e.namespace = ? AND e.canonical IN ({_marks(len(names))}) "
            f"AND i.kind IN ({_marks(len(kinds))}) AND i.status = 'active' "
            "AND i.valid_to IS NULL GROUP BY e.rid ORDER BY n DESC, e.rid DESC LIMIT ?",
            (namespace, *names, *kinds, limit),
        )
        return [int(r[0]) for r in rows]

    def active_meta(self, namespace: str, rids: Sequence[int]) -> dict[int, Meta]:
        out: dict[int, Meta] = {}
        conn = self._conn()
        for start in range(0, len(rids), 500):
            part = list(rids[start : start + 500])
            q = (
                "SELECT rid, mention_time, event_start, event_end, valid_to, trust FROM memory_items "
                f"WHERE namespace = ? AND status = 'active' AND rid IN ({_marks(len(part))})"
            )
            for r in conn.execute(q, (namespace, *part)):
                out[int(r[0])] = (float(r[1]), r[2], r[3], r[4], str(r[5]))
        return out

    def in_time_range(
        self,
        namespace: str,
        lo: float | None,
        hi: float | None,
        limit: int,
        *,
        mentioned: bool = False,
    ) -> list[int]:
        params = in_time_range_params(namespace, lo, hi, limit, mentioned)
        rows = self._conn().execute(IN_TIME_RANGE_SQL, params)
        return [int(r[0]) for r in rows]

    # ----- vectors
    def vec_state(self, namespace: str) -> tuple[int, int]:
        r = (
            self._conn()
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
        rows = self._conn().execute(
            "SELECT chunk_id, rid, vector FROM memory_chunks WHERE namespace = ? AND embedder = ? "
            "AND chunk_id > ? ORDER BY chunk_id",
            (namespace, embedder, after),
        )
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    def vectors_by_text(self, namespace: str, embedder: str) -> dict[tuple[str, str], list[bytes]]:
        out: dict[tuple[str, str], list[bytes]] = {}
        rows = self._conn().execute(
            "SELECT i.id, i.text, c.vector FROM memory_chunks c JOIN memory_items i ON i.rid = c.rid "
            "WHERE c.namespace = ? AND c.embedder = ? ORDER BY c.rid, c.seq",
            (namespace, embedder),
        )
        for r in rows:
            out.setdefault((r[0], r[1]), []).append(bytes(r[2]))
        return out

    def restore_vectors(
        self, tx: Tx, namespace: str, embedder: str, kept: dict[tuple[str, str], list[bytes]]
    ) -> int:
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
        rows = self._conn().execute(
            "SELECT rid FROM memory_items i WHERE namespace = ? AND NOT EXISTS (SELECT 1 FROM "
            "memory_chunks c WHERE c.rid = i.rid AND c.embedder = ?)",
            (namespace, embedder),
        )
        return [int(r[0]) for r in rows]

    # ----- files and issues
    def change_token(self) -> object | None:
        return int(
            self._conn().execute("SELECT COALESCE(MAX(seq), 0) FROM memory_kw_log").fetchone()[0]
        )

    def file_state(self, namespace: str) -> dict[str, tuple[int, int, str]]:
        rows = self._conn().execute(
            "SELECT path, size, mtime_ns, sha256 FROM memory_files WHERE namespace = ?",
            (namespace,),
        )
        return {r[0]: (int(r[1]), int(r[2]), r[3]) for r in rows}

    def file_stat(self, path: str) -> tuple[int, int, int] | None:
        r = (
            self._conn()
            .execute("SELECT size, mtime_ns, lines FROM memory_files WHERE path = ?", (path,))
            .fetchone()
        )
        return (int(r[0]), int(r[1]), int(r[2])) if r else None

    def set_file_state(
        self, tx: Tx, namespace: str, path: str, size: int, mtime_ns: int, sha: str, lines: int = -1
    ) -> None:
        tx.execute(
            "INSERT INTO memory_files (path, namespace, size, mtime_ns, sha256, lines) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET size=excluded.size, "
            "mtime_ns=excluded.mtime_ns, sha256=excluded.sha256, lines=excluded.lines",
            (path, namespace, size, mtime_ns, sha, lines),
        )

    def forget_file(self, tx: Tx, path: str) -> None:
        tx.execute("DELETE FROM memory_files WHERE path = ?", (path,))
        tx.execute("DELETE FROM memory_issues WHERE path = ?", (path,))

    def set_issues(
        self, tx: Tx, namespace: str, path: str, issues: Iterable[tuple[int, str]]
    ) -> None:
        tx.execute("DELETE FROM memory_issues WHERE path = ?", (path,))
        tx.executemany(
            "INSERT INTO memory_issues (path, namespace, line, message) VALUES (?,?,?,?)",
            [(path, namespace, line, msg) for line, msg in issues],
        )

    def issues(self, namespace: str) -> list[tuple[str, int, str]]:
        rows = self._conn().execute(
            "SELECT path, line, message FROM memory_issues WHERE namespace = ? ORDER BY path, line",
            (namespace,),
        )
        return [(r[0], int(r[1]), r[2]) for r in rows]

    def shared_ids(self, namespace: str) -> list[SharedId]:
        rows = self._conn().execute(
            "SELECT a.id, a.path, a.line, b.namespace, b.path, b.line FROM memory_items a "
            "JOIN memory_items b ON b.id = a.id AND b.namespace != a.namespace "
            "WHERE a.namespace = ? ORDER BY a.path, a.line, b.namespace",
            (namespace,),
        )
        return [SharedId(r[0], r[1], int(r[2]), r[3], r[4], int(r[5])) for r in rows]

    def clear_namespace(self, tx: Tx, namespace: str) -> None:
        rids = [
            int(r[0])
            for r in tx.execute("SELECT rid FROM memory_items WHERE namespace = ?", (namespace,))
        ]
        for rid in rids:
            tx.execute("DELETE FROM memory_fts WHERE rowid = ?", (rid,))
        self._log_keyword(tx, rids)
        tx.execute("DELETE FROM memory_chunks WHERE namespace = ?", (namespace,))
        tx.execute("DELETE FROM memory_item_entities WHERE namespace = ?", (namespace,))
        tx.execute("DELETE FROM memory_links WHERE namespace = ?", (namespace,))
        tx.execute("DELETE FROM memory_items WHERE namespace = ?", (namespace,))
        tx.execute("DELETE FROM memory_files WHERE namespace = ?", (namespace,))
        tx.execute("DELETE FROM memory_issues WHERE namespace = ?", (namespace,))
        tx.execute(
            "INSERT INTO memory_state (namespace, vec_deletes) VALUES (?, 1) "
            "ON CONFLICT(namespace) DO UPDATE SET vec_deletes = vec_deletes + 1",
            (namespace,),
        )

    def stats(self, namespace: str) -> dict[str, Any]:
        conn = self._conn()
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

    # ----- erasure
    @contextmanager
    def _erasing(self) -> Iterator[None]:
        conn = self._conn()
        conn.execute("PRAGMA secure_delete = ON")
        try:
            yield
            with self.db.transaction() as tx:
                # Merging every segment drops the deleted rows' tokens from the keyword index.
                tx.execute("INSERT INTO memory_fts(memory_fts) VALUES ('optimize')")
            if str(self.db.path) != ":memory:":
                self._truncate_wal(conn)
                conn.execute("VACUUM")
                self._truncate_wal(conn)
        finally:
            conn.execute("PRAGMA secure_delete = OFF")

    def erase(self) -> AbstractContextManager[None]:
        if self._mirror is not None:
            self._mirror.invalidate()  # rebuilt without the erased rows' tokens on next use
        return self._erasing()

    def _truncate_wal(self, conn: sqlite3.Connection, timeout_s: float = 10.0) -> None:
        """Checkpoint and truncate the write-ahead log, which holds earlier copies of pages.

        Another connection reading at that moment blocks the truncation; it is retried until
        ``timeout_s``, then reported, since the log would still hold the erased text.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            if time.monotonic() > deadline:
                raise RuntimeFailure(
                    f"the memory index {self.db.path} is being read by another process, so its "
                    "write-ahead log could not be cleared; the erased text may remain in "
                    f"{self.db.path}-wal until the next checkpoint. Run the purge again when "
                    "other Holdfast processes are idle.",
                    path=str(self.db.path),
                )
            time.sleep(0.05)
