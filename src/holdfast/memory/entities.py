"""Entities: deterministic canonical names and aliases (Alice = Alice Chen = Alice C.).

Items store the names as written. The canonical form of each name is computed from the whole set
of names in a namespace plus the explicit decisions in ``.holdfast/entities.json``, so it does not
depend on the order in which items arrived:

* a full name (two or more words, the last one not an initial) is canonical;
* a short form (``Alice``, ``Alice C.``, ``Chen``) joins the one full name it is compatible with;
  if two full names fit (``Alice Chen`` and ``Alice Smith``) it stays an entity of its own;
* a merge ``[a, b, ...]`` makes the names one entity named after the first; a split ``[alias,
  canonical]`` stops an automatic link.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CAP_RUN = re.compile(r"\b([A-Z][\w'’-]*(?:\s+(?:[A-Z]\.|[A-Z][\w'’-]*))*)")
_NOT_NAMES = frozenset(
    [
        "I",
        "I'm",
        "I've",
        "I'll",
        "I'd",
        "Hey",
        "Hi",
        "Hello",
        "Yes",
        "No",
        "Oh",
        "Wow",
        "Thanks",
        "Thank",
        "The",
        "A",
        "An",
        "And",
        "But",
        "So",
        "Or",
        "If",
        "It",
        "It's",
        "That",
        "This",
        "These",
        "Those",
        "What",
        "When",
        "Where",
        "Who",
        "Why",
        "How",
        "Well",
        "Yeah",
        "Sure",
        "Great",
        "Good",
        "Nice",
        "Awesome",
        "Also",
        "We",
        "You",
        "He",
        "She",
        "They",
        "My",
        "Your",
        "Our",
        "Their",
        "Me",
        "Let",
        "Just",
        "Really",
        "Okay",
        "OK",
        "Ok",
        "Haha",
        "Lol",
        "Congrats",
        "Sounds",
        "Glad",
        "Sorry",
        "Take",
        "Have",
        "Has",
        "Had",
        "Is",
        "Are",
        "Was",
        "Were",
        "Do",
        "Does",
        "Did",
        "Can",
        "Could",
        "Would",
        "Should",
        "Will",
        "May",
        "Might",
        "Not",
        "There",
        "Here",
        "Hope",
        "Love",
        "Bye",
        "Cool",
        "Definitely",
        "Absolutely",
        "Totally",
        "Anyway",
        "Actually",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "REDACTED",
        "Yesterday",
        "Today",
        "Tomorrow",
        "Last",
        "Next",
        "Tonight",
        "Maybe",
        "Please",
        "Then",
        "Now",
        "Once",
        "After",
        "Before",
        "During",
        "Since",
        "Until",
    ]
)


def clean_name(name: str) -> str:
    """Whitespace-collapsed name with surrounding punctuation removed (case kept)."""
    return " ".join(name.replace("’", "'").strip(" \t\n,;:!?\"'()[]").split())


def name_key(name: str) -> str:
    return clean_name(name).casefold().rstrip(".")


def _is_initial(word: str) -> bool:
    return len(word.rstrip(".")) == 1


def is_full_name(name: str) -> bool:
    parts = clean_name(name).split()
    return len(parts) >= 2 and not _is_initial(parts[-1])


def _compatible(short: str, full: str) -> bool:
    s = clean_name(short).casefold().split()
    f = clean_name(full).casefold().split()
    if not s or len(s) > len(f):
        return False
    if len(s) == 1:
        return s[0].rstrip(".") in (f[0], f[-1]) and not _is_initial(s[0])
    if s[0] != f[0]:
        return False
    last = s[-1]
    if _is_initial(last):
        return f[-1].startswith(last.rstrip("."))
    return last == f[-1]


def extract_names(text: str, known: EntityResolver | None = None) -> list[str]:
    """Capitalised word runs that look like names, plus names ``known`` already knows that occur
    in the text as written (case-sensitive, so "may" is not the name "May").

    A single capitalised word at the start of a sentence ("Alice prefers Go", "Chen approved
    the budget") is a name only when it is a known entity name or alias, or a short form of
    exactly one known full name; otherwise every sentence's first word would be an entity."""
    found: dict[str, str] = {}
    for m in _CAP_RUN.finditer(text):
        words = [
            w.rstrip("'’s").rstrip("’") if w.endswith(("'s", "’s")) else w
            for w in m.group(1).split()
        ]
        lead = len(words)
        while words and words[0] in _NOT_NAMES:
            words.pop(0)
        lead -= len(words)
        if not words:
            continue
        name = clean_name(" ".join(words))
        if len(name) < 2 or name in _NOT_NAMES or any(c.isdigit() for c in name):
            continue
        before = text[: m.start()].rstrip()
        sentence_start = not before or before[-1] in ".!?:;\n\"'("
        unknown = known is None or known.links_to(name) is None
        if len(words) == 1 and not lead and sentence_start and unknown:
            continue
        found.setdefault(name_key(name), name)
    if known is not None:
        for name in known.displays_in(text):
            found.setdefault(name_key(name), name)
    return list(found.values())


class EntityResolver:
    """Maps every name of a namespace to its canonical entity name."""

    def __init__(
        self,
        names: Iterable[str],
        merges: Iterable[list[str]] = (),
        splits: Iterable[list[str]] = (),
    ) -> None:
        display: dict[str, str] = {}
        variants: dict[str, set[str]] = {}
        for n in sorted({clean_name(n) for n in names if clean_name(n)}):
            display.setdefault(name_key(n), n)
            variants.setdefault(name_key(n), set()).add(n)
        blocked = {(name_key(a), name_key(b)) for a, b, *_ in (s for s in splits if len(s) >= 2)}
        fulls = {k for k, v in display.items() if is_full_name(v)}
        by_token: dict[str, set[str]] = {}
        for f in fulls:
            parts = f.split()
            by_token.setdefault(parts[0], set()).add(f)
            by_token.setdefault(parts[-1], set()).add(f)
        canon: dict[str, str] = {}
        for key, name in display.items():
            if key in fulls:
                canon[key] = key
                continue
            near = by_token.get(key.split()[0], set()) if key else set()
            fits = sorted(
                f for f in near if _compatible(name, display[f]) and (key, f) not in blocked
            )
            canon[key] = fits[0] if len(fits) == 1 else key
        for group in merges:
            keys = [name_key(g) for g in group if name_key(g)]
            if not keys:
                continue
            target = keys[0]
            for g in group:
                display.setdefault(name_key(g), clean_name(g))
            for k in list(canon) + keys:
                if k in keys or canon.get(k) in keys:
                    canon[k] = target
            canon[target] = target
        self._canon = canon
        self._display = display
        self._variants = variants
        self._fulls = sorted(fulls)
        self._blocked = blocked

    def links_to(self, name: str) -> str | None:
        """The canonical name ``name`` belongs to if it is a known name or alias, or a short
        form of exactly one known full name; None for a name this namespace has never seen."""
        key = name_key(name)
        if not key:
            return None
        if key in self._canon:
            return self._display.get(self._canon[key], key)
        fits = [f for f in self._fulls if _compatible(name, self._display[f])]
        fits = [f for f in fits if (key, f) not in self._blocked]
        return self._display[fits[0]] if len(fits) == 1 else None

    def names_of(self, name: str) -> list[str]:
        """Every spelling, as stored on items, of every name of ``name``'s entity."""
        out: set[str] = {clean_name(name)}
        for key in self.keys_of(name):
            out |= self._variants.get(key, set())
            if key in self._display:
                out.add(self._display[key])
        return sorted(out)

    def canonical(self, name: str) -> str:
        """The canonical display name for ``name`` (the name itself when unknown)."""
        key = name_key(name)
        target = self._canon.get(key, key)
        return self._display.get(target, clean_name(name))

    def aliases(self, name: str) -> list[str]:
        """Every known name of the entity ``name`` belongs to, canonical first."""
        target = self._canon.get(name_key(name), name_key(name))
        names = [self._display[k] for k, c in self._canon.items() if c == target and k != target]
        first = self._display.get(target, clean_name(name))
        return [first, *sorted(names)]

    def keys_of(self, name: str) -> list[str]:
        """Index keys of every name of ``name``'s entity."""
        target = self._canon.get(name_key(name), name_key(name))
        keys = [k for k, c in self._canon.items() if c == target]
        return keys or [name_key(name)]

    def entities(self) -> dict[str, list[str]]:
        """canonical name -> sorted aliases, for every entity."""
        out: dict[str, list[str]] = {}
        for k, c in self._canon.items():
            out.setdefault(self._display.get(c, c), [])
            if k != c:
                out[self._display.get(c, c)].append(self._display[k])
        return {k: sorted(v) for k, v in sorted(out.items())}

    def _pattern(self, case_sensitive: bool) -> re.Pattern[str] | None:
        attr = "_re_cs" if case_sensitive else "_re_ci"
        if not hasattr(self, attr):
            if case_sensitive:
                words = {v for vs in self._variants.values() for v in vs if len(v) > 1}
            else:
                words = {k for k in self._canon if len(k) > 1}
            alts = sorted((re.escape(w) for w in words), key=len, reverse=True)
            flags = 0 if case_sensitive else re.IGNORECASE
            pattern = (
                re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", flags) if alts else None
            )
            setattr(self, attr, pattern)
        found: re.Pattern[str] | None = getattr(self, attr)
        return found

    def names_in(self, text: str) -> list[str]:
        """Keys of known names that occur in ``text`` in any case (for recall from a query)."""
        pattern = self._pattern(False)
        if pattern is None:
            return []
        return sorted({name_key(m.group(0)) for m in pattern.finditer(text)})

    def displays_in(self, text: str) -> list[str]:
        """Known names that occur in ``text`` exactly as written."""
        pattern = self._pattern(True)
        if pattern is None:
            return []
        return sorted({clean_name(m.group(0)) for m in pattern.finditer(text)})
