"""Knowledge memory in PostgreSQL: the database is the truth, not a cache of files.

One row per item holds every field of the Markdown form (its JSON in ``data``, with the columns
recall filters on beside it), so nothing is lost when no file exists. Beside the items: the
trust ledger (every trust class an item was given, appended in the same transaction as the item
it vouches for), entity names, merge and split rules, links between items, and chunk vectors.

Keywords are PostgreSQL full text: a stored ``tsvector`` (English stemming) of the item's text
with its speaker (weight A), its entity names (B) and its neighbouring turns (C), under a GIN
index, ranked in one statement by the sum over the query's terms of the term's inverse document
frequency times ``ts_rank`` (the BM25 idea, in SQL). Vectors are float32 bytes in a ``bytea``
column (pgvector is not available to this installation); :mod:`holdfast.memory.vectors` reads
them into an in-process matrix and, through the per-namespace change counters of
``memory_state``, extends it with only the chunks added since, by this process or any other.
Chunks of one namespace are numbered and committed in order (an advisory transaction lock per
namespace), so a reader that has seen chunk ``n`` has seen every chunk before it.

Every statement goes through :class:`holdfast.store.Backend` (``?`` placeholders).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

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
from holdfast.store.backend import Backend, Row
from holdfast.store.migrations import migrate

COMPONENT = "memory_db"

TEXT_SEARCH_CONFIG = "english"

MIGRATIONS = [
    f"""
    CREATE TABLE memory_items (
        rid BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL,
        namespace TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        norm_hash TEXT NOT NULL,
        loose_hash TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        path TEXT NOT NULL,
        line INTEGER NOT NULL,
        mention_time DOUBLE PRECISION NOT NULL,
        event_start DOUBLE PRECISION,
        event_end DOUBLE PRECISION,
        valid_to DOUBLE PRECISION,
        trust TEXT NOT NULL,
        status TEXT NOT NULL,
        session TEXT,
        turn INTEGER,
        speaker TEXT,
        data JSONB NOT NULL,
        body TEXT NOT NULL,
        context TEXT NOT NULL DEFAULT '',
        entities_text TEXT NOT NULL DEFAULT '',
        keywords tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('{TEXT_SEARCH_CONFIG}', body), 'A')
            || setweight(to_tsvector('{TEXT_SEARCH_CONFIG}', entities_text), 'B')
            || setweight(to_tsvector('{TEXT_SEARCH_CONFIG}', context), 'C')
        ) STORED,
        UNIQUE (namespace, id)
    );
    CREATE INDEX memory_items_keywords ON memory_items USING GIN (keywords);
    CREATE INDEX memory_items_ns ON memory_items (namespace, status);
    CREATE INDEX memory_items_kind ON memory_items (namespace, kind, status);
    CREATE INDEX memory_items_norm ON memory_items (namespace, norm_hash);
    CREATE INDEX memory_items_loose ON memory_items (namespace, loose_hash);
    CREATE INDEX memory_items_session ON memory_items (namespace, session, turn);
    CREATE INDEX memory_items_id ON memory_items (id);
    CREATE INDEX memory_items_path ON memory_items (path);
    CREATE TABLE memory_chunks (
        chunk_id BIGSERIAL PRIMARY KEY,
        rid BIGINT NOT NULL,
        namespace TEXT NOT NULL,
        embedder TEXT NOT NULL,
        seq INTEGER NOT NULL,
        vector BYTEA NOT NULL
    );
    CREATE INDEX memory_chunks_rid ON memory_chunks (rid);
    CREATE INDEX memory_chunks_ns ON memory_chunks (namespace, embedder, chunk_id);
    CREATE TABLE memory_item_entities (
        rid BIGINT NOT NULL,
        namespace TEXT NOT NULL,
        canonical TEXT NOT NULL,
        PRIMARY KEY (rid, canonical)
    );
    CREATE INDEX memory_item_entities_name ON memory_item_entities (namespace, canonical, rid);
    CREATE TABLE memory_links (
        rid BIGINT NOT NULL,
        namespace TEXT NOT NULL,
        ref TEXT NOT NULL,
        relation TEXT NOT NULL,
        PRIMARY KEY (rid, ref, relation)
    );
    CREATE INDEX memory_links_ref ON memory_links (namespace, ref);
    CREATE TABLE memory_trust_ledger (
        seq BIGSERIAL PRIMARY KEY,
        namespace TEXT NOT NULL,
        id TEXT NOT NULL,
        trust TEXT,
        recorded_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX memory_trust_ledger_item ON memory_trust_ledger (namespace, id, seq);
    CREATE TABLE memory_entity_rules (
        namespace TEXT PRIMARY KEY,
        rules JSONB NOT NULL
    );
    CREATE TABLE memory_files (
        path TEXT PRIMARY KEY,
        namespace TEXT NOT NULL,
        size BIGINT NOT NULL,
        mtime_ns BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        lines INTEGER NOT NULL DEFAULT -1
    );
    CREATE TABLE memory_issues (
        path TEXT NOT NULL,
        namespace TEXT NOT NULL,
        line INTEGER NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX memory_issues_path ON memory_issues (path);
    CREATE TABLE memory_state (
        namespace TEXT PRIMARY KEY,
        vec_version BIGINT NOT NULL DEFAULT 0,
        vec_deletes BIGINT NOT NULL DEFAULT 0,
        ent_version BIGINT NOT NULL DEFAULT 0,
        rules_version BIGINT NOT NULL DEFAULT 0
    );
    """,
]

TABLES = (
    "memory_items",
    "memory_chunks",
    "memory_item_entities",
    "memory_links",
    "memory_trust_ledger",
    "memory_entity_rules",
    "memory_files",
    "memory_issues",
    "memory_state",
)

_LOCK_SPACE = b"holdfast-memory:"


def lock_key(namespace: str, what: str) -> int:
    """A signed 64-bit advisory lock key for one namespace and purpose."""
    digest = hashlib.blake2b(_LOCK_SPACE + what.encode() + b":" + namespace.encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _row(r: Row) -> ItemRow:
    data = r["data"]
    return ItemRow(
        rid=int(r["rid"]),
        id=r["id"],
        namespace=r["namespace"],
        path=r["path"],
        line=int(r["line"]),
        content_hash=r["content_hash"],
        data=data if isinstance(data, dict) else json.loads(data),
    )


_ITEM_COLUMNS = "rid, id, namespace, path, line, content_hash, data"


class PostgresMemoryIndex(MemoryIndex):
    """Items, trust ledger, keywords and vectors of knowledge memory in one PostgreSQL database."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        migrate(backend, COMPONENT, MIGRATIONS)

    def transaction(self) -> AbstractContextManager[Tx]:
        return self.backend.transaction()

    def close(self) -> None:
        self.backend.close()

    @property
    def location(self) -> str:
        return self.backend.url

    def size_bytes(self) -> int:
        row = self.backend.query_one(
            "SELECT SUM(pg_total_relation_size(CAST(t AS regclass))) AS n "
            "FROM unnest(CAST(? AS text[])) AS t",
            (list(TABLES),),
        )
        return int(row["n"] or 0) if row else 0

    def citation(self, row: ItemRow) -> str:
        """``<namespace>/<file an export writes it to>#<id>``: the item has no line of its own."""
        return f"{row.path}#{row.id}"

    def _bump(self, tx: Tx, namespace: str, column: str) -> None:
        self.backend.run(
            tx,
            f"INSERT INTO memory_state (namespace, {column}) VALUES (?, 1) "
            f"ON CONFLICT (namespace) DO UPDATE SET {column} = memory_state.{column} + 1",
            (namespace,),
        )

    # ----- the truth beyond the index interface: locks, trust ledger, entity rules
    @contextmanager
    def namespace_lock(self, namespace: str) -> Iterator[None]:
        """Serialise the writers of one namespace across processes and machines: a session
        advisory lock on this thread's connection, which the transactions inside also use."""
        key = lock_key(namespace, "write")
        with self.backend.reader() as h:
            self.backend.execute(h, "SELECT pg_advisory_lock(?)", (key,))
        try:
            yield
        finally:
            with self.backend.reader() as h:
                self.backend.execute(h, "SELECT pg_advisory_unlock(?)", (key,))

    def record_trust(
        self, tx: Tx, namespace: str, entries: Sequence[tuple[str, str | None]]
    ) -> None:
        """Append trust records (``None`` withdraws an item's record)."""
        now = self.backend.local_now()
        self.backend.executemany(
            tx,
            "INSERT INTO memory_trust_ledger (namespace, id, trust, recorded_at) VALUES (?,?,?,?)",
            [(namespace, item_id, trust, now) for item_id, trust in entries],
        )

    def trust_ledger(self, namespace: str) -> dict[str, str]:
        """item id -> its latest trust class."""
        rows = self.backend.query(
            "SELECT DISTINCT ON (id) id, trust FROM memory_trust_ledger WHERE namespace = ? "
            "ORDER BY id, seq DESC",
            (namespace,),
        )
        return {r["id"]: r["trust"] for r in rows if r["trust"] is not None}

    def purge_trust(self, tx: Tx, namespace: str, item_id: str) -> None:
        self.backend.run(
            tx,
            "DELETE FROM memory_trust_ledger WHERE namespace = ? AND id = ?",
            (namespace, item_id),
        )

    def entity_rules(self, namespace: str) -> dict[str, list[list[str]]]:
        row = self.backend.query_one(
            "SELECT rules FROM memory_entity_rules WHERE namespace = ?", (namespace,)
        )
        data = row["rules"] if row else {}
        return {"merges": list(data.get("merges", [])), "splits": list(data.get("splits", []))}

    def save_entity_rules(self, namespace: str, rules: dict[str, list[list[str]]]) -> None:
        with self.transaction() as tx:
            self.backend.run(
                tx,
                "INSERT INTO memory_entity_rules (namespace, rules) VALUES (?, CAST(? AS jsonb)) "
                "ON CONFLICT (namespace) DO UPDATE SET rules = excluded.rules",
                (namespace, json.dumps(rules, ensure_ascii=False)),
            )
            self._bump(tx, namespace, "rules_version")

    def rules_version(self, namespace: str) -> int:
        row = self.backend.query_one(
            "SELECT rules_version FROM memory_state WHERE namespace = ?", (namespace,)
        )
        return int(row["rules_version"]) if row else 0

    def namespaces(self) -> list[str]:
        rows = self.backend.query("SELECT DISTINCT namespace FROM memory_items ORDER BY namespace")
        return [r["namespace"] for r in rows]

    def drop_vectors(self, tx: Tx, namespace: str) -> None:
        """Forget every chunk vector of the namespace (before re-embedding it)."""
        if self.backend.run(tx, "DELETE FROM memory_chunks WHERE namespace = ?", (namespace,)):
            self._bump(tx, namespace, "vec_deletes")

    def sessions(self, namespace: str) -> list[tuple[str, int]]:
        """(session, turn) of every episode with a turn, for re-deriving context."""
        rows = self.backend.query(
            "SELECT session, turn FROM memory_items WHERE namespace = ? AND session IS NOT NULL "
            "AND turn IS NOT NULL ORDER BY session, turn",
            (namespace,),
        )
        return [(r["session"], int(r["turn"])) for r in rows]

    def compact(self) -> None:
        """Rewrite the memory tables so deleted rows leave no copy in their data files."""
        with self.backend.reader() as h:
            for table in ("memory_items", "memory_chunks", "memory_trust_ledger", "memory_links"):
                self.backend.execute(h, f"VACUUM FULL {table}")

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
        b = self.backend
        namespace = data["namespace"]
        old = b.one(
            tx,
            "SELECT rid, text FROM memory_items WHERE namespace = ? AND id = ?"
            + b.dialect.for_update,
            (namespace, data["id"]),
        )
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
            src.get("speaker"),
            json.dumps(data, ensure_ascii=False),
            body,
            entities_text,
        )
        columns = (
            "kind, text, norm_hash, loose_hash, content_hash, path, line, mention_time, "
            "event_start, event_end, valid_to, trust, status, session, turn, speaker, data, body, "
            "entities_text"
        )
        needs_vectors = True
        if old is None:
            marks = ", ".join(["?"] * 16 + ["CAST(? AS jsonb)", "?", "?"])
            row = b.one(
                tx,
                f"INSERT INTO memory_items ({columns}, namespace, id) VALUES ({marks}, ?, ?) "
                "RETURNING rid",
                (*values, namespace, data["id"]),
            )
            assert row is not None
            rid = int(row["rid"])
        else:
            rid = int(old["rid"])
            sets = ", ".join(
                f"{c.strip()} = CAST(? AS jsonb)" if c.strip() == "data" else f"{c.strip()} = ?"
                for c in columns.split(",")
            )
            b.run(tx, f"UPDATE memory_items SET {sets} WHERE rid = ?", (*values, rid))
            b.run(tx, "DELETE FROM memory_item_entities WHERE rid = ?", (rid,))
            b.run(tx, "DELETE FROM memory_links WHERE rid = ?", (rid,))
            if old["text"] != data["text"]:
                self._drop_chunks(tx, namespace, [rid])
            else:
                needs_vectors = False
        if links:
            b.executemany(
                tx,
                "INSERT INTO memory_links (rid, namespace, ref, relation) VALUES (?,?,?,?) "
                "ON CONFLICT DO NOTHING",
                [(rid, namespace, link.ref, link.relation) for link in links],
            )
        return rid, needs_vectors

    def set_location(self, tx: Tx, namespace: str, item_id: str, path: str, line: int) -> None:
        self.backend.run(
            tx,
            "UPDATE memory_items SET path = ?, line = ? WHERE namespace = ? AND id = ?",
            (path, line, namespace, item_id),
        )

    def set_context(self, tx: Tx, rid: int, context: str) -> None:
        self.backend.run(tx, "UPDATE memory_items SET context = ? WHERE rid = ?", (context, rid))

    def delete_items(self, tx: Tx, namespace: str, rids: Sequence[int]) -> None:
        if not rids:
            return
        ids = list(rids)
        self._drop_chunks(tx, namespace, ids)
        for table in ("memory_item_entities", "memory_links", "memory_items"):
            self.backend.run(tx, f"DELETE FROM {table} WHERE rid = ANY(?)", (ids,))

    def _drop_chunks(self, tx: Tx, namespace: str, rids: Sequence[int]) -> None:
        if self.backend.run(tx, "DELETE FROM memory_chunks WHERE rid = ANY(?)", (list(rids),)):
            self._bump(tx, namespace, "vec_deletes")

    def add_chunks(
        self, tx: Tx, namespace: str, embedder: str, rows: Iterable[tuple[int, int, bytes]]
    ) -> None:
        batch = [(rid, namespace, embedder, seq, vec) for rid, seq, vec in rows]
        if not batch:
            return
        # chunk ids of a namespace are drawn and committed in order, so a reader that saw chunk
        # n saw every earlier one (the vector cache reads only the chunks after the last it has)
        self.backend.advisory_lock(tx, lock_key(namespace, "chunks"))
        self.backend.executemany(
            tx,
            "INSERT INTO memory_chunks (rid, namespace, embedder, seq, vector) VALUES (?,?,?,?,?)",
            batch,
        )
        self._bump(tx, namespace, "vec_version")

    def set_entities(self, tx: Tx, rid: int, namespace: str, names: Iterable[str]) -> None:
        names = list(names)
        if not names:
            return
        b = self.backend
        known = b.rows(
            tx,
            "SELECT DISTINCT canonical FROM memory_item_entities WHERE namespace = ? "
            "AND canonical = ANY(?)",
            (namespace, names),
        )
        b.executemany(
            tx,
            "INSERT INTO memory_item_entities (rid, namespace, canonical) VALUES (?,?,?) "
            "ON CONFLICT DO NOTHING",
            [(rid, namespace, n) for n in names],
        )
        if len(known) < len(set(names)):
            self._bump(tx, namespace, "ent_version")

    def entity_state(self, namespace: str) -> int:
        row = self.backend.query_one(
            "SELECT ent_version FROM memory_state WHERE namespace = ?", (namespace,)
        )
        return int(row["ent_version"]) if row else 0

    def entity_names(self, namespace: str) -> list[str]:
        rows = self.backend.query(
            "SELECT DISTINCT canonical FROM memory_item_entities WHERE namespace = ?", (namespace,)
        )
        return [r["canonical"] for r in rows]

    # ----- reads
    def get(self, namespace: str, item_id: str) -> ItemRow | None:
        r = self.backend.query_one(
            f"SELECT {_ITEM_COLUMNS} FROM memory_items WHERE namespace = ? AND id = ?",
            (namespace, item_id),
        )
        return _row(r) if r else None

    def find(self, item_id: str) -> list[ItemRow]:
        rows = self.backend.query(
            f"SELECT {_ITEM_COLUMNS} FROM memory_items WHERE id = ? ORDER BY namespace", (item_id,)
        )
        return [_row(r) for r in rows]

    def get_many(self, rids: Sequence[int]) -> dict[int, ItemRow]:
        if not rids:
            return {}
        rows = self.backend.query(
            f"SELECT {_ITEM_COLUMNS} FROM memory_items WHERE rid = ANY(?)", (list(rids),)
        )
        return {int(r["rid"]): _row(r) for r in rows}

    def by_hash(
        self, namespace: str, *, norm: str | None = None, loose: str | None = None
    ) -> list[ItemRow]:
        column, value = ("norm_hash", norm) if norm is not None else ("loose_hash", loose)
        if not value:
            return []
        rows = self.backend.query(
            f"SELECT {_ITEM_COLUMNS} FROM memory_items WHERE namespace = ? AND {column} = ? "
            "AND status = 'active' ORDER BY rid",
            (namespace, value),
        )
        return [_row(r) for r in rows]

    def items_in_path(self, path: str) -> dict[str, tuple[int, str]]:
        rows = self.backend.query(
            "SELECT id, rid, content_hash FROM memory_items WHERE path = ?", (path,)
        )
        return {r["id"]: (int(r["rid"]), r["content_hash"]) for r in rows}

    def rids(self, namespace: str, kinds: Sequence[str] | None = None) -> list[int]:
        if kinds:
            rows = self.backend.query(
                "SELECT rid FROM memory_items WHERE namespace = ? AND kind = ANY(?) ORDER BY rid",
                (namespace, list(kinds)),
            )
        else:
            rows = self.backend.query(
                "SELECT rid FROM memory_items WHERE namespace = ? ORDER BY rid", (namespace,)
            )
        return [int(r["rid"]) for r in rows]

    def linking(self, namespace: str, refs: Sequence[str]) -> list[int]:
        if not refs:
            return []
        rows = self.backend.query(
            "SELECT DISTINCT rid FROM memory_links WHERE namespace = ? AND ref = ANY(?) "
            "ORDER BY rid",
            (namespace, list(refs)),
        )
        return [int(r["rid"]) for r in rows]

    def session_neighbours(
        self, namespace: str, session: str, turn: int, width: int
    ) -> list[tuple[int, int, str]]:
        rows = self.backend.query(
            "SELECT rid, turn, body FROM memory_items WHERE namespace = ? AND session = ? "
            "AND turn BETWEEN ? AND ? AND status = 'active' ORDER BY turn",
            (namespace, session, turn - width, turn + width),
        )
        return [(int(r["rid"]), int(r["turn"]), r["body"]) for r in rows]

    def keyword(
        self, namespace: str, terms: Sequence[str], limit: int, weights: tuple[float, float, float]
    ) -> list[tuple[int, float]]:
        if not terms:
            return []
        body, context, entities = weights
        # ts_rank's weights are for the labels D, C, B, A: nothing, context, entities, text
        # Each CTE is computed once (MATERIALIZED): the term queries, the namespace's size, each
        # term's document frequency; the candidates are found through the GIN index with the
        # terms ORed into one query, and only those are ranked.
        rows = self.backend.query(
            f"""
            WITH terms AS MATERIALIZED (
                SELECT plainto_tsquery('{TEXT_SEARCH_CONFIG}', t) AS q
                FROM unnest(CAST(? AS text[])) AS t
            ), total AS MATERIALIZED (
                SELECT COUNT(*) AS n FROM memory_items WHERE namespace = ?
            ), weighted AS MATERIALIZED (
                SELECT terms.q, LN(1 + (total.n - df.n + 0.5) / (df.n + 0.5)) AS idf
                FROM terms CROSS JOIN total CROSS JOIN LATERAL (
                    SELECT COUNT(*) AS n FROM memory_items
                    WHERE namespace = ? AND keywords @@ terms.q
                ) AS df
                WHERE numnode(terms.q) > 0
            )
            SELECT i.rid, (
                SELECT SUM(w.idf * ts_rank(CAST(? AS float4[]), i.keywords, w.q, 1))
                FROM weighted AS w WHERE i.keywords @@ w.q
            ) AS score
            FROM memory_items AS i
            WHERE i.namespace = ? AND i.keywords @@ (
                SELECT CAST(string_agg('(' || CAST(q AS text) || ')', ' | ') AS tsquery)
                FROM weighted
            )
            ORDER BY score DESC, i.rid LIMIT ?
            """,
            (list(terms), namespace, namespace, [0.0, context, entities, body], namespace, limit),
        )
        return [(int(r["rid"]), float(r["score"])) for r in rows]

    def doc_freqs(self, namespace: str, terms: Sequence[str]) -> tuple[int, dict[str, int]]:
        total = self.backend.query_one(
            "SELECT COUNT(*) AS n FROM memory_items WHERE namespace = ?", (namespace,)
        )
        out: dict[str, int] = {}
        for t in terms:
            row = self.backend.query_one(
                "SELECT COUNT(*) AS n FROM memory_items WHERE namespace = ? AND keywords @@ "
                f"plainto_tsquery('{TEXT_SEARCH_CONFIG}', ?)",
                (namespace, t),
            )
            out[t] = int(row["n"]) if row else 0
        return int(total["n"]) if total else 0, out

    def entity_items(self, namespace: str, names: Sequence[str], limit: int) -> list[int]:
        if not names:
            return []
        rows = self.backend.query(
            "SELECT rid, COUNT(*) AS n FROM memory_item_entities WHERE namespace = ? "
            "AND canonical = ANY(?) GROUP BY rid ORDER BY n DESC, rid DESC LIMIT ?",
            (namespace, list(names), limit),
        )
        return [int(r["rid"]) for r in rows]

    def candidate_info(self, rids: Sequence[int]) -> dict[int, CandidateInfo]:
        if not rids:
            return {}
        rows = self.backend.query(
            "SELECT rid, text, speaker, session, event_start FROM memory_items WHERE rid = ANY(?)",
            (list(rids),),
        )
        return {
            int(r["rid"]): CandidateInfo(
                r["text"], r["speaker"], r["session"], r["event_start"] is not None
            )
            for r in rows
        }

    def has_kind(self, namespace: str, kind: str) -> bool:
        row = self.backend.query_one(
            "SELECT 1 AS found FROM memory_items WHERE namespace = ? AND kind = ? "
            "AND status = 'active' LIMIT 1",
            (namespace, kind),
        )
        return row is not None

    def active_meta(self, namespace: str, rids: Sequence[int]) -> dict[int, Meta]:
        if not rids:
            return {}
        rows = self.backend.query(
            "SELECT rid, mention_time, event_start, event_end, valid_to, trust FROM memory_items "
            "WHERE namespace = ? AND status = 'active' AND rid = ANY(?)",
            (namespace, list(rids)),
        )
        return {
            int(r["rid"]): (
                float(r["mention_time"]),
                r["event_start"],
                r["event_end"],
                r["valid_to"],
                str(r["trust"]),
            )
            for r in rows
        }

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
        rows = self.backend.query(IN_TIME_RANGE_SQL, params)
        return [int(r["rid"]) for r in rows]

    # ----- vectors
    def vec_state(self, namespace: str) -> tuple[int, int]:
        row = self.backend.query_one(
            "SELECT vec_version, vec_deletes FROM memory_state WHERE namespace = ?", (namespace,)
        )
        return (int(row["vec_version"]), int(row["vec_deletes"])) if row else (0, 0)

    def chunks_after(
        self, namespace: str, embedder: str, after: int
    ) -> list[tuple[int, int, bytes]]:
        rows = self.backend.query(
            "SELECT chunk_id, rid, vector FROM memory_chunks WHERE namespace = ? "
            "AND embedder = ? AND chunk_id > ? ORDER BY chunk_id",
            (namespace, embedder, after),
        )
        return [(int(r["chunk_id"]), int(r["rid"]), bytes(r["vector"])) for r in rows]

    def vectors_by_text(self, namespace: str, embedder: str) -> dict[tuple[str, str], list[bytes]]:
        out: dict[tuple[str, str], list[bytes]] = {}
        rows = self.backend.query(
            "SELECT i.id, i.text, c.vector FROM memory_chunks AS c "
            "JOIN memory_items AS i ON i.rid = c.rid "
            "WHERE c.namespace = ? AND c.embedder = ? ORDER BY c.rid, c.seq",
            (namespace, embedder),
        )
        for r in rows:
            out.setdefault((r["id"], r["text"]), []).append(bytes(r["vector"]))
        return out

    def restore_vectors(
        self, tx: Tx, namespace: str, embedder: str, kept: dict[tuple[str, str], list[bytes]]
    ) -> int:
        rows = self.backend.rows(
            tx, "SELECT rid, id, text FROM memory_items WHERE namespace = ?", (namespace,)
        )
        batch: list[tuple[int, int, bytes]] = []
        for r in rows:
            vecs = kept.get((r["id"], r["text"]))
            if vecs:
                batch.extend((int(r["rid"]), seq, v) for seq, v in enumerate(vecs))
        self.add_chunks(tx, namespace, embedder, batch)
        return len(batch)

    def rids_missing_vectors(self, namespace: str, embedder: str) -> list[int]:
        rows = self.backend.query(
            "SELECT rid FROM memory_items AS i WHERE namespace = ? AND NOT EXISTS ("
            "SELECT 1 FROM memory_chunks AS c WHERE c.rid = i.rid AND c.embedder = ?) ORDER BY rid",
            (namespace, embedder),
        )
        return [int(r["rid"]) for r in rows]

    # ----- files and issues (a database-backed store has no files; kept for the interface)
    def file_state(self, namespace: str) -> dict[str, tuple[int, int, str]]:
        rows = self.backend.query(
            "SELECT path, size, mtime_ns, sha256 FROM memory_files WHERE namespace = ?",
            (namespace,),
        )
        return {r["path"]: (int(r["size"]), int(r["mtime_ns"]), r["sha256"]) for r in rows}

    def file_stat(self, path: str) -> tuple[int, int, int] | None:
        r = self.backend.query_one(
            "SELECT size, mtime_ns, lines FROM memory_files WHERE path = ?", (path,)
        )
        return (int(r["size"]), int(r["mtime_ns"]), int(r["lines"])) if r else None

    def set_file_state(
        self, tx: Tx, namespace: str, path: str, size: int, mtime_ns: int, sha: str, lines: int = -1
    ) -> None:
        self.backend.run(
            tx,
            "INSERT INTO memory_files (path, namespace, size, mtime_ns, sha256, lines) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (path) DO UPDATE SET size = excluded.size, "
            "mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, lines = excluded.lines",
            (path, namespace, size, mtime_ns, sha, lines),
        )

    def forget_file(self, tx: Tx, path: str) -> None:
        self.backend.run(tx, "DELETE FROM memory_files WHERE path = ?", (path,))
        self.backend.run(tx, "DELETE FROM memory_issues WHERE path = ?", (path,))

    def set_issues(
        self, tx: Tx, namespace: str, path: str, issues: Iterable[tuple[int, str]]
    ) -> None:
        self.backend.run(tx, "DELETE FROM memory_issues WHERE path = ?", (path,))
        self.backend.executemany(
            tx,
            "INSERT INTO memory_issues (path, namespace, line, message) VALUES (?,?,?,?)",
            [(path, namespace, line, msg) for line, msg in issues],
        )

    def issues(self, namespace: str) -> list[tuple[str, int, str]]:
        rows = self.backend.query(
            "SELECT path, line, message FROM memory_issues WHERE namespace = ? ORDER BY path, line",
            (namespace,),
        )
        return [(r["path"], int(r["line"]), r["message"]) for r in rows]

    def shared_ids(self, namespace: str) -> list[SharedId]:
        rows = self.backend.query(
            "SELECT a.id, a.path, a.line, b.namespace AS other_ns, b.path AS other_path, "
            "b.line AS other_line FROM memory_items AS a "
            "JOIN memory_items AS b ON b.id = a.id AND b.namespace <> a.namespace "
            "WHERE a.namespace = ? ORDER BY a.path, a.line, b.namespace",
            (namespace,),
        )
        return [
            SharedId(
                r["id"],
                r["path"],
                int(r["line"]),
                r["other_ns"],
                r["other_path"],
                int(r["other_line"]),
            )
            for r in rows
        ]

    def clear_namespace(self, tx: Tx, namespace: str) -> None:
        for table in (
            "memory_chunks",
            "memory_item_entities",
            "memory_links",
            "memory_items",
            "memory_files",
            "memory_issues",
        ):
            self.backend.run(tx, f"DELETE FROM {table} WHERE namespace = ?", (namespace,))
        self._bump(tx, namespace, "vec_deletes")

    def stats(self, namespace: str) -> dict[str, Any]:
        b = self.backend
        by_kind = {
            r["kind"]: int(r["n"])
            for r in b.query(
                "SELECT kind, COUNT(*) AS n FROM memory_items WHERE namespace = ? "
                "AND status = 'active' GROUP BY kind",
                (namespace,),
            )
        }
        by_trust = {
            r["trust"]: int(r["n"])
            for r in b.query(
                "SELECT trust, COUNT(*) AS n FROM memory_items WHERE namespace = ? "
                "AND status = 'active' GROUP BY trust",
                (namespace,),
            )
        }
        one = b.query_one(
            "SELECT COUNT(*) AS n, SUM(CASE WHEN status <> 'active' THEN 1 ELSE 0 END) AS deleted, "
            "SUM(CASE WHEN valid_to IS NOT NULL THEN 1 ELSE 0 END) AS superseded "
            "FROM memory_items WHERE namespace = ?",
            (namespace,),
        )
        chunks = b.query_one(
            "SELECT COUNT(*) AS n FROM memory_chunks WHERE namespace = ?", (namespace,)
        )
        return {
            "items": int(one["n"] or 0) if one else 0,
            "deleted": int(one["deleted"] or 0) if one else 0,
            "superseded": int(one["superseded"] or 0) if one else 0,
            "by_kind": by_kind,
            "by_trust": by_trust,
            "vectors": int(chunks["n"]) if chunks else 0,
            "files": 0,
        }

    # ----- erasure
    @contextmanager
    def _erasing(self) -> Iterator[None]:
        yield
        self.compact()

    def erase(self) -> AbstractContextManager[None]:
        """Deletions inside run as usual; on exit the memory tables are rewritten (``VACUUM
        FULL``), so the deleted rows' text is in no table or index file any more. The server's
        write-ahead log and any backup keep what they held until they are recycled."""
        return self._erasing()
