"""Is the product a question names among the sources? Model identifiers must match.

A shopper who asks about the "Sony WH-1000XM5" is not answered by the WH-1000XM4's battery life, nor the "Anker
PowerCore 20000" by the 10000's: retrieval ranks the near miss first (every other word matches) and the relevance gate
lets it through, and the answer, though its source says it, is about another product. The identifiers a question
names — a token mixing letters then digits (``xm5``, ``s23``, ``qc35``, ``dcd771``) or a number of three or more digits
(``700``, ``20000``) — must therefore appear in a source: verbatim with the punctuation ignored (``wh-1000xm5`` =
``WH1000XM5``), or, for an abbreviated name, its numbers among the numbers of a source's title (``qc35`` for "Bose
QuietComfort 35 II", ``ps5`` for "PlayStation 5"). Digit-first tokens are quantities (``6pk``, ``4oz``, ``5qt``, ``20v``)
that shoppers abbreviate freely, and are not identifiers here.

Measured on the five hand-written fact-question sets and the general questions over the sample catalog (430
answerable, 46 about absent products): no answerable question is stopped and 11 absent ones are (docs/trust.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from amzqa.records import Product

_TOKEN = re.compile(r"[a-z0-9]+(?:[-/.][a-z0-9]+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBER = re.compile(r"\d+")


def identifiers(question: str) -> list[str]:
    """The model identifiers ``question`` names, lower case with punctuation removed."""
    found = []
    for token in _TOKEN.findall(_THOUSANDS.sub("", question.lower())):
        flat = re.sub(r"[^a-z0-9]", "", token)
        if any(c.isdigit() for c in flat) and (flat[0].isalpha() or (flat.isdigit() and len(flat) >= 3)):
            found.append(flat)
    return found


def _numbers(text: str) -> set[str]:
    return set(_NUMBER.findall(_THOUSANDS.sub("", text)))


def names_product(identifier: str, product: Product) -> bool:
    """Whether ``product``'s title or description carries ``identifier`` (see the module doc)."""
    text = f"{product.title} {product.content or ''}"
    if identifier.isdigit():
        return identifier in _numbers(text)
    if identifier in re.sub(r"[^a-z0-9]", "", text.lower()):
        return True
    return set(_NUMBER.findall(identifier)) <= _numbers(product.title)


def unmatched_identifiers(question: str, products: Iterable[Product]) -> list[str]:
    """The identifiers ``question`` names that none of ``products`` carries: a non-empty list means the product asked
    about is not among them."""
    products = list(products)
    return [i for i in identifiers(question) if not any(names_product(i, p) for p in products)]
