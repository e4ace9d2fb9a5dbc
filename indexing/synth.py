"""``amzqa synth``: a seeded generator of ``trn.json``-format catalogs at millions of records.

The real file is not redistributable here, so scale runs use records shaped like it (see
``shared/data/FACTS.md``): 5.6% empty titles, 33.3% empty contents, ~3.6% contents repeated from an earlier
record (book editions), lognormal title lengths (median 54 chars, IQR 37-75) and content lengths (median
398, IQR 194-805), HTML entities and tags, non-ASCII names, a few repeated uids. Output is byte-identical for
a given seed and size.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import json
import math
import random
from pathlib import Path

from amzqa.config import Config, doc
from amzqa.errors import ConfigError
from amzqa.progress import bar

# Lognormal parameters fitted to FACTS.md quantiles: median = exp(mu), p75/median = exp(0.674 * sigma).
TITLE_MU, TITLE_SIGMA = math.log(54), math.log(75 / 54) / 0.674
CONTENT_MU, CONTENT_SIGMA = math.log(398), math.log(805 / 398) / 0.674
TITLE_MAX, CONTENT_MAX = 1999, 197_622


@dataclasses.dataclass
class SynthConfig(Config):
    """Settings of ``amzqa synth`` (rates default to the real trn.json's, from FACTS.md)."""

    n: int = doc("Number of records (lines) to write.", 10_000)
    out: Path | None = doc("Output path; a name ending in .gz is gzip-compressed (deterministic header).", None)
    seed: int = doc("Random seed; the same seed and n give byte-identical output.", 0)
    empty_title_rate: float = doc("Share of records with an empty title.", 0.0564)
    empty_content_rate: float = doc("Share of records with an empty content.", 0.333)
    duplicate_content_rate: float = doc("Share of records repeating an earlier record's content (other editions).", 0.036)
    duplicate_uid_rate: float = doc("Share of records repeating an earlier uid.", 0.0005)
    entity_rate: float = doc("Share of records with HTML entities (a tenth of them double-encoded).", 0.08)
    tag_rate: float = doc("Share of contents with HTML tags.", 0.03)
    overwrite: bool = doc("Replace an existing output file.", False)

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ConfigError("n must be >= 0")
        for name in ("empty_title_rate", "empty_content_rate", "duplicate_content_rate", "duplicate_uid_rate",
                     "entity_rate", "tag_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1")


# ---------------------------------------------------------------- vocabulary

_FIRST = ("Anna", "James", "Maria", "David", "Sophie", "Thomas", "Elena", "Michael", "Claire", "Peter", "Ruth",
          "Samuel", "Hannah", "George", "Laura", "Jonathan", "Zoë", "José", "Renée", "Søren", "Chloé", "Björn",
          "Margaret", "Arthur", "Patricia", "Kenji", "Amara", "Olivia", "Henry", "Nadia")
_LAST = ("Holt", "Graham", "Berenstain", "Lewis", "Martin", "Fletcher", "Moen", "Sadler", "Walker", "Dunne",
         "Capra", "Ramsay", "Lampard", "Müller", "García", "Nørgaard", "O'Brien", "Kowalski", "Nakamura", "Okafor",
         "Hughes", "Bennett", "Ashford", "Whitaker", "Lindqvist", "Duval", "Moreau", "Fitzgerald", "Carver", "Reyes")
_ADJ = ("Silent", "Hidden", "Last", "Golden", "Broken", "Secret", "Little", "Wild", "Forgotten", "Bright",
        "Dark", "Lost", "Simple", "Complete", "Essential", "Illustrated", "Quiet", "Northern", "Burning", "Gentle")
_NOUN = ("Garden", "River", "Kingdom", "Journey", "Promise", "Lighthouse", "Winter", "Truth", "Shadow", "Harbor",
         "Orchard", "Letter", "Island", "Cookbook", "Guide", "Handbook", "Mountain", "Storm", "Bridge", "Season")
_TOPIC = ("Watercolour Painting", "Mindful Living", "Home Baking", "Gardening for Beginners", "Chess Strategy",
          "Small Business Finance", "Healthy Juicing", "Tarot Reading", "Bird Watching", "Woodworking",
          "Python Programming", "Marathon Training", "Italian Cooking", "Photography", "Meditation")
_SERIES = ("Bright & Early Books", "The Poldark novels", "Voyager Classics", "Beginner Series", "Cosmic Trilogy",
           "Pony Club Rivals", "Harper Perennial Classics", "Collins Gem", "Tales From Percy's Park", "Flamingo")
_FORMAT = ("[VHS]", "[DVD]", "(Paperback)", "(Hardcover)", "(Audio CD)", "[Blu-ray]", "(Large Print)", "(Kindle Edition)")
_BRAND = ("Acme", "Northwind", "Hamilton", "Kitchenaid", "Zephyr", "Lumio", "Tundra", "Pinewood", "Brightline",
          "Orca", "Velvet Fox", "Ironclad", "Maple & Co.", "Solace", "Crestview")
_COLOR = ("Black", "White", "Navy Blue", "Red", "Forest Green", "Pink", "Grey", "Stainless Steel", "Walnut", "Ivory")
_PRODUCTS = {
    "clothing": ("Cotton T-Shirt", "Tutu Skirt", "Wool Cardigan", "Rain Jacket", "Denim Jeans", "Running Socks",
                 "Fleece Hoodie", "Linen Dress", "Leather Belt", "Knit Beanie"),
    "toys": ("Wooden Train Set", "Building Blocks", "Plush Bunny", "Puzzle 500 Pieces", "Remote Control Car",
             "Dollhouse", "Board Game", "Kite", "Science Kit", "Stacking Rings"),
    "electronics": ("Bluetooth Speaker", "USB-C Charger", "Wireless Earbuds", "HDMI Cable", "Smart Plug",
                    "Portable Power Bank", "LED Desk Lamp", "Webcam 1080p", "Mechanical Keyboard", "Wireless Mouse"),
    "kitchen": ("Electric Kettle", "Chef's Knife", "Cast Iron Skillet", "Blender", "Coffee Grinder", "Mixing Bowls",
                "Cutting Board", "Toaster", "French Press", "Measuring Cups"),
    "sports": ("Yoga Mat", "Water Bottle", "Resistance Bands", "Tennis Racket", "Cycling Gloves", "Jump Rope",
               "Camping Tent", "Hiking Backpack", "Dumbbell Set", "Swim Goggles"),
    "beauty": ("Face Cream", "Shampoo", "Lip Balm", "Hair Dryer", "Nail Polish Set", "Body Lotion", "Beard Oil",
               "Makeup Brushes", "Sunscreen SPF 50", "Face Mask"),
}
_SIZES = ("Small", "Medium", "Large", "XL", "1.7 L", "500 ml", "10 inch", "Pack of 2", "Set of 3", "12 oz")
_FEATURES = ("dishwasher safe", "BPA free", "machine washable", "water resistant", "rechargeable", "hand made",
             "lightweight", "durable", "non-stick", "eco-friendly", "adjustable", "foldable", "hypoallergenic")
_BOOK_SENT = (
    "{first} {surname} tells the story of {name}, a {adj_l} {noun_l} keeper in {place}.",
    "When {name} meets {name2}, nothing in {place} stays the same.",
    "{first} {surname} is the author of the {name} books and lives in {city}.",
    "\"{name} is unforgettable,\" wrote the {place} Review.",
    "{first} {last} tells the story of a {adj_l} {noun_l} and the people who live beside it.",
    "\"A {adj_l} and moving novel,\" wrote the {city} Evening Mail.",
    "This edition includes a new introduction by {first} {last}.",
    "Set in {city}, the book follows a family over three generations.",
    "A practical guide to {topic_l}, with step-by-step exercises and illustrations.",
    "By {first} {last}, illustrated by {first2} {last2}.",
    "The {nth} book in the {series} series.",
    "Readers of all ages will enjoy this {adj_l} tale of courage and friendship.",
    "--This text refers to the {fmt_w} edition.",
    "Includes {n} recipes, tips and techniques for {topic_l}.",
    "{first} {last} is the author of more than {n} books and lives in {city}.",
    "First published in {year}, it remains a favourite of book clubs.",
)
_ITEM_SENT = (
    "The {pbrand} {model} is {feature} and {feature2}.",
    "Every {pbrand} product is designed in {place}.",
    "Model {model}: {color}, {size}.",
    "{pbrand} {name} series, made for {feature2} everyday use.",
    "The {brand} {product} is {feature} and {feature2}.",
    "Available in {color}; size {size}.",
    "Made from high quality materials for everyday use.",
    "Package includes: 1 x {product}, user manual.",
    "Perfect gift for birthdays, holidays and special occasions.",
    "Dimensions: {n} x {n2} x {n3} cm; weight {n} g.",
    "Backed by a {n}-month warranty from {brand}.",
    "Easy to clean: {feature}.",
    "Designed in {city} and tested for {feature2} use.",
    "Customers love it for its {adj_l} design.",
)
_CITIES = ("London", "Dublin", "Birmingham", "Coventry", "Aberdeen", "Seattle", "Toronto", "Melbourne", "Kyoto",
           "Lyon", "Grimsby", "Boston", "Austin", "Edinburgh", "Cape Town")
_ENTITIES = (("'", "&#x2019;"), ("&", "&amp;"), (" - ", " &#8211; "), ('"', "&quot;"), ("'", "&#8217;"))
_TAGS = ("<b>{}</b>", "<br />{}", "<p>{}</p>", "<i>{}</i>", "{}<br>")


_ONSETS = ("b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kr", "l", "m", "n", "p", "pr",
           "r", "s", "sh", "sk", "st", "t", "th", "tr", "v", "w", "z", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "y", "ie", "oa")
_CODAS = ("", "", "n", "r", "l", "s", "th", "ck", "m", "nd", "rt", "x", "ll")
LEXICON_SIZE = 500_000
ZIPF_S, ZIPF_Q = 1.0, 100  # Zipf-Mandelbrot: the commonest name ~0.1% of draws, as for surnames


class _Lexicon:
    """Seeded pseudo-words with Zipf-distributed use: the long tail of names real titles are full of.

    Real catalogs owe their retrievability to rare, product-specific words (authors, characters, places,
    brands, model names) that recur in the product's own description. A synthetic catalog drawn from a few
    hundred stock words makes millions of near-identical titles instead, which no retriever can tell apart.
    """

    def __init__(self, seed: int, size: int = LEXICON_SIZE) -> None:
        r = random.Random(f"lexicon-{seed}")
        words: dict[str, None] = {}
        while len(words) < size:
            word = "".join(r.choice(_ONSETS) + r.choice(_VOWELS) for _ in range(r.choice((1, 2, 2, 3)))) + r.choice(_CODAS)
            if len(word) >= 4:
                words.setdefault(word.capitalize())
        self.words = list(words)
        self.cum = list(itertools.accumulate(1.0 / (rank + ZIPF_Q) ** ZIPF_S for rank in range(1, size + 1)))

    def draw(self, r: random.Random) -> str:
        return r.choices(self.words, cum_weights=self.cum)[0]


class _Maker:
    def __init__(self, rng: random.Random, lexicon: _Lexicon | None = None) -> None:
        self.r = rng
        self.lex = lexicon or _Lexicon(0)
        self.identity: dict[str, str] = {}

    def new_identity(self) -> None:
        """The rare words of one product, shared by its title and its description."""
        r, w = self.r, self.lex.draw
        self.identity = {
            "name": w(r), "name2": w(r), "place": w(r), "surname": w(r), "brand": w(r),
            "model": f"{r.choice('ABCDEFGHJKLMNPRSTVWXZ')}{r.choice('ABCDEFGHJKLMNPRSTVWXZ0123456789')}-{r.randint(10, 9999)}",
        }

    def _fill(self, template: str) -> str:
        r = self.r
        c = r.choice
        ident = self.identity
        return template.format(
            name=ident["name"], name2=ident["name2"], place=ident["place"], surname=ident["surname"],
            pbrand=ident["brand"], model=ident["model"],
            first=c(_FIRST), last=c(_LAST), first2=c(_FIRST), last2=c(_LAST), adj_l=c(_ADJ).lower(),
            noun_l=c(_NOUN).lower(), city=c(_CITIES), topic_l=c(_TOPIC).lower(), series=c(_SERIES),
            nth=c(("first", "second", "third", "fourth")), fmt_w=c(("Paperback", "Hardcover", "Kindle")),
            n=r.randint(2, 120), n2=r.randint(2, 60), n3=r.randint(2, 40), year=r.randint(1950, 2014),
            brand=c(_BRAND), product=c(_PRODUCTS[c(tuple(_PRODUCTS))]).lower(), feature=c(_FEATURES),
            feature2=c(_FEATURES), color=c(_COLOR).lower(), size=c(_SIZES),
        )

    def title(self, kind: str, target: int) -> str:
        r, c = self.r, self.r.choice
        ident = self.identity
        if kind == "book":
            base = c((f"The {c(_ADJ)} {c(_NOUN)}", f"{c(_NOUN)} of {ident['name']}", f"The {c(_TOPIC)} {c(_NOUN)}",
                      f"{ident['name']} and the {c(_ADJ)} {c(_NOUN)}", f"The {ident['place']} {c(_NOUN)}",
                      f"{c(_ADJ)} {c(_NOUN)}s of {ident['place']}", f"{ident['name']}"))
            extras = [f": A Guide to {c(_TOPIC)}", f" ({c(_SERIES)}, Book {r.randint(1, 12)})", f" ({c(_SERIES)})",
                      f": {c(_ADJ)} Stories from {c(_CITIES)}", f" by {c(_FIRST)} {ident['surname']}", " " + c(_FORMAT)]
        elif kind == "media":
            base = c((f"{c(_ADJ)} {c(_NOUN)} of {ident['place']}", f"Worship with {c(_FIRST)} {ident['surname']}",
                      f"The {ident['name']} Sessions"))
            extras = [" " + c(_FORMAT), f" - Live in {c(_CITIES)}", " (Special Edition)", f": Season {r.randint(1, 9)}"]
        else:
            cat = c(tuple(_PRODUCTS))
            base = c((f"{ident['brand']} {c(_PRODUCTS[cat])}", f"{c(_BRAND)} {ident['model']} {c(_PRODUCTS[cat])}",
                      f"{ident['brand']} {ident['name']} {c(_PRODUCTS[cat])}"))
            extras = [f", {c(_COLOR)}", f", {c(_SIZES)}", f" - {c(_FEATURES).title()}", f" for {c(('Kids', 'Women', 'Men', 'Toddlers', 'Home'))}",
                      f" with {c(_FEATURES).title()} Design", f" ({c(_SIZES)})"]
        r.shuffle(extras)
        title = base
        for extra in extras:
            if len(title) >= target:
                break
            title += extra
        while len(title) < target:  # long-tail titles: keep adding descriptive phrases
            title += f", {c(_ADJ)} {c(_NOUN)}"
        if len(title) > target + 8:
            title = title[:target].rsplit(" ", 1)[0].rstrip(",:-( ")
        return title

    def content(self, kind: str, target: int) -> str:
        sentences = _BOOK_SENT if kind in ("book", "media") else _ITEM_SENT
        parts: list[str] = []
        size = 0
        while size < target:
            s = self._fill(self.r.choice(sentences))
            parts.append(s)
            size += len(s) + 1
        text = " ".join(parts)
        if len(text) > target + 20:
            text = text[:target].rsplit(" ", 1)[0]
        return text

    def uid(self, kind: str) -> str:
        r = self.r
        if kind == "book":
            return f"{r.randrange(10**9):09d}{r.choice('0123456789X')}"
        return "B" + "".join(r.choices("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=9))

    def mess(self, text: str, cfg: SynthConfig, tags: bool) -> str:
        r = self.r
        if r.random() < cfg.entity_rate:
            plain, ent = r.choice(_ENTITIES)
            if r.random() < 0.1:
                ent = ent.replace("&", "&amp;")  # double-encoded, as seen in the wild
            text = text.replace(plain, ent, 2) if plain in text else f"{text} {ent} more"
        if tags and r.random() < cfg.tag_rate:
            words = text.split(" ")
            i = r.randrange(len(words))
            words[i] = r.choice(_TAGS).format(words[i])
            text = " ".join(words)
        return text


def _lognormal(r: random.Random, mu: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, int(r.lognormvariate(mu, sigma))))


def iter_records(cfg: SynthConfig):
    """Yield record dicts in file order (deterministic for ``cfg.seed``)."""
    r = random.Random(cfg.seed)
    m = _Maker(r, _Lexicon(cfg.seed))
    kinds = ("book",) * 55 + ("media",) * 12 + ("item",) * 33
    recent: list[tuple[str, str, str]] = []  # (kind, title, content) to draw editions and duplicate content from
    uids: list[str] = []
    for i in range(cfg.n):
        kind = r.choice(kinds)
        uid = m.uid(kind)
        if uids and r.random() < cfg.duplicate_uid_rate:
            uid = r.choice(uids)
        if len(uids) < 50_000:
            uids.append(uid)
        elif r.random() < 0.01:
            uids[r.randrange(len(uids))] = uid
        if recent and r.random() < cfg.duplicate_content_rate:
            kind, base_title, content = r.choice(recent)
            # Another edition: same description, the title differs by its format (or not at all).
            title = f"{base_title.split(' [')[0].split(' (')[0]} {r.choice(_FORMAT)}" if r.random() < 0.7 else base_title
        else:
            m.new_identity()
            title = m.title(kind, _lognormal(r, TITLE_MU, TITLE_SIGMA, 3, TITLE_MAX))
            content = "" if r.random() < cfg.empty_content_rate else m.content(
                kind, _lognormal(r, CONTENT_MU, CONTENT_SIGMA, 12, CONTENT_MAX))
            if content and len(recent) < 20_000:
                recent.append((kind, title, content))
            elif content and r.random() < 0.05:
                recent[r.randrange(len(recent))] = (kind, title, content)
        if r.random() < cfg.empty_title_rate:
            title = ""
        yield {
            "uid": uid,
            "title": m.mess(title, cfg, tags=False),
            "content": m.mess(content, cfg, tags=True) if content else "",
            "target_ind": sorted(r.sample(range(1_305_265), r.choice((0, 0, 0, 1, 2, 3, 5, 8, 13, 18)))),
            "target_rel": None,
        }


def synth(cfg: SynthConfig, progress: bool | None = None) -> Path:
    """Write ``cfg.n`` records to ``cfg.out`` atomically; return the path."""
    if cfg.out is None:
        raise ConfigError("synth needs out")
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"{out} already exists; pass overwrite (CLI: --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as raw:
        # mtime=0 and no file name in the header keep .gz output byte-identical across runs.
        sink = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0, filename="") if out.suffix == ".gz" else raw
        buf = io.TextIOWrapper(sink, encoding="utf-8", write_through=False)
        dumps = json.JSONEncoder(ensure_ascii=False).encode
        with bar(progress, total=cfg.n, unit="rec", unit_scale=True, desc="synth") as pbar:
            for i, rec in enumerate(iter_records(cfg), 1):
                rec["target_rel"] = [1.0] * len(rec["target_ind"])
                buf.write(dumps(rec))
                buf.write("\n")
                if not i % 50_000:
                    pbar.update(50_000)
            pbar.update(cfg.n - pbar.n)
        buf.flush()
        buf.detach()
        if sink is not raw:
            sink.close()
    tmp.replace(out)
    return out
