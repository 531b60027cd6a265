"""Text helpers shared by writes and recall: normalisation for de-duplication, keyword queries for
FTS5, and chunking for embedders with a short input limit.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)

# Query-side stop words: function words that match nearly every turn and only dilute BM25.
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "doing",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "by",
        "from",
        "and",
        "or",
        "but",
        "if",
        "then",
        "so",
        "as",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "it's",
        "i",
        "i'm",
        "you",
        "you're",
        "he",
        "he's",
        "she",
        "she's",
        "they",
        "they're",
        "we",
        "we're",
        "me",
        "him",
        "her",
        "them",
        "us",
        "my",
        "your",
        "his",
        "their",
        "our",
        "what",
        "when",
        "where",
        "who",
        "whom",
        "which",
        "why",
        "how",
        "would",
        "could",
        "should",
        "will",
        "can",
        "may",
        "might",
        "must",
        "shall",
        "has",
        "have",
        "had",
        "having",
        "not",
        "no",
        "about",
        "into",
        "over",
        "after",
        "before",
        "than",
        "too",
        "very",
        "just",
        "also",
        "there",
        "here",
        "any",
        "some",
        "such",
        "own",
        "same",
        "other",
        "all",
        "each",
        "both",
        "few",
        "more",
        "most",
        "only",
        "s",
        "t",
        "don't",
        "didn't",
        "doesn't",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "won't",
        "can't",
        "couldn't",
        "shouldn't",
        "wouldn't",
        "ever",
        "kind",
        "sort",
        "type",
        "thing",
        "things",
    ]
)


def normalize(text: str) -> str:
    """Case-folded, accent-stable, punctuation-free text with single spaces (for de-duplication)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD.findall(text))


def norm_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()[:32]


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def keyword_terms(query: str) -> list[str]:
    """The query's content words in order, without stop words or repeats."""
    seen: dict[str, None] = {}
    for w in words(query):
        w = w.replace("'", "")
        if w in STOP_WORDS or w.replace("'", "") in STOP_WORDS or not w:
            continue
        seen.setdefault(w, None)
    return list(seen)


def fts_query(terms: list[str]) -> str:
    """An FTS5 MATCH expression that ORs the quoted terms (quotes make any word literal)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def chunk_text(text: str, max_words: int = 150, overlap: int = 30) -> list[str]:
    """Split ``text`` into overlapping word windows so an embedder with a short input limit sees
    all of it (all-MiniLM-L6-v2 stops at 256 word pieces, about 180 English words)."""
    tokens = text.split()
    if len(tokens) <= max_words:
        return [text]
    step = max(1, max_words - overlap)
    chunks = []
    for start in range(0, len(tokens), step):
        chunks.append(" ".join(tokens[start : start + max_words]))
        if start + max_words >= len(tokens):
            break
    return chunks


def estimate_tokens(text: str) -> int:
    """A cheap model-token estimate (about four characters per token) for budget packing."""
    return max(1, (len(text) + 3) // 4)
