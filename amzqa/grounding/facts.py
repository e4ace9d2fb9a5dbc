"""Single facts a product description states, and the questions that ask for them.

Each :class:`Fact` kind has a pattern that finds it in a description sentence, a cue that finds a question asking
for it, and question templates. The prompt uses them to show the sentence a question asks about (a description
cut to its first characters hid "Hand wash only" from "is it dishwasher safe?"), and the question generator to
write fact questions for training and evaluation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from amzqa.grounding.text import content_words


@dataclass(frozen=True)
class Fact:
    name: str
    sentence: re.Pattern  # a description sentence that states this kind of fact
    cue: re.Pattern  # a question that asks for it
    templates: tuple[str, ...]  # {t}: the product as a shopper names it


def _fact(name: str, sentence: str, cue: str, *templates: str) -> Fact:
    return Fact(name, re.compile(sentence, re.I), re.compile(cue, re.I), templates)


FACTS: tuple[Fact, ...] = (
    _fact("ages", r"\bages? \d+(\.\d+)?( months)?( to |-| and up| and older)|\bfor (babies|toddlers) \d+|\bsuitable from birth",
          r"\bages?\b|\bhow old\b|\bkids?\b|\bchildren\b|\btoddlers?\b",
          "what ages is the {t} for?", "what age is {t} suitable for?", "{t}: what age range?",
          "what is the recommended age for the {t}?", "how old should kids be for the {t}?"),
    _fact("battery", r"\b(battery|playtime|playback|listening|play on one charge)\b.*\b\d+ (hours|days|weeks)\b"
          r"|\b\d+ (hours|days|weeks)\b.*\b(battery|playtime|playback|listening|of play)\b",
          r"\bbattery\b|\bhow long does\b.*\blast\b|\bon a charge\b|\bplaytime\b",
          "how long does the battery of the {t} last?", "{t} battery life?", "how many hours does the {t} run on a charge?",
          "what is the battery life of the {t}?", "how long does the {t} last on a full charge?"),
    _fact("pages", r"\b[\d,]+ pages\b", r"\bpages?\b|\bhow long is the book\b",
          "how many pages is {t}?", "{t}: how many pages?", "how many pages does {t} have?",
          "what is the page count of {t}?"),
    _fact("dishwasher", r"\bdishwasher|\bhand wash", r"\bdishwasher\b",
          "is the {t} dishwasher safe?", "can the {t} go in the dishwasher?", "{t} dishwasher safe?",
          "can i put the {t} in the dishwasher?"),
    _fact("care", r"\bhand wash|\bmachine wash|\bspot clean|\bwipe (clean|with)|\bsurface wash|\bdry clean|\btumble dry",
          r"\bclean\b|\bwash(ing|able)?\b|\bcare\b|\btumble\b|\bdry\b|\b(in|into) the dryer\b|\bdryer[- ]safe\b",
          "how do i clean the {t}?", "how should i wash {t}?", "{t} care instructions?",
          "what are the washing instructions for the {t}?", "how do i care for the {t}?"),
    _fact("material", r"\b\d+% [a-z]+|\bmade (of|from) |\b(stainless steel|cast iron|borosilicate glass|silicone|leather|"
          r"merino wool|hardwood|natural rubber|aluminum|canvas|porcelain|acetate)\b",
          r"\bmade (of|from)\b|\bmaterials?\b|\bfabric\b|\b(any|some|much) stretch\b|\bstretchy\b|\bdo(es)? (it|they) stretch\b",
          "what is the {t} made of?", "what material is {t}?", "{t}: what's it made of?", "what is {t} made from?"),
    _fact("people", r"\b(illustrated|translated|directed|performed|narrated) by\b|\bstarring\b",
          r"\billustrat|\btranslat|\bdirect|\bstarring\b|\bwho is in\b|\bwho made\b|"
          r"\bwho (did|drew|painted) the (pictures|drawings|art(work)?)\b",
          "who illustrated {t}?", "who is in {t}?", "who made {t}?"),
    _fact("author", r"^[A-Z][\w.]+(?: [A-Z][\w.]+){0,3}(?:'s|’s) (novel|book|memoir|guide|classic|story|epic|thriller|"
          r"picture book|science fiction|fable|comic|rhyming|bedtime)",
          r"\bwho wrote\b|\bauthor\b|\bwriter\b|\bwritten by\b|\bwho is it by\b",
          "who wrote {t}?", "who is the author of {t}?", "{t} author?",
          "who is the writer of {t}?"),
    _fact("included", r"\bincludes?\b|\bincluded\b|\bcomes with\b|\bnot included\b|\bsold separately\b",
          r"\bincluded?\b|\bcomes? with\b|\bin the box\b|\bsold separately\b",
          "what comes with the {t}?", "what is included with {t}?", "does {t} come with everything i need?",
          "what is in the box with the {t}?", "what does the {t} come with?"),
    _fact("size", r"\b\d+(\.\d+)? ?x ?\d+(\.\d+)?( ?x ?\d+(\.\d+)?)? ?(inches|inch|in|cm|mm|feet)\b|\bweighs?\b"
          r"|\b\d+(\.\d+)? (pounds|lb|ounces|kg|g)\b",
          r"\bhow big\b|\bsize\b|\bdimensions?\b|\bweigh|\bhow heavy\b|\bhow tall\b|\bhow wide\b",
          "how big is the {t}?", "what are the dimensions of {t}?", "how much does the {t} weigh?", "what size is the {t}?"),
    _fact("warranty", r"\b(\d+|one|two|three|five|ten|lifetime)[- ](year|month)?[- ]?(limited |full )?warranty\b"
          r"|\blifetime (warranty|guarantee)", r"\bwarranty\b|\bguarantee\b",
          "what warranty does the {t} have?", "is the {t} covered by a warranty?", "how long is the {t}'s warranty?"),
    _fact("power", r"\b\d+[- ]?(watts?|w)\b|\b\d+ (lumens|mah|gb|mbps|fps|megapixels?)\b",
          r"\bhow powerful\b|\bwatts?\b|\bspecs?\b|\bmegapixels?\b|\bfps\b|\blumens\b",
          "how powerful is the {t}?", "{t} specs?", "what are the specs of the {t}?"),
    _fact("capacity", r"\b\d+(\.\d+)?[- ](oz|ounce|quart|qt|liter|litre|cup|gallon)s?\b",
          r"\bhow much does\b.*\bhold\b|\bcapacity\b|\bhow many cups\b",
          "how much does the {t} hold?", "what capacity is the {t}?",
          "what is the capacity of the {t}?"),
    # Kinds found and asked for but not generated: the questions written for training and calibration are those of
    # the kinds above (a model trained on them learns to choose the sentence a kind's cue marks; these add cues).
    _fact("runtime", r"\b\d+ (minutes|mins?)\b",
          r"\brun ?time\b|\brunning time\b|\bhow long is the (movie|film|show|dvd|blu-?ray)\b|\bgame length\b"
          r"|\bhow long (is|does|do) (a|one|each) (game|round|match)\b|\blength of (a|one) game\b"),
    _fact("origin", r"\b(made|manufactured|assembled|produced|printed) in\b",
          r"\bwhere (is|are|was|were|does|do)\b.*\b(made|manufactured|produced|built|assembled)\b(?! (of|from|with)\b)"
          r"|\bmade in\b|\bcountry of origin\b"),
    _fact("distance", r"\bup to [\d,.]+ ?(feet|ft|meters|metres|m|yards|miles|km)\b",
          r"(?<!age )(?<!size )(?<!price )\brange\b|\bhow far\b|\bdrop (rating|test|protection|proof|resistan\w*)\b"),
    _fact("water", r"\bIP(X\d|\d\d)\b|\bwater(proof|[- ]resistant)\b",
          r"\bip ?rating\b|\bhow waterproof\b|\b(is|are) (it|they|the\b[^?]*) waterproof\b|\bwaterproof\?|"
          r"\bwater resistance\b|\bhow water[- ]?resistant\b"),
)


def fact_of(sentence: str) -> Fact | None:
    """The first kind of fact the sentence states that questions are written for (a kind with templates), or None."""
    return next((f for f in FACTS if f.templates and f.sentence.search(sentence)), None)


def asked_facts(question: str) -> tuple[Fact, ...]:
    """The kinds of fact the question asks for (usually none or one)."""
    return tuple(f for f in FACTS if f.cue.search(question))


def answers(sentence: str, asked: tuple[Fact, ...]) -> bool:
    """Whether the sentence states a fact of a kind the question asks for."""
    return any(f.sentence.search(sentence) for f in asked)


@cache
def fact_words() -> frozenset[str]:
    """The words a question uses to ask for a kind of fact (page, battery, dishwasher, wrote...): the content words
    of the fact question templates. They say what is asked, not which product."""
    return frozenset().union(*(content_words(t.replace("{t}", " ")) for f in FACTS for t in f.templates))
