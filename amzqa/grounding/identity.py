"""Is the product a question names among the sources? Model identifiers must match.

A shopper who asks about the "Sony WH-1000XM5" is not answered by the WH-1000XM4's battery life, nor the "Anker
PowerCore 20000" by the 10000's: retrieval ranks the near miss first (every other word matches) and the relevance gate
lets it through, and the answer, though its source says it, is about another product. The identifiers a question
names must therefore appear in a source. An identifier is a token that mixes letters then digits (``xm5``, ``s23``,
``qc35``, ``dcd771``, ``wh-1000xm5``), digits, two or more letters and digits again (``1000xm5``; not ``5x7``), or a bare number of three or more
digits (``700``, ``20000``; "1,008" reads as one number). Not identifiers: quantities shoppers abbreviate freely
(``6pk``, ``4oz``, ``5qt``, ``20v``), numbers with a decimal point, range or fraction (``15.6``, ``100-240``, ``1/4-20``),
numbers that are a percentage, a price or carry a unit (``100%``, ``$129``, ``1200 watts``).

It matches a source when a word of the source (punctuation ignored: ``WH1000XM5`` = ``wh-1000xm5``), or two neighbouring
words run together (``WH 1000XM5``), equals it or ends or begins with it (``xm4`` in ``WH-1000XM4``); or, for an
abbreviated name, when each of its numbers follows a title word starting with its first letter (``qc35`` for "Bose
QuietComfort 35 II", ``ps5`` for "PlayStation 5"; not ``xm5`` for a title saying "Bluetooth 5.0").

Measured on the five hand-written fact-question sets and the general questions over the sample catalog (430
answerable, 46 about absent products): no answerable question is stopped and 11 absent ones are (docs/trust.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from amzqa.grounding.support import UNIT
from amzqa.records import Product

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_WORD = re.compile(r"\S+")
_NUMBER = re.compile(r"\d+")
_MODEL = re.compile(r"[a-z]+\d")  # letters then digits


def _flat(word: str) -> str:
    return re.sub(r"[^a-z0-9]", "", word.lower())


def identifiers(question: str) -> list[str]:
    """The model identifiers ``question`` names, lower case with punctuation removed."""
    words = _WORD.findall(_THOUSANDS.sub("", question.lower()))
    found = []
    for i, word in enumerate(words):
        core = word.strip(".,;:!?()[]\"'")
        flat = _flat(core)
        if not flat or not any(c.isdigit() for c in flat):
            continue
        if flat.isdigit():
            following = words[i + 1].strip(".,;:!?()") if i + 1 < len(words) else ""
            if (len(flat) >= 3 and core.isdigit() and not UNIT.fullmatch(following)
                    and not (i and words[i - 1] in ("$", "€", "£"))):
                found.append(flat)
        elif core[0].isalpha() and _MODEL.match(flat) or re.fullmatch(r"\d+[a-z]{2,}\d+[a-z0-9]*", flat):
            found.append(flat)
    return found


def _words(text: str) -> list[str]:
    return [f for f in (_flat(w) for w in _WORD.findall(_THOUSANDS.sub("", text))) if f]


def names_product(identifier: str, product: Product) -> bool:
    """Whether ``product``'s title or description carries ``identifier`` (see the module doc)."""
    text = f"{product.title} {product.content or ''}"
    if identifier.isdigit():  # a whole number of the text ("1700" does not carry "700")
        return identifier in _NUMBER.findall(_THOUSANDS.sub("", text))
    words = _words(text)
    singles = (w for w in words if any(c.isdigit() for c in w))
    if any(w == identifier or w.endswith(identifier) or w.startswith(identifier) for w in singles):
        return True
    if identifier in {a + b for a, b in zip(words, words[1:])}:
        return True
    title = _WORD.findall(product.title)
    numbers = _NUMBER.findall(identifier)
    return all(any(_flat(title[j]) == n and j and title[j - 1][:1].lower() == identifier[0] for j in range(len(title)))
               for n in numbers)


def unmatched_identifiers(question: str, products: Iterable[Product]) -> list[str]:
    """The identifiers ``question`` names that none of ``products`` carries: a non-empty list means the product asked
    about is not among them."""
    products = list(products)
    return [i for i in identifiers(question) if not any(names_product(i, p) for p in products)]
