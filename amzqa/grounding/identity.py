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

Sizes work the same way. "instant pot duo 8 qt" is not the 6-quart Instant Pot, nor a "raspberry pi 5 8gb" the Pi with
4 GB: a size the question's naming part gives (a number with a unit of size: quarts, ounces, inches, GB, watts, ...)
conflicts with a product that states sizes in that unit but never this one (:func:`size_conflicts`).

The naming part (:func:`naming_part`) is the question without its asking clause: shoppers write "<the product> - <what
they ask>" ("the dystopian novel where the party watches everyone through big brother - what's the main guy's name").
The relevance gate measures how much of the naming part a product covers as well as how much of the whole question:
the asking words ("main guy's name") are not in any product, and counting them stops described products.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from amzqa.grounding.support import UNIT, numbers
from amzqa.grounding.text import content_words
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


# Words that open the asking clause of a shopper's question.
# Whole words only: "is" in "Kindle Oasis", "are" in "Square" do not ask.
_ASK = re.compile(r"(?<![\w'\u2019])(?:what|what['\u2019]s|whats|how|who|who['\u2019]s|whos|which|why|where|when|does|do|did|"
                  r"is|are|can|will|was|were|should|would|could|any|has|have)(?![\w'\u2019])", re.I)
# Clause separators: a spaced dash, a comma, colon or semicolon, a question mark inside the text, brackets.
_PIECES = re.compile(r"\s+[-\u2013\u2014]+\s+|\s*[,;:?]\s+|\s*[()\[\]]\s*")
# Units that say which size of a product it is (not what it does: hours, pages and players are asked, not named).
SIZE_UNITS = frozenset("quart ounce inch foot cm mm gallon liter ml cup gb tb mb watt mah volt pound kg gram piece".split())


def split_question(question: str) -> tuple[str, str]:
    """``question`` as (naming part, asking part): the words that name or describe the product, and the clause that
    asks. The naming part is "" where the question has none apart from its ask (one that opens with its ask, "How
    long does the JBL Flip 5 battery last?", or has no asking word); the asking part is then the whole question.
    With clause separators, the last clause asks if it holds an asking word ("... - how many pages is it?", "... -
    oven safe to what temp"), else the first if it opens with one ("what comes in the box? (Jellycat Bashful Bunny,
    Medium)"); without, the ask starts at the first asking word after two content words ("instant pot duo 8 qt how
    many people does it serve")."""
    text = question.strip().rstrip("?!. ")
    pieces = [p for p in _PIECES.split(text) if p.strip()]
    if len(pieces) > 1:
        if _ASK.search(pieces[-1]):
            return " ".join(pieces[:-1]), pieces[-1]
        if _ASK.match(pieces[0]):
            return " ".join(pieces[1:]), pieces[0]
        return "", question
    words = text.split()
    for i in range(2, len(words)):
        if _ASK.fullmatch(words[i]) and len(content_words(" ".join(words[:i]))) >= 2:
            return " ".join(words[:i]), " ".join(words[i:])
    return "", question


def naming_part(question: str) -> str:
    """The words of ``question`` that name or describe the product, without its asking clause (:func:`split_question`)."""
    return split_question(question)[0]


def asking_part(question: str) -> str:
    """The clause of ``question`` that asks ("what's the main guy's name"), or the whole question where no naming part
    stands apart from it (:func:`split_question`)."""
    return split_question(question)[1]


def size_conflicts(question: str, product: Product) -> list[str]:
    """The sizes the question's naming part gives ("8 qt") that ``product`` contradicts: it states sizes in that unit,
    never this one. A non-empty list means ``product`` is another size of what was asked."""
    named = naming_part(question)
    if not named:
        return []
    stated = numbers(f"{product.title} {product.content or ''}")
    units = {u for _, u in stated}
    return [f"{v} {u}" for v, u in sorted(numbers(named)) if u in SIZE_UNITS and u in units and (v, u) not in stated]
