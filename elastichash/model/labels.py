"""Class labels: names for a model's class scores, and words -> classes through WordNet.

A model that declares a labels output names a labels file (contract ``labels_file``): one
class per line, ``name`` or ``id<TAB>name``, found beside the model file or among the
package's data files (``elastichash/data``, where the ImageNet-1k names are shipped; see
``elastichash/data/PROVENANCE.md``). Each image keeps its top classes (at most
:data:`TOP_K`, score at least :data:`MIN_SCORE`).

Words: ``imagenet-wordnet.tsv`` holds every WordNet synset on a path from an ImageNet class
to the root, with its lemmas and hypernyms, so a word names all classes below it: "dog" the
118 breeds, "vehicle" buses, cars and boats. Nothing is fetched at run time.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from elastichash.errors import ModelContractError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
WORDNET_FILE = "imagenet-wordnet.tsv"
TOP_K = 5
MIN_SCORE = 0.05


@dataclass(frozen=True)
class Label:
    id: str  # the class id (an ImageNet WordNet id), what the label index keys on
    name: str
    score: float


@dataclass(frozen=True)
class ClassNames:
    ids: tuple[str, ...]
    names: tuple[str, ...]

    def top(self, scores: npt.NDArray[np.float32], k: int = TOP_K,
            min_score: float = MIN_SCORE) -> list[tuple[Label, ...]]:
        """Per row of (N, C) scores: the top-k classes scoring at least ``min_score``."""
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out: list[tuple[Label, ...]] = []
        for row, idx in zip(scores, order, strict=True):
            out.append(tuple(
                Label(self.ids[i], self.names[i], round(float(row[i]), 4))
                for i in idx if row[i] >= min_score
            ))
        return out


def _find(name: str, model_path: Path | None) -> Path:
    if "/" in name or "\\" in name or name.startswith("."):
        raise ModelContractError(f"labels file {name!r} must be a plain file name")
    for folder in ([model_path.parent] if model_path is not None else []) + [DATA_DIR]:
        if (folder / name).is_file():
            return folder / name
    raise ModelContractError(
        f"labels file {name!r} is neither beside the model nor in {DATA_DIR}"
    )


@functools.lru_cache(maxsize=8)
def _read_names(path: Path) -> ClassNames:
    ids, names = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        cid, _, name = line.partition("\t")
        ids.append(cid.strip() if name else str(n))
        names.append((name or cid).strip())
    return ClassNames(tuple(ids), tuple(names))


def class_names(labels_file: str, classes: int, model_path: Path | None = None) -> ClassNames:
    """The model's class names, checked against the width of its labels output."""
    found = _read_names(_find(labels_file, model_path))
    if len(found.names) != classes:
        raise ModelContractError(
            f"labels file {labels_file} names {len(found.names)} classes, the model scores "
            f"{classes}"
        )
    return found


# --- words -> classes ---------------------------------------------------------------------


def normalise(word: str) -> str:
    return re.sub(r"[\s_-]+", " ", word.strip().lower())


@dataclass(frozen=True)
class Vocabulary:
    """Lemma -> class ids below every synset carrying that lemma."""

    classes_of: dict[str, frozenset[str]]

    def lookup(self, term: str) -> frozenset[str] | None:
        """Class ids a term names (exact lemma, then simple singular forms); None: unknown."""
        t = normalise(term)
        for cand in (t, t[:-1] if t.endswith("s") else "", t[:-2] if t.endswith("es") else "",
                     t[:-3] + "y" if t.endswith("ies") else ""):
            if cand and cand in self.classes_of:
                return self.classes_of[cand]
        return None

    def resolve(self, text: str) -> tuple[frozenset[str], list[str], list[str]]:
        """(class ids, known terms, unknown terms) for a text of terms separated by commas
        or "or"; a term that is not a lemma is tried word by word."""
        found: set[str] = set()
        known: list[str] = []
        unknown: list[str] = []
        for term in re.split(r",|\bor\b", text):
            term = term.strip()
            if not term:
                continue
            hit = self.lookup(term)
            if hit is None and " " in normalise(term):
                parts = [self.lookup(w) for w in normalise(term).split(" ")]
                if all(p is not None for p in parts):  # every word must name something
                    hit = frozenset.intersection(*[p for p in parts if p is not None]) or None
            if hit is None:
                unknown.append(term)
            else:
                known.append(term)
                found |= hit
        return frozenset(found), known, unknown


def unknown_words_hint(unknown: list[str]) -> str | None:
    if not unknown:
        return None
    return (
        f"no ImageNet class is named by {', '.join(repr(u) for u in unknown)}; words are "
        "English nouns of the ImageNet classes or broader ones (WordNet), e.g. 'dog', "
        "'elephant', 'vehicle', 'flower', 'mountain'"
    )


@functools.lru_cache(maxsize=2)
def vocabulary(path: Path = DATA_DIR / WORDNET_FILE) -> Vocabulary:
    lemmas: dict[str, list[str]] = {}
    parents: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        wnid, lemma_text, parent_text = ([*line.split("\t"), "", ""])[:3]
        lemmas[wnid] = [normalise(w) for w in lemma_text.split(",") if w]
        parents[wnid] = parent_text.split()
    children: dict[str, list[str]] = {}
    for wnid, ups in parents.items():
        for up in ups:
            children.setdefault(up, []).append(wnid)
    leaves_cache: dict[str, frozenset[str]] = {}

    def leaves(wnid: str) -> frozenset[str]:
        if wnid not in leaves_cache:
            kids = children.get(wnid, [])
            # an ImageNet class may also be an ancestor of another (e.g. a generic class)
            own = frozenset([wnid]) if not kids or wnid in _classes() else frozenset()
            leaves_cache[wnid] = own.union(*(leaves(k) for k in kids))
        return leaves_cache[wnid]

    classes_of: dict[str, set[str]] = {}
    names = _read_names(DATA_DIR / "imagenet-1k.txt")
    for wnid, name in zip(names.ids, names.names, strict=True):  # the short English names too
        classes_of.setdefault(normalise(name), set()).add(wnid)
    for wnid, lemma_list in lemmas.items():
        for w in lemma_list:
            classes_of.setdefault(w, set()).update(leaves(wnid))
    return Vocabulary({w: frozenset(c & _classes()) for w, c in classes_of.items()})


@functools.lru_cache(maxsize=1)
def _classes() -> frozenset[str]:
    return frozenset(_read_names(DATA_DIR / "imagenet-1k.txt").ids)
