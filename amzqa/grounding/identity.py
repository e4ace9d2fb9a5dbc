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

Names work the same way, for the near misses identifiers and sizes do not catch: "kindle oasis" is not the Kindle
Paperwhite, "dune messiah" not "Dune", "catan seafarers expansion" not the Catan base game (:func:`variant_conflicts`).
A short naming part (a name, not a description) holds a word the product nowhere carries, standing where the product's
title has another word the question lacks ("oasis" after "kindle" where the title says "Paperwhite"), or extending a
short title ("messiah" after "Dune"). Words shoppers add or change freely are not names: formats and packaging
("paperback", "dvd", "pack"), numbers and units (the rules above), spelling variants and typos ("moisturising",
"glvoes"), abbreviations ("pc" for piece, "hp" for Harry Potter) and words a title writes as one ("all clad", "ti84").

Model numbers too (:func:`model_number_conflicts`, read in any naming part): a number after a name word that the
title follows with another number ("bose quietcomfort 45" for "QuietComfort 35 II", "jbl flip 6" for the Flip 5, "mx
master 3s" for the MX Master 3), or that extends a title of one or two words ("frozen 2" for "Frozen", a sequel).
Years ("MacBook Air 2020"), inches written 6", counts ("mini 4 pack"), sizes ("duo 8 qt") and numbers the title carries anywhere are
not model numbers; "10k" reads as 10000.

A question that opens with its ask ("how long does the garmin fenix 7 battery last") has no naming part apart; the
sibling rules read the words between its asking words instead (:func:`named_in_ask`: "garmin fenix 7"), where a word
names a sibling only inside the name, before a title word or a number: the last words may ask ("is the dover thrift
huck finn abridged"). Sizes count only written in digits ("single-cup" describes a brewer).

The place in a series works the same way, read in the whole question since shoppers who describe a book say which
one it is anywhere: "the third hogwarts book" is not "... (Book 1)", nor "the sequel to ..." (:func:`series_conflicts`).

The naming part (:func:`naming_part`) is the question without its asking clause: shoppers write "<the product> - <what
they ask>" ("the dystopian novel where the party watches everyone through big brother - what's the main guy's name").
The relevance gate measures how much of the naming part a product covers as well as how much of the whole question:
the asking words ("main guy's name") are not in any product, and counting them stops described products.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from amzqa.grounding.support import UNIT, numbers
from amzqa.grounding.text import STOPWORDS, content_words, stem, words
from amzqa.records import Product

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_WORD = re.compile(r"\S+")
_NUMBER = re.compile(r"\d+")
_MODEL = re.compile(r"[a-z]+\d")  # letters then digits
_DIGITS = re.compile(r"\d+(?:\.\d*[1-9])?")  # as support.numbers writes a value: "10.250" -> "10.25"


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
_WH_WORDS = r"what|what['\u2019]s|whats|how|who|who['\u2019]s|whos|which|why|where|when"
_ASK = re.compile(rf"(?<![\w'\u2019])(?:{_WH_WORDS}|does|do|did|is|are|can|will|was|were|should|would|could|any|has|"
                  r"have|tell(?=\s+(?:me|us)\b)|describe)(?![\w'\u2019])", re.I)
# The asking words that can follow a title that itself opens with one ("where the crawdads sing paperback how many
# pages"): not the auxiliaries, which follow the ask's own first word ("how many pages is the hobbit").
_WH = re.compile(rf"(?<![\w'\u2019])(?:{_WH_WORDS})(?![\w'\u2019])", re.I)
# Asks with no asking word: the fact wanted, named by its noun at the end ("... page count", "... battery life?").
_ASK_NOUN = re.compile(r"(?<![\w'\u2019-])(?:page count|pages|piece count|number of pieces|runtime|run ?time|running time|battery life|warranty|"
                       r"battery (?:days|hours)|rating|megapixels|"
                       r"(?:(?:total |max(?:imum)? )?play ?time|(?:max(?:imum)? )?oven(?:[- ]safe)? (?:temp|temperature))"
                       r"(?=[\s?!.]*$)|"  # these can be part of a name ("playtime gym"): only at the very end
                       r"dimensions|weight limit|weight capacity|max weight|capacity|wattage|dpi|fps|flight time|"
                       r"shelf life|washing instructions|care instructions|inseam|size range|age range|price|"
                       r"ingredients|head size|grip size|screen size|page size|water resistance|waterproof rating|"
                       r"max (?:height|speed|temperature|temp|mph|fps|weight|capacity|liquid capacity|transfer speed)|"
                       r"load rating|fabric content|clock speed|transfer speed|center height|tank capacity|"
                       r"dishwasher safe|machine washable)(?![\w'\u2019-])", re.I)
# Clause separators: a spaced dash, a comma, colon or semicolon, a question mark inside the text, brackets.
_PIECES = re.compile(r"\s+[-\u2013\u2014]+\s+|\s*[,;:?]\s+|\s*[()\[\]]\s*")
# Units that say which size of a product it is (not what it does: hours, pages and players are asked, not named).
SIZE_UNITS = frozenset("quart ounce inch foot cm mm gallon liter ml cup gb tb mb watt mah volt pound kg gram piece".split())
# Words a shopper adds to a product's name without naming another product: formats, packaging, and filler.
GENERIC_NAME_WORDS = frozenset("""book novel paperback hardcover hardback pb hc edition ed version dvd bluray blu ray vhs
cd audiobook game deck set pack pk kit bundle box console model series one thing brand original new size copy volume
vol print printing good best cheap black white red blue green grey gray silver gold pink purple yellow orange brown
beige navy charcoal rose teal clear matte""".split())
# A naming part of more content words describes the product ("the picture book where a tiger comes to tea"): its words
# are the shopper's own, not the product's name.
VARIANT_MAX_WORDS = 5
# Parts and accessories a shopper names with their product ("sonicare replacement brush heads", "bodum carafe"): a
# product that never mentions one is its host, not it.
ACCESSORY_WORDS = frozenset("""replacement spare refill cartridge case cover sleeve skin protector strap band lid
carafe beaker pitcher jar filter head blade bag pad charger adapter dock mount stand remote""".split())
# Editions by format, in families: a product stating one of a family and not the one asked is another edition.
FORMATS = {"book": {"paperback": ("paperback", "softcover", "pb"), "hardcover": ("hardcover", "hardback", "hc"),
                    "massmarket": ("mass market", "massmarket"), "boardbook": ("board book", "boardbook"),
                    "audiobook": ("audiobook", "audio book", "audio cd")},
           "video": {"dvd": ("dvd",), "bluray": ("bluray", "blu ray"), "vhs": ("vhs", "videotape", "video tape"),
                     "4k": ("4k", "uhd")},
           "music": {"cd": ("cd", "audio cd"), "vinyl": ("vinyl", "lp"), "cassette": ("cassette",)}}
ACCESSORY_MAX_WORDS = 7  # read in a naming part of at most this many content words: longer ones describe
# A naming part of this many content words or more describes the product (see ``describes``).
DESCRIBED_MIN_WORDS = 7
_PURPOSE = re.compile(r"\s(?:for|to|by)\s", re.I)
_ORDINAL = re.compile(r"\b\d+(?:st|nd|rd|th)\b")
_TITLE_CORE = re.compile(r"\s[-\u2013]\s|[(\[,:]")


def split_question(question: str) -> tuple[str, str]:
    """``question`` as (naming part, asking part); see :func:`_split`. A naming part of formats, packaging and numbers
    only names nothing ("how often should you swap the sonicare brush heads, 4 pack"): the question has none apart."""
    named, ask = _split(question)
    if named and all(w in GENERIC_NAME_WORDS or w in _COUNTS or w[:1].isdigit() for w in _name_words(named)):
        return "", question
    return named, ask


def _split(question: str) -> tuple[str, str]:
    """``question`` as (naming part, asking part): the words that name or describe the product, and the clause that
    asks. The naming part is "" where the question has none apart from its ask (one that opens with its ask, "How
    long does the JBL Flip 5 battery last?", or has no asking word); the asking part is then the whole question.
    With clause separators, the last clause asks if it holds an asking word ("... - how many pages is it?", "... -
    oven safe to what temp"), else the first if it opens with one ("what comes in the box? (Jellycat Bashful Bunny,
    Medium)"); without, the ask starts at the first asking word after two content words ("instant pot duo 8 qt how
    many people does it serve"). Where no asking word does, the noun of the fact may ask, at the end of the question or
    of its last clause ("the matrix reloaded dvd runtime", "... - page count?", "keychron k2 battery life";
    ``_ASK_NOUN``). A question that opens with its ask has no naming part unless a title opening with an asking word
    comes first ("where the crawdads sing paperback how many pages")."""
    text = question.strip().rstrip("?!. ")
    pieces = [p for p in _PIECES.split(text) if p.strip()]
    if len(pieces) > 1:
        opening = [i for i in range(1, len(pieces) - 1) if _ASK.match(pieces[i])]
        if opening and not _ASK.match(pieces[-1]):  # "play doh 10 pack - any allergens? my kid has celiac"
            return _fact_noun_asks(" ".join(pieces[:opening[0]]), " ".join(pieces[opening[0]:]))
        if _ASK.search(pieces[-1]):
            return _fact_noun_asks(" ".join(pieces[:-1]), pieces[-1])
        if _ASK.match(pieces[0]):
            return " ".join(pieces[1:]), pieces[0]
        if _asks_by_noun(pieces[-1]) is not None:
            return " ".join(pieces[:-1]), pieces[-1]
        return "", question
    # A question that opens with its ask ("how many pages is the hobbit") has no naming part, unless its first words
    # are a title's and the ask follows ("where the crawdads sing paperback how many pages").
    asking = _WH if _ASK.match(text) else _ASK
    words = text.split()
    for i in range(2, len(words)):
        # a whole word opens the ask here (and the word after it, for "tell me")
        if asking.match(" ".join(words[i:i + 2])) and len(content_words(" ".join(words[:i]))) >= 2:
            return _fact_noun_asks(" ".join(words[:i]), " ".join(words[i:]))
    if asking is _WH:
        return "", question
    start = _asks_by_noun(text)
    if start is not None and len(content_words(text[:start])) >= 2:
        return text[:start].strip(), text[start:]
    return "", question


def _fact_noun_asks(named: str, ask: str) -> tuple[str, str]:
    """A naming part that ends with the noun of a fact asks from that noun ("bose qc35 ii battery life | when using
    the cable": the battery life is asked, not part of the name), where two content words still name the product."""
    found = [m for m in _ASK_NOUN.finditer(named) if not named[m.end():].strip()]
    if found and len(content_words(named[:found[-1].start()])) >= 2:
        return named[:found[-1].start()].strip(), f"{named[found[-1].start():]} {ask}"
    return named, ask


def _asks_by_noun(text: str) -> int | None:
    """Where the noun of a fact asks at the end of ``text`` (the last one, at most 3 words before the end: "anker high
    capacity power bank warranty" asks "warranty"), or None."""
    found = list(_ASK_NOUN.finditer(text))
    if found and len(text[found[-1].end():].split()) <= 3:
        return found[-1].start()
    return None


def naming_part(question: str) -> str:
    """The words of ``question`` that name or describe the product, without its asking clause (:func:`split_question`)."""
    return split_question(question)[0]


def asking_part(question: str) -> str:
    """The clause of ``question`` that asks ("what's the main guy's name"), or the whole question where no naming part
    stands apart from it (:func:`split_question`)."""
    return split_question(question)[1]


def named_in_ask(question: str) -> str:
    """The words naming the product in a question that opens with its ask: after the asking words of its first four
    words ("how many players is | catan seafarers") up to the next asking word, less stopwords and the words that ask
    for a kind of fact ("how long does the garmin fenix 7 battery last" -> "garmin fenix 7"; "does the echo dot 5th gen
    have an aux out" -> "echo dot 5th gen")."""
    from amzqa.grounding.facts import fact_words
    asks = fact_words()
    tokens = [w.strip("?!.,;:()") for w in words(question.strip().rstrip("?!. "))]
    start = max((i + 1 for i, w in enumerate(tokens[:4]) if _ASK.fullmatch(w)), default=0)
    kept: list[str] = []
    for w in tokens[start:]:
        if _ASK.fullmatch(w):
            break
        if w and w not in STOPWORDS:
            kept.append(w)
    # the words that ask for a kind of fact ("... battery last"), unless a model number follows ("fitbit charge 6")
    kept = [w for i, w in enumerate(kept) if stem(w) not in asks or i + 1 < len(kept) and kept[i + 1][:1].isdigit()]
    text = " ".join(kept)
    opening = _ASK_NOUN.match(text)
    if opening and text[opening.end():].strip():
        text = text[opening.end():].strip()
    closing = _asks_by_noun(text)
    if closing and text[:closing].strip():
        text = text[:closing].strip()
    return text


def _formats(text: str) -> dict[str, set[str]]:
    flat = f" {' '.join(_flat(w) for w in words(text))} "
    return {family: {f for f, spellings in forms.items() if any(f" {s} " in flat for s in spellings)}
            for family, forms in FORMATS.items()}


def format_conflicts(named: str, text: str) -> list[str]:
    """Formats the naming part asks ("atomic habits audiobook") that ``text`` (a product's title and description)
    does not state while it states another of the same kind ("Hardcover"): another edition of the product. A question
    naming two of a kind asks which it is ("is the penguin deluxe crime and punishment a hardcover or paperback")."""
    asked, stated = _formats(named), _formats(text)
    return [f"{f}~{'/'.join(sorted(stated[family]))}" for family, fs in asked.items() for f in sorted(fs)
            if stated[family] and f not in stated[family] and len(fs) == 1]  # two named: "hardcover or paperback?"


def describes(question: str) -> bool:
    """Whether ``question`` describes its product rather than names it: its naming part (or the question, where none
    stands apart) holds at least ``DESCRIBED_MIN_WORDS`` content words ("the memoir by the woman raised by survivalist
    parents in idaho who didn't go to school till 17")."""
    return len(_name_words(naming_part(question) or named_in_ask(question) or question)) >= DESCRIBED_MIN_WORDS


def sibling_naming(question: str, in_ask: bool = True) -> str:
    """The naming part the sibling rules read: :func:`naming_part`, or :func:`named_in_ask` where the question opens
    with its ask."""
    return naming_part(question) or (named_in_ask(question) if in_ask else "")


def size_conflicts(question: str, product: Product, in_ask: bool = True) -> list[str]:
    """The sizes the question's naming part gives ("8 qt") that ``product`` contradicts: it states sizes in that unit,
    never this one. A non-empty list means ``product`` is another size of what was asked. Sizes written in digits
    only: "single-cup" describes a brewer, it does not size one."""
    named = sibling_naming(question, in_ask)
    if not named:
        return []
    stated = numbers(f"{product.title} {product.content or ''}")
    units = {u for _, u in stated}
    written = set(_DIGITS.findall(_THOUSANDS.sub("", named)))
    return [f"{v} {u}" for v, u in sorted(numbers(named))
            if u in SIZE_UNITS and u in units and (v, u) not in stated and v in written
            and not any(u == su and _rounds(v, sv) for sv, su in stated)]


def _rounds(asked: str, stated: str) -> bool:
    """A whole number a shopper rounds a stated size to: "10 inch" for 10.25 inches, "6 quarts" for 5.8."""
    try:
        a, s = float(asked), float(stated)
    except ValueError:
        return False
    return a.is_integer() and not s.is_integer() and a in (round(s), int(s))


def _name_words(text: str) -> list[str]:
    """Content words in order, hyphenated words split ("Tilt-Head" -> tilt, head), plurals folded."""
    out = []
    for w in words(text):
        if w in STOPWORDS:
            continue
        parts = [stem(p) for p in re.split(r"[-'.]", w) if p and p not in STOPWORDS]
        out.extend(parts or [stem(w)])
    return out


def _spelled_alike(a: str, b: str) -> bool:
    """One edit or swap apart ("relaxd", "glvoes"), or British and American spellings ("moisturising", "colour")."""
    if min(len(a), len(b)) < 5 or abs(len(a) - len(b)) > 2:
        return False
    if a.replace("our", "or").replace("is", "iz") == b.replace("our", "or").replace("is", "iz"):
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return (a[i + 1:] == b[i + 1:] or a[i:] == b[i + 1:] or a[i + 1:] == b[i:]
            or len(a) == len(b) and a[i + 2:] == b[i + 2:] and a[i:i + 2] == b[i:i + 2][::-1])


def _abbreviates(w: str, t: str) -> bool:
    """``w`` abbreviates ``t``: same first letter, its letters in order ("pc" for piece, "pb" for paperback)."""
    if len(w) >= len(t) or w[0] != t[0]:
        return False
    rest = iter(t)
    return all(c in rest for c in w)


_SUFFIX = re.compile(r"(?:ing|ers|er|ed|ions|ion|e)$")


def _root(w: str) -> str:
    """``w`` less one word-forming suffix, where 4 letters remain ("pruner", "pruning": "prun")."""
    bare = _SUFFIX.sub("", w)
    return bare if len(bare) >= 4 else w


def _carries(w: str, text: list[str], joined: set[str]) -> bool:
    if w in joined or w in text:
        return True
    root = _root(w)
    return any(t.startswith(w) or (len(t) >= 4 and w.startswith(t)) or _spelled_alike(w, t) or _abbreviates(w, t)
               or root == _root(t) for t in text)


def _initials(w: str, title: list[str]) -> bool:  # "hp" for Harry Potter, "lotr"
    n = len(w)
    return n >= 2 and any("".join(t[0] for t in title[i:i + n]) == w for i in range(len(title)))


def variant_conflicts(question: str, product: Product, in_ask: bool = True) -> list[str]:
    """The words of the question's naming part that name another product than ``product`` (see the module doc):
    ["oasi~paperwhite"] (words are stemmed) for "kindle oasis - how waterproof is it" against the Kindle Paperwhite, ["messiah+"] for
    "dune messiah paperback ..." against "Dune", ["5th~3rd"] for an "echo dot 5th gen" against the 3rd Gen. A non-empty
    list means ``product`` is a sibling of what was asked, not it. Only short naming parts are read
    (``VARIANT_MAX_WORDS``): a described product is named in the shopper's own words."""
    named = naming_part(question)
    # where the question opens with its ask, its last words may ask too ("is the dover thrift huck finn abridged"):
    # only a word standing inside the name, before a word of the title or a number, names a sibling ("garmin fenix 7")
    inside_only = not named
    named = named or (named_in_ask(question) if in_ask else "")
    if not named:
        return []
    asked = _name_words(named)
    # what it is for, or who it is by, does not name it: "rainbow kite for beginners", "clean code by uncle bob" (the
    # words after "for" or "by" are read for no sibling)
    naming_words = len(_name_words(_PURPOSE.split(named)[0])) or len(asked)
    found = model_number_conflicts(named, product)
    full = f"{product.title} {product.content or ''}"
    text = _name_words(full)
    joined = {a + b for a, b in zip(text, text[1:])} | {_flat(w) for w in words(full)}
    if len(asked) <= ACCESSORY_MAX_WORDS:
        # a part or accessory the product never mentions: "replacement beaker for a bodum chambord", "ninja foodi lid"
        found += [f"{w}!" for w in asked if w in ACCESSORY_WORDS and not _carries(w, text, joined)]
        found += format_conflicts(named, full)
    if len(asked) > VARIANT_MAX_WORDS:
        return found
    stated = set(_ORDINAL.findall(product.title.lower()))
    found += [f"{o}~{'/'.join(sorted(stated))}" for o in _ORDINAL.findall(named.lower()) if stated and o not in stated]
    title = _name_words(product.title)
    core = _name_words(_TITLE_CORE.split(product.title)[0])
    for i, w in enumerate(asked):
        if (w in GENERIC_NAME_WORDS or w in SIZE_UNITS or UNIT.fullmatch(w) or any(c.isdigit() for c in w)
                or _carries(w, text, joined) or _initials(w, title)
                or i + 1 < len(asked) and w + asked[i + 1] in joined or i and asked[i - 1] + w in joined
                or inside_only and not any(a in title or a.isdigit() or a in GENERIC_NAME_WORDS for a in asked[i + 1:])
                or i >= naming_words):
            continue
        for neighbour, step in ((i - 1, 1), (i + 1, -1)):
            if not 0 <= neighbour < len(asked) or asked[neighbour] not in core or any(c.isdigit() for c in asked[neighbour]):
                continue
            j = core.index(asked[neighbour]) + step
            if 0 <= j < len(core):  # the title has another word where the question has this one
                if core[j] not in asked and not any(c.isdigit() for c in core[j]):
                    found.append(f"{w}~{core[j]}")
            elif step == 1 and len(core) <= 3:  # extends a short title: "dune messiah" for "Dune"
                found.append(f"{w}+")
    return found


# A model number: a whole number, or one with a one-letter suffix ("3s"), standing alone after a name word.
_MODEL_NUMBER = re.compile(r"\d+[a-z]?")
# Words after a number that make it a count, not a model: "mini 4 pack", "k-cups 24 count".
_COUNTS = frozenset("pack pk packs count ct set sets piece pieces pcs pc per each x".split())
_ROMAN = {"ii": "2", "iii": "3", "iv": "4", "vi": "6", "vii": "7", "viii": "8"}  # not i, v, x: letters too
_YEAR = re.compile(r"(?:19|20)\d\d")  # "MacBook Air 2020", "(2021 release)": a year, not a model


def _model_number(token: str) -> str:
    """"10k" is 10000, as shoppers abbreviate a capacity or a count."""
    return str(int(token[:-1]) * 1000) if token.endswith("k") and token[:-1].isdigit() else token


def _numbered(text: str) -> list[tuple[str, str, str]]:
    """(name word, model number, as written) of ``text``: a word of letters followed by a number that is not a size
    (a unit after it, or an inch mark: 6"), a range, a decimal, a quantity or a year ("QuietComfort 35 II" ->
    ("quietcomfort", "35", "35"); not "Duo 6 Quart", "4-Pack", "MacBook Air 2020")."""
    tokens = _WORD.findall(_THOUSANDS.sub("", text.lower()))
    pairs = []
    for i in range(1, len(tokens)):
        word, raw = tokens[i - 1].strip(".,;:!?()[]\"'"), tokens[i].rstrip(",;:!?)]'").lstrip("([\"'")
        raw = _ROMAN.get(raw, raw)  # "frozen ii", "Planet Earth II"
        number = raw.rstrip("\"")
        following = tokens[i + 1].strip(".,;:!?()[]") if i + 1 < len(tokens) else ""
        if (word.isalpha() and word not in STOPWORDS and word not in GENERIC_NAME_WORDS and _MODEL_NUMBER.fullmatch(number)
                and number == raw and not _YEAR.fullmatch(number)
                and not UNIT.fullmatch(number) and not UNIT.fullmatch(following) and following not in SIZE_UNITS
                and following not in _COUNTS and not following.startswith(("-pack", "-count", "-piece"))):
            pairs.append((stem(word), _model_number(number), number))
    return pairs


def model_number_conflicts(named: str, product: Product) -> list[str]:
    """Model numbers of the naming part ``named`` that ``product``'s title gives another number after the same word:
    "bose quietcomfort 45" against "Bose QuietComfort 35 II" (["45~35"]), "jbl flip 6" against the Flip 5, "mx master
    3s" against the MX Master 3; or, other than 1, that extends a title of at most 2 words, a sequel ("frozen 2" against
    "Frozen (Blu-ray + DVD)": ["2+"]; not "crocs classic clog 10", a size). A number the title carries anywhere (as
    written, "4k", too) is no conflict, unless the title gives it after another name word and the question's word is
    nowhere in the title: "jbl charge 5" against the "JBL Flip 5" (["charge~flip"]; "charge" is in its description,
    so the sibling rule's word test passes it)."""
    title = product.title.lower()
    carried = {t.strip(".,;:!?()[]\"'") for t in _WORD.findall(_THOUSANDS.sub("", title))}
    carried |= {o[:-2] for o in _ORDINAL.findall(title)}  # "airpods pro 2": "(2nd Generation)"
    numbered = _numbered(product.title)
    given = {w: n for w, n, _ in numbered}
    named_by = {n: w for w, n, _ in numbered}
    core = _name_words(_TITLE_CORE.split(product.title)[0])
    title_words, asked = _name_words(product.title), set(_name_words(named))  # a typo'd title word ("flipp") carries
    found = []
    for w, n, written in _numbered(named):
        if n in named_by and named_by[n] != w and not _carries(w, title_words, set()) and named_by[n] not in asked:
            found.append(f"{w}~{named_by[n]}")  # the title's number after another word: "jbl charge 5" / Flip 5
            continue
        if n in carried or written in carried:
            continue
        if w in given and given[w] != n:
            found.append(f"{n}~{given[w]}")
        elif w not in given and n != "1" and len(core) <= 2 and core and core[-1] == w:  # a sequel: "frozen 2"
            found.append(f"{n}+")
    return found


_ORDINALS = {w: i for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth".split(), 1)}
_ORDINALS.update({w: i for i, w in enumerate("one two three four five six seven eight nine ten".split(), 1)})
_SERIES_WORDS = r"(?:book|novel|volume|vol|installment|instalment|entry|part)"
# "the third hogwarts book", "the 2nd book", "book 3", "#2 in the series", "the sequel to ...".
_ASKED_POSITION = re.compile(rf"\b(?P<ord>{'|'.join(list(_ORDINALS)[:10])}|\d+(?:st|nd|rd|th))\s+(?:[\w'\u2019-]+\s+){{0,2}}?"
                             rf"{_SERIES_WORDS}s?\b|\b{_SERIES_WORDS}\s+(?:#\s*)?(?P<num>\d+|{'|'.join(list(_ORDINALS)[10:])})\b|"
                             r"\b(?P<sequel>sequel|follow[- ]up)\b", re.I)
_TITLE_POSITION = re.compile(rf"\b{_SERIES_WORDS}\s+(\d+)\b", re.I)


def _position(token: str) -> int:
    token = token.lower()
    return _ORDINALS[token] if token in _ORDINALS else int(re.match(r"\d+", token).group())


def series_conflicts(question: str, product: Product) -> list[str]:
    """A place in a series the question asks about ("the third hogwarts book", "book 2", "the sequel to ...") that
    ``product``'s title gives otherwise ("... (Book 1)"): ["3~1"], ["sequel~1"]. Read in the whole question: shoppers
    who describe a book say which one it is anywhere. A title without its place in a series is no conflict."""
    stated = {int(m.group(1)) for m in _TITLE_POSITION.finditer(product.title)}
    if not stated:
        return []
    found = []
    for m in _ASKED_POSITION.finditer(question):
        if m.group("sequel"):
            if stated == {1}:
                found.append("sequel~1")
        else:
            asked = _position(m.group("ord") or m.group("num"))
            if asked not in stated:
                found.append(f"{asked}~{'/'.join(map(str, sorted(stated)))}")
    return found

