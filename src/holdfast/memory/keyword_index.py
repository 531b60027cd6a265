"""An in-process mirror of the FTS5 keyword index, ranked with FTS5's own BM25 in NumPy.

FTS5 evaluates ``bm25()`` row by row, through its auxiliary-function interface, for every row
that matches any query term, then sorts them all; at 100,000 items a query whose terms each
match 8 to 25 % of the rows scores about 25,000 rows per term that way. The mirror holds, per
token, the rows it occurs in with its count in each column, and each row's length, as NumPy
arrays: a query reads only its terms' postings, scores them in a few vectorised passes, and
takes the top ``limit`` with a partial sort.

The scores are FTS5's: the same formula (k1 = 1.2, b = 0.75, IDF floored at 1e-6, column
weights, the row length over all columns), over the same statistics (rows, tokens and document
frequencies of the whole table, as ``bm25()`` sees them), with FTS5's own tokens (the index's
instance vocabulary, and for changed rows and query words a private in-memory FTS5 table with
the same tokenizer), so stemming and folding never drift apart. A query word that FTS5 would
read as a phrase of several tokens, or as none, falls back to the SQL path.

The mirror is kept in step through the ``memory_kw_log`` table: every write that changes a row
of the keyword index appends its row id in the same transaction. A search first reads the
entries logged since it last looked (one range read on the primary key, usually empty), and
re-reads and overlays only those rows: deleted or changed rows are masked out of the base
arrays, their new text is held beside them. When the overlay grows past a fraction of the base,
or entries it had not read were pruned from the log, the mirror is rebuilt from the index.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COLUMNS = ("body", "context", "entities", "ns")
_COL = {c: i for i, c in enumerate(COLUMNS)}
K1 = 1.2
B = 0.75
REBUILD_FRACTION = 0.1
REBUILD_MIN = 2_000
_TOKEN_CACHE = 50_000


def fts_weights(weights: tuple[float, float, float]) -> tuple[float, float, float, float]:
    """The column weights as the SQL path passes them to ``bm25()`` (four decimals; the
    namespace column never counts)."""
    b, c, e = (float(f"{x:.4f}") for x in weights)
    return (b, c, e, 0.0)


class Tokenizer:
    """FTS5's ``porter unicode61`` tokenizer, reached through a private in-memory FTS5 table.

    The table's connection is opened on first use and again after :meth:`close`, so a closed
    tokenizer is only idle, never broken: the store it serves reopens its own database
    connections on demand the same way, and may be searched after it was closed.
    """

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._words: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        """The scratch connection (call with the lock held)."""
        if self._conn is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            conn.execute(
                "CREATE VIRTUAL TABLE scratch USING fts5(body, context, entities, ns, "
                "tokenize = 'porter unicode61')"
            )
            conn.execute("CREATE VIRTUAL TABLE scratch_inst USING fts5vocab(scratch, instance)")
            self._conn = conn
        return self._conn

    def word(self, word: str) -> tuple[str, ...]:
        """The tokens FTS5 reads ``word`` as (usually one)."""
        cached = self._words.get(word)
        if cached is not None:
            return cached
        with self._lock:
            conn = self._connection()
            conn.execute("INSERT INTO scratch (rowid, body) VALUES (1, ?)", (word,))
            rows = conn.execute("SELECT term FROM scratch_inst ORDER BY offset").fetchall()
            conn.execute("DELETE FROM scratch")
        out = tuple(r[0] for r in rows)
        if len(self._words) >= _TOKEN_CACHE:
            self._words.clear()
        self._words[word] = out
        return out

    def rows(self, rows: Sequence[tuple[int, str, str, str, str]]) -> dict[int, _Doc]:
        """Tokenize whole rows (rowid, body, context, entities, ns): counts per column."""
        out: dict[int, _Doc] = {rid: _Doc() for rid, *_ in rows}
        if not rows:
            return out
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                conn.executemany(
                    "INSERT INTO scratch (rowid, body, context, entities, ns) VALUES (?,?,?,?,?)",
                    rows,
                )
                for term, doc, col in conn.execute("SELECT term, doc, col FROM scratch_inst"):
                    out[int(doc)].add(term, _COL[col])
                conn.execute("DELETE FROM scratch")
            finally:
                conn.execute("COMMIT")
        return out

    def close(self) -> None:
        """Close the scratch connection; the next use opens a fresh one."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


@dataclass
class _Doc:
    """One overlaid row: its length (tokens over all columns) and counts per column."""

    length: int = 0
    counts: dict[str, list[int]] = field(default_factory=dict)

    def add(self, term: str, col: int) -> None:
        self.length += 1
        self.counts.setdefault(term, [0, 0, 0, 0])[col] += 1


@dataclass
class _Base:
    """The rows as read at the last rebuild."""

    rids: Any  # slot -> rowid, ascending
    lengths: Any  # slot -> tokens over all columns (float64)
    alive: Any  # slot -> still as read (not changed or deleted since)
    terms: dict[str, int]  # token -> term number
    bounds: Any  # term number -> first posting; postings of t are bounds[t]:bounds[t+1]
    slots: Any  # posting -> slot
    counts: Any  # posting -> count per column (float32, shape (n, 4))
    seq: int  # the last log entry the base reflects

    def postings(self, term: str) -> tuple[Any, Any]:
        t = self.terms.get(term)
        if t is None:
            return self.slots[:0], self.counts[:0]
        a, b = int(self.bounds[t]), int(self.bounds[t + 1])
        return self.slots[a:b], self.counts[a:b]


def _empty_base(seq: int) -> _Base:
    return _Base(
        rids=np.zeros(0, dtype=np.int64),
        lengths=np.zeros(0, dtype=np.float64),
        alive=np.zeros(0, dtype=bool),
        terms={},
        bounds=np.zeros(1, dtype=np.int64),
        slots=np.zeros(0, dtype=np.int32),
        counts=np.zeros((0, 4), dtype=np.float32),
        seq=seq,
    )


class KeywordMirror:
    """The whole keyword table mirrored in process; :meth:`search` answers like the SQL path."""

    def __init__(self) -> None:
        self.tokenizer = Tokenizer()
        self._base: _Base | None = None
        self._overlay: dict[int, _Doc | None] = {}
        self._overlay_terms: dict[str, set[int]] = {}
        self._rows = 0
        self._tokens = 0.0
        self._lock = threading.Lock()
        self.rebuilds = 0

    # ----- keeping in step
    def _rebuild(self, conn: sqlite3.Connection) -> None:
        seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM memory_kw_log").fetchone()[0])
        conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.memory_fts_instance "
            "USING fts5vocab(main, memory_fts, instance)"
        )
        terms: dict[str, int] = {}
        tids, docs, cols = array("q"), array("q"), array("q")
        get = terms.get
        for term, doc, col in conn.execute("SELECT term, doc, col FROM temp.memory_fts_instance"):
            t = get(term)
            if t is None:
                t = terms[term] = len(terms)
            tids.append(t)
            docs.append(doc)
            cols.append(_COL[col])
        if not docs:
            base = _empty_base(seq)
        else:
            tid = np.frombuffer(tids, dtype=np.int64)
            doc = np.frombuffer(docs, dtype=np.int64)
            col = np.frombuffer(cols, dtype=np.int64)
            del tids, docs, cols
            rids, slot = np.unique(doc, return_inverse=True)
            lengths = np.bincount(slot, minlength=len(rids)).astype(np.float64)
            key = tid * len(rids) + slot
            if len(key) > 1 and bool(np.any(key[1:] < key[:-1])):
                order = np.argsort(key, kind="stable")
                key, tid, slot, col = key[order], tid[order], slot[order], col[order]
            first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            group = np.cumsum(np.r_[False, key[1:] != key[:-1]])
            # float32 holds every count exactly (up to 2**24); the product with the weights
            # is taken in float64, as FTS5 does
            counts = np.bincount(group * 4 + col, minlength=len(first) * 4).astype(np.float32)
            bounds = np.searchsorted(tid[first], np.arange(len(terms) + 1))
            base = _Base(
                rids=rids,
                lengths=lengths,
                alive=np.ones(len(rids), dtype=bool),
                terms=terms,
                bounds=bounds,
                slots=slot[first].astype(np.int32),
                counts=counts.reshape(len(first), 4),
                seq=seq,
            )
        self._base = base
        self._overlay = {}
        self._overlay_terms = {}
        self._rows = len(base.rids)
        self._tokens = float(base.lengths.sum())
        self.rebuilds += 1

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        base = self._base
        if base is None:
            self._rebuild(conn)
            return
        log = conn.execute(
            "SELECT seq, rid FROM memory_kw_log WHERE seq > ? ORDER BY seq", (base.seq,)
        ).fetchall()
        if not log:
            return
        changed = {int(r[1]) for r in log}
        limit = max(REBUILD_MIN, int(REBUILD_FRACTION * len(base.rids)))
        if int(log[0][0]) != base.seq + 1 or len(self._overlay) + len(changed) > limit:
            self._rebuild(conn)  # entries were pruned before this process read them, or many
            return
        ids = sorted(changed)
        rows: list[tuple[int, str, str, str, str]] = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows.extend(
                (int(r[0]), r[1] or "", r[2] or "", r[3] or "", r[4] or "")
                for r in conn.execute(
                    "SELECT rowid, body, context, entities, ns FROM memory_fts "
                    f"WHERE rowid IN ({marks})",
                    part,
                )
            )
        docs = self.tokenizer.rows(rows)
        slot_of = np.searchsorted(base.rids, np.asarray(ids, dtype=np.int64))
        for rid, slot in zip(ids, slot_of.tolist(), strict=True):
            if slot < len(base.rids) and int(base.rids[slot]) == rid and base.alive[slot]:
                base.alive[slot] = False
                self._rows -= 1
                self._tokens -= float(base.lengths[slot])
            old = self._overlay.pop(rid, None)
            if old is not None:
                self._rows -= 1
                self._tokens -= old.length
                for term in old.counts:
                    self._overlay_terms[term].discard(rid)
            new = docs.get(rid)
            if new is not None and new.length:
                self._overlay[rid] = new
                self._rows += 1
                self._tokens += new.length
                for term in new.counts:
                    self._overlay_terms.setdefault(term, set()).add(rid)
            else:
                self._overlay[rid] = None
        base.seq = int(log[-1][0])

    def invalidate(self) -> None:
        with self._lock:
            self._base = None

    # ----- reading
    def tokens(self, words: Sequence[str]) -> list[str] | None:
        """One FTS5 token per word, or None when any word would be a phrase (or nothing)."""
        out = []
        for w in words:
            toks = self.tokenizer.word(w)
            if len(toks) != 1:
                return None
            out.append(toks[0])
        return out

    def search(
        self,
        conn: sqlite3.Connection,
        ns_token: str,
        terms: Sequence[str],
        limit: int,
        weights: tuple[float, float, float],
    ) -> list[tuple[int, float]] | None:
        """(rowid, BM25) best first, ties by rowid, for rows of the namespace whose token is
        ``ns_token`` matching any of ``terms``; None when the SQL path must answer."""
        phrases = self.tokens(terms)
        ns = self.tokens([ns_token])
        if phrases is None or ns is None or limit < 1:
            return None
        w = np.asarray(fts_weights(weights), dtype=np.float64)
        with self._lock:
            self._catch_up(conn)
            base = self._base
            assert base is not None
            return self._score(base, ns[0], phrases, limit, w)

    def _score(
        self, base: _Base, ns: str, phrases: list[str], limit: int, w: Any
    ) -> list[tuple[int, float]]:
        n_rows = self._rows
        if n_rows <= 0:
            return []
        avgdl = self._tokens / n_rows
        ns_slots, ns_counts = base.postings(ns)
        in_ns = np.zeros(len(base.rids), dtype=bool)
        in_ns[ns_slots[ns_counts[:, 3] > 0]] = True
        in_ns &= base.alive
        over_ns = set()
        for rid in self._overlay_terms.get(ns, ()):
            doc = self._overlay[rid]
            if doc is not None and doc.counts[ns][3] > 0:
                over_ns.add(rid)
        total = np.zeros(len(base.rids), dtype=np.float64)
        matched = np.zeros(len(base.rids), dtype=bool)
        over_scores: dict[int, float] = {}
        for term in phrases:
            slots, counts = base.postings(term)
            live = base.alive[slots]
            over = self._overlay_terms.get(term, set())
            hits = int(np.count_nonzero(live)) + len(over)
            idf = math.log((n_rows - hits + 0.5) / (hits + 0.5))
            if idf <= 0.0:
                idf = 1e-6
            keep = in_ns[slots]
            s, f = slots[keep], counts[keep] @ w
            d = base.lengths[s]
            part = idf * ((f * (K1 + 1.0)) / (f + K1 * (1 - B + B * d / avgdl)))
            total += np.bincount(s, weights=part, minlength=len(total))
            matched[s] = True
            for rid in over & over_ns:
                doc = self._overlay[rid]
                assert doc is not None
                c = doc.counts[term]
                fo = c[0] * w[0] + c[1] * w[1] + c[2] * w[2]
                val = idf * ((fo * (K1 + 1.0)) / (fo + K1 * (1 - B + B * doc.length / avgdl)))
                over_scores[rid] = over_scores.get(rid, 0.0) + float(val)
        cand = np.flatnonzero(matched)
        if len(cand) > limit:
            top = np.argpartition(-total[cand], limit - 1)[:limit]
            kth = total[cand[top]].min()
            cand = cand[total[cand] >= kth]  # every tie at the boundary, ordered by rowid below
        scored = [(int(r), float(v)) for r, v in zip(base.rids[cand], total[cand], strict=True)]
        scored.extend(over_scores.items())
        scored.sort(key=lambda x: (-x[1], x[0]))
        return scored[:limit]

    def close(self) -> None:
        """Release the scratch connection and the mirrored arrays; a later search rebuilds."""
        self.tokenizer.close()
        self.invalidate()
