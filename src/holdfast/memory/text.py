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


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).casefold()


def normalize(text: str) -> str:
    """Case-folded, accent-stable, punctuation-free text with single spaces (for de-duplication)."""
    return " ".join(_WORD.findall(_fold(text)))


def norm_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()[:32]


def words(text: str) -> list[str]:
    return _WORD.findall(_fold(text))


# Words whose presence or absence never changes what a statement claims.
_ARTICLES = frozenset(["a", "an", "the"])
_CONTRACTIONS = {"'re": ["are"], "'m": ["am"], "'ll": ["will"], "'ve": ["have"]}
# "'s" after these is "is"; after anything else it marks a possessive, which claims nothing new.
_IS_BEFORE = frozenset(["it", "he", "she", "that", "what", "there", "here", "who", "where", "this"])
_NOT_STEMS = {"ca": "can", "wo": "will", "sha": "shall", "ai": "am"}


def claim_words(text: str) -> list[str]:
    """The words of ``text`` that carry its claim, in order: case, punctuation, articles and
    contractions (``isn't`` = ``is not``) do not count; every other word, negations, numbers,
    dates and names included, does."""
    out: list[str] = []
    for w in words(text):
        if w in _ARTICLES:
            continue
        if w.endswith("n't") and len(w) > 3:
            base = w[:-3]
            out.extend([_NOT_STEMS.get(base, base), "not"])
            continue
        tail = w[w.find("'") :] if "'" in w else ""
        if tail == "'s":
            out.append(w[:-2])
            if w[:-2] in _IS_BEFORE:
                out.append("is")
            continue
        if tail in _CONTRACTIONS:
            out.append(w[: -len(tail)])
            out.extend(_CONTRACTIONS[tail])
            continue
        out.append(w)
    return out


def loose_hash(text: str) -> str:
    """The near-duplicate key: texts with the same claim words in the same order share it."""
    return hashlib.sha256(" ".join(claim_words(text)).encode()).hexdigest()[:32]


def keyword_terms(query: str) -> list[str]:
    """The query's content words in order, without stop words or repeats."""
    seen: dict[str, None] = {}
    for w in words(query):
        w = w.replace("'", "")
        if w in STOP_WORDS or w.replace("'", "") in STOP_WORDS or not w:
            continue
        seen.setdefault(w, None)
    return list(seen)


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
