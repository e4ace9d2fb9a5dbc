"""Whether a source supports a sentence: the check that decides what is shown to a shopper.

Word overlap alone lets "dishwasher safe [1]" stand against "Hand wash only", "30 hours" against "12 hours" and
"ages 4 to 9" against "ages 4 to 99". A sentence is supported by a product only when

* enough of its content words occur in the product's title and in one (or two neighbouring) description sentences,
  generic words a paraphrase adds ("features", "offers", "great") not counted;
* every number it states occurs in the product, with the same unit where it names one ("30 hours" needs "30 hours");
  spelled-out numbers count as digits;
* every material it names occurs in the product ("bamboo" against "cedar" fails);
* its polarity matches the evidence: a negation in the sentence and none in the evidence sentence (or the reverse)
  fails, as do known opposites ("dishwasher safe" against "hand wash only", "included" against "sold separately");
  a negative that the evidence states in other words ("not dishwasher safe" / "hand wash only") is accepted.

Rules, not a learned model: they are fast (microseconds per pair), they cannot be talked round, and no entailment
model is packaged here. ``tests/fixtures/support_pairs.jsonl`` holds the hand-labelled pairs they are measured on
(``benchmarks/bench_support.py`` reports precision and recall of the "supported" verdict).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from amzqa.grounding.text import content_words, split_sentences
from amzqa.records import Product

_MARKERS = re.compile(r"\[\s*\d+\s*(?:[,;]\s*\d+\s*)*\]")
# Words a paraphrase adds without stating anything the source must say.
GENERIC = frozenset(
    "feature featuring offer offering provide providing come coming came great perfect ideal excellent good nice "
    "also very really help allow allowing make making made keep design designed use used using available "
    "includes include included including each per both one just well while which that this it's its it "
    "product item book edition set kit model version type option customer shopper buyer user description "
    "according source catalog listed list lists say says state states mention mentions note describe described "
    "describes call called known contain contains containing has have having get gets like such other more "
    "much many some all also only can may might would could should let lets let's measure measuring sized "
    "author writer wrote written doesn't don't isn't aren't won't can't work works properly".split()
)
# Units a number can carry; a claim's "N unit" must occur as such in the product.
_UNIT = (r"(hours?|hrs?|minutes?|mins?|seconds?|days?|weeks?|months?|years?|pages?|pieces?|pcs|inch(?:es)?|in|cm|mm|"
         r"m|feet|foot|ft|pounds?|lbs?|lb|ounces?|oz|kg|g|grams?|quarts?|qt|liters?|litres?|l|ml|cups?|gallons?|"
         r"watts?|w|lumens|mah|gb|tb|mb|mbps|fps|megapixels?|mp|volts?|v|colou?rs?|players?|cards?|songs?|"
         r"tracks?|discs?|episodes?|chapters?|recipes?|percent|%|x)")
UNIT = re.compile(rf"{_UNIT}", re.I)  # a whole word that is a unit (UNIT.fullmatch): amzqa.grounding.identity
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?:\s*-\s*|\s*)" + rf"(?:{_UNIT}\b)?", re.I)
_NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                 "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "fifteen": "15",
                 "twenty": "20", "thirty": "30", "fifty": "50", "hundred": "100", "dozen": "12", "single": "1"}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b(?:[\s-]+" + rf"{_UNIT}\b)?", re.I)
MATERIALS = frozenset(
    "bamboo cedar oak pine maple walnut birch teak acacia beech wood wooden hardwood plywood mdf plastic abs "
    "polypropylene polycarbonate acrylic vinyl pvc silicone rubber latex foam steel stainless iron aluminum "
    "aluminium copper brass bronze titanium zinc chrome nickel gold silver platinum glass borosilicate ceramic "
    "porcelain stoneware earthenware clay stone marble granite concrete cotton polyester nylon spandex elastane "
    "lycra rayon viscose linen wool merino cashmere silk satin velvet fleece denim canvas leather suede "
    "microfiber felt tulle mesh jute hemp paper cardboard cork carbon fiberglass resin enamel"
    .split())
_NEGATION = re.compile(r"\b(not|no(?!\.?\s*\d)|never|without|none|cannot|can't|isn't|aren't|doesn't|don't|won't|wasn't|"
                       r"non|free of|only by hand|hand[- ]wash(ed|ing)?( only)?|sold separately)\b|n't\b", re.I)
# (asserted, opposite): a sentence matching the first is contradicted by evidence matching the second, and the
# reverse. The negated forms are written out so that "not dishwasher safe" is no assertion of "dishwasher safe".
_OPPOSITES = (
    (re.compile(r"(?<!not )(?<!isn't )(?<!never )\bdishwasher[- ]safe|\b(can|may) (go|be put|be washed) in the dishwasher"
                r"|\bin the dishwasher\b(?! is not)", re.I),
     re.compile(r"\bhand[- ]wash|\bnot dishwasher[- ]safe|\bnot (be )?(put|washed) in the dishwasher|\bwash by hand", re.I)),
    (re.compile(r"(?<!not )(?<!isn't )\b(is |are )?(fully )?(waterproof|water[- ]proof|submersible)\b", re.I),
     re.compile(r"\bnot (waterproof|water[- ]proof|submersible)|\bwater[- ]resistant|\bsplash[- ]proof|\bsplash[- ]resistant", re.I)),
    (re.compile(r"(?<!not )(?<!batteries )\b(is |are )?included\b|\bcomes? with\b", re.I),
     re.compile(r"\bnot included|\bsold separately|\bdoes not come with|\bdoesn't come with", re.I)),
    (re.compile(r"(?<!not )\bmachine[- ]washable|\bmachine[- ]wash", re.I),
     re.compile(r"\bdry[- ]clean only|\bhand[- ]wash only|\bspot[- ]clean only|\bnot machine[- ]washable", re.I)),
    (re.compile(r"(?<!not )\b(oven[- ]safe|microwave[- ]safe)", re.I),
     re.compile(r"\bnot (oven|microwave)[- ]safe", re.I)),
)
# Negative statements and the ways a source words the same fact without a negation word.
_SAME_NEGATIVE = (
    (re.compile(r"\bnot dishwasher[- ]safe|\bnot (go|be put|be washed) in the dishwasher|\bno dishwasher", re.I),
     re.compile(r"\bhand[- ]wash|\bwash by hand", re.I)),
    (re.compile(r"\bnot (be )?machine[- ]wash", re.I), re.compile(r"\b(hand[- ]wash|dry[- ]clean|spot[- ]clean)", re.I)),
    (re.compile(r"\bnot included|\bdoes(n't| not) come with", re.I), re.compile(r"\bsold separately|\bnot included", re.I)),
)
_GENERIC = frozenset(w[:6] if len(w) >= 7 and w.isalpha() else w for w in GENERIC)
_NAME = re.compile(r"(?<=[a-z,;:] )[A-Z][\w'’-]+")  # a capitalised word inside a sentence (not its first word)
COVERAGE = 0.75  # share of the sentence's content words the product must contain (see bench_support.py)
MAX_MISSING = 1  # and at most this many of them absent: a long sentence cannot carry two new details


@dataclass(frozen=True)
class Verdict:
    """Whether ``product`` supports a sentence; ``evidence``: the product's sentence (or title) that does, or the
    closest one; ``reason``: why not, empty when supported."""

    supported: bool
    coverage: float
    evidence: str
    reason: str = ""


def _words(text: str) -> set[str]:
    """Content words as the check compares them: possessives dropped ("Martin's" ~ "Martin"), words of 7+ letters
    cut to 6 ("required" ~ "require", "publisher" ~ "published"): a light stem that keeps "waterproof" apart from
    "water-resistant"."""
    out = set()
    for w in content_words(text):
        w = w.removesuffix("'s").removesuffix("’s")
        out.add(w[:6] if len(w) >= 7 and w.isalpha() else w)
    return out


def claim_text(sentence: str) -> str:
    """The sentence without its citation markers."""
    return " ".join(_MARKERS.sub(" ", sentence).split())


def states_something(sentence: str) -> bool:
    """A sentence with at least one content word that is not generic ("Yes.", "[1]" and "Great!" state nothing)."""
    return bool(_words(claim_text(sentence)) - _GENERIC)


def numbers(text: str) -> set[tuple[str, str]]:
    """(value, unit) pairs: "1,296 pages" -> ("1296", "page"); unit "" when none follows; words count as digits."""
    out: set[tuple[str, str]] = set()
    for m in _NUMBER.finditer(text):
        value = m.group(1).replace(",", "")
        if "." in value:
            value = value.rstrip("0").rstrip(".")
        out.add((value, _unit(m.group(2))))
    for m in _NUMBER_WORD.finditer(text):
        out.add((_NUMBER_WORDS[m.group(1).lower()], _unit(m.group(2))))
    return out


def _unit(u: str | None) -> str:
    if not u:
        return ""
    u = u.lower()
    aliases = {"hrs": "hour", "hr": "hour", "mins": "minute", "min": "minute", "lbs": "pound", "lb": "pound",
               "in": "inch", "inches": "inch", "ft": "foot", "feet": "foot", "pcs": "piece", "%": "percent",
               "litres": "liter", "litre": "liter", "l": "liter", "oz": "ounce", "qt": "quart", "g": "gram",
               "colours": "color", "colour": "color", "colors": "color", "w": "watt", "v": "volt", "mp": "megapixel"}
    u = aliases.get(u, u)
    return u[:-1] if len(u) > 3 and u.endswith("s") else u


def _numbers_match(claim: set[tuple[str, str]], source: set[tuple[str, str]]) -> str:
    values = {v for v, _ in source}
    units = {u for _, u in source if u}
    for value, unit in sorted(claim):
        if value not in values:
            return f"the number {value} is not in the source"
        # "1 pages" against "1,008 pages" (and a "Book 1"): a unit the source uses must carry the same number there
        if unit and (unit in units or any(v == value and u for v, u in source)) and (value, unit) not in source:
            return f"{value} {unit} is not in the source"
    return ""


_ABOUT = re.compile(r"\b(approximately|approx\.?|about|around|roughly|on average|an average of|average|typically|"
                    r"at least|over|more than|exactly)\s+(\d[\d,.]*)", re.I)
_UP_TO = re.compile(r"\b(up to|as much as|maximum of|max\.?)\s+(\d[\d,.]*)", re.I)


def _bound_conflict(claim: str, whole: str) -> str:
    """"approximately 10 weeks" or "at least 10 weeks" against "up to 10 weeks": a maximum is not a typical value."""
    maxima = {m.group(2).rstrip(".,") for m in _UP_TO.finditer(whole)}
    for m in _ABOUT.finditer(claim):
        if m.group(2).rstrip(".,") in maxima:
            return f"the source gives {m.group(2)} as a maximum ('up to'), not '{m.group(1)}'"
    return ""


def _units(product: Product) -> list[str]:
    """Where evidence is looked for: clauses ("Ages 6 to 10." apart from "iPad not included."), sentences, pairs of
    neighbouring sentences, the title; on a tie the smallest comes first, so a negation next door does not count."""
    sentences = split_sentences(product.content) if product.content else []
    clauses = [c for s in sentences for c in re.split(r"(?<=[.!?;])\s+", s) if c]
    pairs = [f"{a} {b}" for a, b in zip(sentences, sentences[1:])]
    return list(dict.fromkeys([*clauses, *sentences, *pairs, product.title]))


def _polarity_conflict(claim: str, evidence: str, whole: str) -> str:
    for asserted, opposite in _OPPOSITES:
        if asserted.search(claim) and opposite.search(whole) and not asserted.search(whole):
            return f"the source says {opposite.search(whole).group(0)!r}"
        if opposite.search(claim) and asserted.search(whole) and not opposite.search(whole):
            return f"the source says {asserted.search(whole).group(0)!r}"
    negated_claim, negated_evidence = bool(_NEGATION.search(claim)), bool(_NEGATION.search(evidence))
    if negated_claim != negated_evidence:
        if negated_claim and any(n.search(claim) and same.search(whole) for n, same in _SAME_NEGATIVE):
            return ""
        return "the sentence negates what the source states" if negated_claim else "the source negates what the sentence states"
    return ""


def judge(sentence: str, product: Product) -> Verdict:
    """Whether ``product`` (title and description) supports ``sentence`` (its markers ignored)."""
    claim = claim_text(sentence)
    words = _words(claim) - _GENERIC
    if not words:
        return Verdict(False, 0.0, "", "the sentence states nothing to check")
    whole = f"{product.title}. {product.content}"
    stated_as = ""
    for negative, same in _SAME_NEGATIVE:  # "not dishwasher safe" is stated by "Hand wash only."
        m, found = negative.search(claim), same.search(whole)
        if m and found:
            words -= _words(m.group(0))
            stated_as = found.group(0)
    if not words:
        return Verdict(True, 1.0, stated_as)
    title_words = _words(product.title)
    best, best_cov = product.title, -1.0
    for unit in _units(product):
        cov = len(words & (title_words | _words(unit))) / len(words)
        if cov > best_cov:
            best, best_cov = unit, cov
    missing = sorted(words - title_words - _words(best))
    names = {w for w in _words(" ".join(_NAME.findall(claim))) if w in missing}  # a name must be the source's
    if best_cov < COVERAGE or len(missing) > MAX_MISSING or names:
        return Verdict(False, best_cov, best, f"not in the source: {', '.join(missing[:4])}")
    reason = _numbers_match(numbers(claim), numbers(whole))
    if not reason:
        absent = sorted(m for m in content_words(claim) & MATERIALS if m not in content_words(whole))  # unstemmed
        reason = f"the source does not say {absent[0]}" if absent else ""
    if not reason:
        reason = _bound_conflict(claim, whole)
    if not reason:
        reason = _polarity_conflict(claim, best, whole)
    return Verdict(not reason, best_cov, best, reason)


def best_evidence(question: str, products: list[Product] | tuple[Product, ...]) -> tuple[int, str] | None:
    """(1-based source number, sentence) of the description sentence that shares the most words with the question,
    the source's title words counting too; None when nothing shares a word."""
    from amzqa.grounding.facts import answers, asked_facts

    asked, kinds = content_words(question), asked_facts(question)
    best, best_score = None, 0.0
    for n, product in enumerate(products, 1):
        title = asked & content_words(product.title)
        for s in split_sentences(product.content) if product.content else []:
            shared = len(asked & (title | content_words(s)))
            # the product named counts first (its title words twice), then the sentence's own words and fact kind
            score = shared + len(title) + 0.5 * len(asked & content_words(s)) + 2 * (shared > 0) * answers(s, kinds) - 0.01 * n
            if score > best_score:
                best, best_score = (n, s), score
    return best
