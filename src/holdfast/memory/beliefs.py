"""Beliefs whose confidence follows the evidence, and contradictions caught at write time.

Every write of a fact, a belief or an observation is compared (:func:`holdfast.memory.contradict.compare`,
no model) with the active beliefs and facts of its namespace that share its entities or its
words; every episode with the beliefs only. Two things follow:

* an existing **belief** the new item supports or contradicts gets it as evidence (``+id`` or
  ``-id``), and its confidence is re-derived (:func:`belief_confidence`);
* an existing belief or fact the new item **contradicts** is reported on the write
  (``WriteResult.conflicts``), with a proposed supersede that the owner or the agent accepts
  with :meth:`MemoryStore.accept_supersede` (``holdfast memory belief resolve``). Nothing is
  superseded by itself.

Trust and evidence: evidence from an item of class ``tool`` or ``untrusted`` is recorded (so it
is visible) but does not move confidence until the owner vouches for the item; a web page can
therefore not talk the agent out of what it believes. Free-text evidence notes count as their
writer's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from holdfast.memory.contradict import Verdict, compare
from holdfast.memory.items import ID_RE, Evidence, Kind, MemoryItem, Trust
from holdfast.memory.text import keyword_terms

if TYPE_CHECKING:
    from holdfast.memory.store import MemoryStore

CLAIM_KINDS = (Kind.FACT, Kind.BELIEF, Kind.OBSERVATION)
# How much one piece of evidence counts, by the trust of the item it comes from.
EVIDENCE_WEIGHT = {Trust.OWNER: 1.0, Trust.AGENT: 1.0, Trust.TOOL: 0.0, Trust.UNTRUSTED: 0.0}


@dataclass(frozen=True)
class Conflict:
    """An existing item that a write contradicts, and the supersede proposed to resolve it."""

    item_id: str
    kind: str
    text: str
    citation: str
    reason: str
    new_id: str
    confidence: float | None = None

    @property
    def proposal(self) -> str:
        return f"supersede {self.item_id} with {self.new_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "kind": self.kind,
            "text": self.text,
            "citation": self.citation,
            "reason": self.reason,
            "confidence": self.confidence,
            "proposal": {"action": "supersede", "old": self.item_id, "new": self.new_id},
        }


@dataclass(frozen=True)
class ClaimCheck:
    """What one write means for the claims already held."""

    conflicts: tuple[Conflict, ...] = ()
    supports: tuple[str, ...] = ()
    contradicts: tuple[str, ...] = ()


def belief_confidence(
    evidence: Sequence[Evidence], weights: Mapping[str, float] | None = None
) -> float:
    """Laplace-smoothed weighted share of supporting evidence: no evidence 0.5, three for and
    one against 0.667. ``weights`` maps an evidence ref to how much it counts (1 by default)."""
    pro = con = 0.0
    for e in evidence:
        w = 1.0 if weights is None else weights.get(e.ref, 1.0)
        if e.supports:
            pro += w
        else:
            con += w
    return round((pro + 1) / (pro + con + 2), 3)


def evidence_weights(
    store: MemoryStore, namespace: str, evidence: Sequence[Evidence]
) -> dict[str, float]:
    """The weight of each evidence ref that names an item, by that item's trust now."""
    refs = [e.ref for e in evidence if ID_RE.match(e.ref)]
    out: dict[str, float] = {}
    for ref in refs:
        row = store.index.get(namespace, ref)
        if row is not None:
            out[ref] = EVIDENCE_WEIGHT[Trust(row.data.get("trust", "untrusted"))]
    return out


def candidates(store: MemoryStore, item: MemoryItem, limit: int = 30) -> list[MemoryItem]:
    """Active claims of the namespace a new item may bear on: beliefs (and, unless the item is
    an episode, facts and observations) that share its entities or its words."""
    kinds = [Kind.BELIEF.value]
    if item.kind is not Kind.EPISODE:
        kinds += [Kind.FACT.value, Kind.OBSERVATION.value]
    elif not store.index.has_kind(item.namespace, Kind.BELIEF.value):
        return []
    rids = store.index.claims_like(item.namespace, keyword_terms(item.text), kinds, limit)
    if item.entities:
        resolver = store.indexer.resolver(store.ns(item.namespace))
        names = sorted({n for e in item.entities for n in resolver.names_of(e)})
        rids += store.index.entity_items_of_kinds(item.namespace, names, kinds, limit)
    rows = store.index.get_many(list(dict.fromkeys(rids)))
    out: list[MemoryItem] = []
    for rid in dict.fromkeys(rids):
        row = rows.get(rid)
        if row is None:
            continue
        other = MemoryItem.from_dict(row.data)
        if other.id != item.id and other.active and other.kind.value in kinds:
            out.append(other)
    return out


def check_claims(store: MemoryStore, item: MemoryItem) -> ClaimCheck:
    """Compare a just-written item with the claims it may bear on."""
    if item.kind not in (Kind.FACT, Kind.BELIEF, Kind.EPISODE) or "derived" in item.tags:
        return ClaimCheck()
    conflicts: list[Conflict] = []
    supports: list[str] = []
    contradicts: list[str] = []
    for other in candidates(store, item):
        if item.id in {e.ref for e in other.evidence} or other.id in item.supersedes:
            continue
        verdict: Verdict = compare(other.text, item.text)
        if verdict.contradicts:
            if other.kind is Kind.BELIEF:
                contradicts.append(other.id)
            conflicts.append(
                Conflict(
                    other.id,
                    other.kind.value,
                    other.text,
                    store.citation(other.id, namespace=item.namespace),
                    verdict.reason,
                    item.id,
                    other.confidence,
                )
            )
        elif verdict.supports and other.kind is Kind.BELIEF:
            supports.append(other.id)
    return ClaimCheck(tuple(conflicts), tuple(supports), tuple(contradicts))


def carried_evidence(old: MemoryItem, new_text: str) -> tuple[Evidence, ...]:
    """The evidence a belief's successor inherits: the same when it restates or refines the old
    belief, reversed when it says the opposite (what spoke for the old belief speaks against
    the new one)."""
    if compare(old.text, new_text).contradicts:
        return tuple(Evidence(e.ref, not e.supports) for e in old.evidence)
    return old.evidence
