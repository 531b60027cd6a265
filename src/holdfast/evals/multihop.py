"""Multi-hop questions over a generated folder of files.

The folder holds one file per person (``people/``), company (``companies/``) and city
(``cities/``). A person's file says where they work and names a friend; a company's file says
where it is headquartered and names a rival; a city's file names its country. A question such as
"In which country is the headquarters of the company Ada Quill works for?" takes three reads
that each depend on the last, and the friend and rival mentions are distractors a careless
search follows. Names are drawn without repetition, so every hop has exactly one right file.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from holdfast.errors import InvalidInput
from holdfast.evals.tasks import EvalTask, cached_json, write_json

_FIRST = [
    "Ada",
    "Bela",
    "Cyrus",
    "Dalia",
    "Emil",
    "Fenna",
    "Gideon",
    "Hale",
    "Ines",
    "Jory",
    "Kasia",
    "Lior",
    "Mira",
    "Nils",
    "Orla",
    "Pavel",
    "Quinn",
    "Rhea",
    "Soren",
    "Tamsin",
]
_LAST = [
    "Quill",
    "Marsh",
    "Orrin",
    "Vale",
    "Brisk",
    "Thorne",
    "Ashby",
    "Kestrel",
    "Lund",
    "Mercer",
    "Nash",
    "Oakes",
    "Pryor",
    "Rook",
    "Sable",
    "Tarrant",
    "Umber",
    "Voss",
]
_CO_A = [
    "Amber",
    "Basalt",
    "Cobalt",
    "Delta",
    "Ember",
    "Flint",
    "Granite",
    "Harbor",
    "Indigo",
    "Juniper",
    "Krypton",
    "Larch",
    "Magnet",
    "Nimbus",
    "Onyx",
    "Pylon",
]
_CO_B = ["Works", "Labs", "Systems", "Foundry", "Dynamics", "Holdings", "Logistics", "Textiles"]
_CITY_A = ["Vel", "Kor", "Ast", "Bryn", "Cal", "Dor", "Esk", "Fal", "Gal", "Hal", "Ith", "Jor"]
_CITY_B = ["mora", "heim", "ria", "dale", "port", "ford", "vik", "stad"]
_COUNTRY = ["Ostrava", "Belmar", "Quenland", "Tirsa", "Valdoria", "Kesh", "Morvania", "Zell"]


def _unique(rng: random.Random, a: list[str], b: list[str], n: int, sep: str = " ") -> list[str]:
    pool = [x + sep + y for x in a for y in b]
    if n > len(pool):
        raise InvalidInput(f"at most {len(pool)} distinct names of this kind")
    return rng.sample(pool, n)


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def build_world(seed: int, people: int) -> dict[str, Any]:
    rng = random.Random(f"world-{seed}-{people}")
    n_co = max(4, people // 4)
    n_city = max(3, n_co // 2)
    persons = _unique(rng, _FIRST, _LAST, people)
    companies = _unique(rng, _CO_A, _CO_B, n_co)
    cities = _unique(rng, _CITY_A, _CITY_B, n_city, sep="")
    world: dict[str, Any] = {
        "people": {
            p: {"company": rng.choice(companies), "friend": rng.choice(persons)} for p in persons
        },
        "companies": {
            c: {"city": rng.choice(cities), "rival": rng.choice(companies)} for c in companies
        },
        "cities": {c: {"country": rng.choice(_COUNTRY)} for c in cities},
    }
    return world


def write_world(root: Path, world: dict[str, Any], seed: int) -> None:
    rng = random.Random(f"prose-{seed}")
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("people", "companies", "cities"):
        (tmp / sub).mkdir(parents=True)
    for p, d in world["people"].items():
        text = (
            f"# {p}\n\n{p} works for {d['company']} as an engineer. "
            f"{p} is friends with {d['friend']}, who sometimes visits. "
            + " ".join(
                rng.choice(["Likes hiking.", "Collects stamps.", "Plays chess.", "Bakes bread."])
                for _ in range(3)
            )
            + "\n"
        )
        (tmp / "people" / f"{_slug(p)}.md").write_text(text, encoding="utf-8")
    for c, d in world["companies"].items():
        text = (
            f"# {c}\n\n{c} is headquartered in {d['city']}. "
            f"Its main competitor is {d['rival']}. Founded in {1950 + rng.randrange(70)}.\n"
        )
        (tmp / "companies" / f"{_slug(c)}.md").write_text(text, encoding="utf-8")
    for c, d in world["cities"].items():
        text = f"# {c}\n\n{c} is a city in {d['country']}. Population about {rng.randrange(20, 900)} thousand.\n"
        (tmp / "cities" / f"{_slug(c)}.md").write_text(text, encoding="utf-8")
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)


def multihop_task(data_dir: Path, *, seed: int, index: int, people: int) -> EvalTask:
    """One question over a folder of ``people`` person files (and their companies and cities);
    even indices ask three hops (country), odd ones two (city)."""
    if not 4 <= people <= len(_FIRST) * len(_LAST):
        raise InvalidInput(f"people must be 4 to {len(_FIRST) * len(_LAST)}, not {people}")
    params = {"v": 1, "seed": seed, "people": people}
    root = data_dir / f"multihop-s{seed}-{people}"
    sidecar = data_dir / f"multihop-s{seed}-{people}.json"
    world = build_world(seed, people)
    if cached_json(sidecar, params) is None or not root.is_dir():
        write_world(root, world, seed)
        write_json(sidecar, {"params": params})
    rng = random.Random(f"multihop-q-{seed}-{index}")
    person = rng.choice(sorted(world["people"]))
    company = world["people"][person]["company"]
    city = world["companies"][company]["city"]
    hops = 3 if index % 2 == 0 else 2
    if hops == 3:
        question = (
            f"In which country is the headquarters of the company that {person} works for? "
            "The files in `docs` describe people, companies and cities."
        )
        gold = world["cities"][city]["country"]
    else:
        question = (
            f"In which city is the company that {person} works for headquartered? "
            "The files in `docs` describe people, companies and cities."
        )
        gold = city
    return EvalTask(
        suite="multihop",
        task_id=f"multihop-s{seed}-i{index}-{people}",
        question=question,
        gold=gold,
        scorer="exact",
        inputs={"docs": str(root)},
        signature="docs -> answer: str",
        meta={"hops": hops, "people": people, "chain": [person, company, city]},
    )
