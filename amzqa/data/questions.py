"""Shopper questions written from catalog records, with realistic noise.

Three kinds:

* ``title``: the question mentions the product (templates; lower-casing, typos, partial titles, extra words);
* ``content``: written from the description only, with every word of the title removed, so the title cannot
  be matched literally — the hard case for lexical retrieval;
* ``fact``: the question names the product and asks for one fact its description states (an age range, a battery
  life, a page count, care instructions, a material, an author, what is included...); ``Question.sentence`` is the
  description sentence that holds the answer;
* ``pt``: a Brazilian shopper's question in Portuguese about a product of the English catalog: Portuguese templates,
  the title's generic words in Portuguese (livro, capa, fone de ouvido, panela: a glossary, so the set does not
  depend on the translator it evaluates) put first as Portuguese word order does, names and models as written,
  with the same noise as the English questions.

Used by the retrieval and generation evaluations and by the SFT data builder (with disjoint products).
"""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass

from amzqa.grounding.facts import Fact, fact_of
from amzqa.records import Product
from amzqa.retrieval.base import title_key

TITLE_TEMPLATES = (
    "{t}",
    "do you have {t}?",
    "looking for {t}",
    "tell me about {t}",
    "what can you tell me about the {t}?",
    "is {t} any good?",
    "{t} details please",
    "i want to buy {t}",
    "is the {t} {a}?",
    "{t}: {aq}",
    "{aq} ({t})",
)
# What shoppers ask about a product they name; the answer may or may not be in the description.
ATTRIBUTES = ("dishwasher safe", "waterproof", "machine washable", "suitable for kids", "good for beginners",
              "covered by a warranty", "easy to clean", "worth the price", "a good gift", "durable")
ATTRIBUTE_QUESTIONS = ("how long does it last?", "what size is it?", "what is it made of?", "who is it by?",
                       "what comes in the box?", "what ages is it for?", "does it need batteries?", "how do i clean it?")
CONTENT_TEMPLATES = (
    "which product {s}?",
    "i'm looking for something that {s}",
    "do you sell anything where {s}?",
    "find me the item described as: {s}",
)
PT_TITLE_TEMPLATES = (
    "{t}",
    "vocês têm {t}?",
    "procuro {t}",
    "me fale sobre {t}",
    "o que você pode me dizer sobre {t}?",
    "{t} é bom?",
    "quero comprar {t}",
    "{t} é {a}?",
    "{t}: {aq}",
    "qual é a descrição do {t}?",
)
PT_ATTRIBUTES = ("à prova d'água", "lavável na máquina", "bom para crianças", "bom para iniciantes", "fácil de limpar",
                 "durável", "um bom presente", "resistente", "confortável", "original")
PT_ATTRIBUTE_QUESTIONS = ("quanto tempo dura?", "qual é o tamanho?", "é feito de quê?", "quem é o autor?",
                          "o que vem na caixa?", "para que idade é?", "precisa de pilhas?", "como eu limpo?",
                          "tem garantia?", "vale a pena?")
# The generic words of catalog titles as a Brazilian shopper writes them (the sample catalog's commonest); names,
# brands and models stay as written.
PT_GLOSSARY = {
    "book": "livro", "books": "livros", "edition": "edição", "paperback": "brochura", "hardcover": "capa dura",
    "cover": "capa", "case": "capa", "guide": "guia", "cookbook": "livro de receitas", "novel": "romance",
    "series": "série", "collection": "coleção", "history": "história", "library": "biblioteca", "notes": "notas",
    "headphones": "fone de ouvido", "earbuds": "fone de ouvido", "headset": "fone de ouvido", "speaker": "caixa de som",
    "wireless": "sem fio", "portable": "portátil", "waterproof": "à prova d'água", "charger": "carregador",
    "charging": "carregamento", "cable": "cabo", "battery": "bateria", "batteries": "pilhas", "rechargeable": "recarregável",
    "camera": "câmera", "display": "tela", "screen": "tela", "remote": "controle remoto", "adapter": "adaptador",
    "plug": "tomada", "smart": "inteligente", "digital": "digital", "electric": "elétrico", "cordless": "sem fio",
    "laptop": "notebook", "card": "cartão", "power": "energia", "desk": "mesa", "lamp": "luminária", "light": "luz",
    "skillet": "frigideira", "pan": "panela", "pot": "panela", "cooker": "panela elétrica", "kettle": "chaleira",
    "blender": "liquidificador", "coffee": "café", "maker": "cafeteira", "espresso": "expresso", "cup": "xícara",
    "cups": "xícaras", "glass": "vidro", "bottle": "garrafa", "flask": "garrafa térmica", "tumbler": "copo térmico",
    "kitchen": "cozinha", "cooking": "culinária", "baking": "assadeira", "sheet": "forma", "board": "tábua",
    "knife": "faca", "scale": "balança", "processor": "processador", "chopper": "picador", "rice": "arroz",
    "food": "alimentos", "water": "água", "salt": "sal", "iron": "ferro", "cast": "fundido", "steel": "aço",
    "stainless": "inox", "aluminum": "alumínio", "wood": "madeira", "wooden": "de madeira", "cotton": "algodão",
    "wool": "lã", "shirt": "camiseta", "dress": "vestido", "jacket": "jaqueta", "hoodie": "moletom", "shoes": "tênis",
    "sleeve": "manga", "short": "curta", "men": "masculino", "women": "feminino", "kids": "infantil", "baby": "bebê",
    "toy": "brinquedo", "game": "jogo", "pieces": "peças", "piece": "peças", "set": "conjunto", "kit": "kit",
    "pack": "pacote", "gift": "presente", "mat": "tapete", "stand": "suporte", "chair": "cadeira", "table": "mesa",
    "bag": "bolsa", "backpack": "mochila", "watch": "relógio", "ring": "anel", "black": "preto", "white": "branco",
    "red": "vermelho", "blue": "azul", "green": "verde", "grey": "cinza", "gray": "cinza", "brown": "marrom",
    "navy": "azul-marinho", "dark": "escuro", "large": "grande", "mini": "mini", "classic": "clássico",
    "original": "original", "vintage": "vintage", "deluxe": "luxo", "premium": "premium", "professional": "profissional",
    "adjustable": "ajustável", "reusable": "reutilizável", "natural": "natural", "beginners": "iniciantes",
    "learning": "aprendizado", "running": "corrida", "yoga": "ioga", "indoor": "interno", "round": "redondo",
    "inch": "polegadas", "inches": "polegadas", "oz": "oz", "quart": "litros", "liter": "litro",
}
_WORD = re.compile(r"[\w'-]+")
_STOP = frozenset("a an and the of for to in on with by at from or is are it this that its as be your you our".split())


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    uid: str
    row_id: int
    kind: str  # "title", "content" or "fact"
    sentence: str = ""  # fact questions: the description sentence that answers it


def _typo(word: str, r: random.Random) -> str:
    if len(word) < 5:
        return word
    i = r.randrange(1, len(word) - 2)
    op = r.random()
    if op < 0.4:  # swap neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op < 0.7:  # drop a letter
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double a letter


def noisy_title(title: str, r: random.Random) -> str:
    words = title.split()
    if len(words) > 4 and r.random() < 0.4:  # partial title: what people remember
        start = 0 if r.random() < 0.7 else r.randrange(0, len(words) - 3)
        words = words[start:start + r.randint(3, min(6, len(words) - start))]
    if r.random() < 0.3:
        j = r.randrange(len(words))
        words[j] = _typo(words[j], r)
    text = " ".join(words)
    return text.lower() if r.random() < 0.6 else text


def title_question(p: Product, r: random.Random) -> Question:
    template = r.choice(TITLE_TEMPLATES)
    text = template.format(t=noisy_title(p.title, r), a=r.choice(ATTRIBUTES), aq=r.choice(ATTRIBUTE_QUESTIONS))
    return Question(text, p.uid, p.row_id, "title")


def portuguese_name(title: str, r: random.Random) -> str:
    """The product as a Brazilian shopper names it: the kind of thing in Portuguese, first (substantivo antes do
    modificador: "fone de ouvido sem fio JBL Tune 510BT"), then the rest as written. The kind is the last one or two
    generic words of the title (where English titles put it: "... Portable Waterproof Speaker"); partial titles,
    typos and lower case as in :func:`noisy_title`."""
    words = noisy_title(title, r).split()
    generic = [i for i, w in enumerate(words) if w.casefold().strip("(),:") in PT_GLOSSARY]
    moved = generic[-r.randint(1, 2):] if generic else []
    kind = [PT_GLOSSARY[words[i].casefold().strip("(),:")] for i in moved]
    if not kind and r.random() < 0.5:  # a title of names only (many books): Portuguese names the kind of thing
        kind = [r.choice(("livro", "produto"))]
    rest = [w for i, w in enumerate(words) if i not in moved]
    return " ".join(list(dict.fromkeys(kind)) + rest) or title


def portuguese_question(p: Product, r: random.Random) -> Question:
    template = r.choice(PT_TITLE_TEMPLATES)
    text = template.format(t=portuguese_name(p.title, r), a=r.choice(PT_ATTRIBUTES), aq=r.choice(PT_ATTRIBUTE_QUESTIONS))
    return Question(capitalised(text, r), p.uid, p.row_id, "pt")


def content_question(p: Product, r: random.Random, min_words: int = 5, max_words: int = 12) -> Question | None:
    """A question from a span of the description with the title's words removed; None if too little is left."""
    title_words = {w.casefold() for w in _WORD.findall(p.title)}
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", p.content) if s]
    r.shuffle(sentences)
    for sentence in sentences:
        words = [w for w in _WORD.findall(sentence) if w.casefold() not in title_words]
        content_words = [w for w in words if w.casefold() not in _STOP]
        if len(content_words) < min_words // 2 + 1 or len(words) < min_words:
            continue
        start = r.randrange(0, max(1, len(words) - max_words + 1))
        span_words = words[start:start + max_words]
        # Shoppers paraphrase: drop about a quarter of the words and misspell one now and then.
        kept = [w for w in span_words if r.random() > 0.25] or span_words[:1]
        if r.random() < 0.3:
            j = r.randrange(len(kept))
            kept[j] = _typo(kept[j], r)
        span = " ".join(kept).lower()
        return Question(r.choice(CONTENT_TEMPLATES).format(s=span), p.uid, p.row_id, "content")
    return None


def short_name(title: str, r: random.Random) -> str:
    """The product as a shopper names it in a fact question: the title before its first comma or bracket, at most
    six words, lower-cased now and then."""
    head = re.split(r"\s[(\[]|, | - |: ", title, maxsplit=1)[0].strip() or title
    words = head.split()[:6]
    text = " ".join(words)
    return text.lower() if r.random() < 0.5 else text


def fact_questions(p: Product, r: random.Random, limit: int = 1, describe: float = 0.0) -> list[Question]:
    """Up to ``limit`` questions about single facts of the description, each with the sentence that answers it.

    With probability ``describe`` a question describes the product from another sentence of its description instead
    of naming it (:func:`described_name`), as shoppers do when they remember the story, not the title."""
    from amzqa.grounding.text import split_sentences

    sentences = split_sentences(p.content)
    found: list[tuple[Fact, str]] = []
    for sentence in sentences:
        fact = fact_of(sentence)
        if fact is not None and all(fact is not f for f, _ in found):
            found.append((fact, sentence))
    r.shuffle(found)
    out = []
    for fact, sentence in found[:limit]:
        template = r.choice(fact.templates)
        described = described_name(p, [s for s in sentences if fact_of(s) is not fact], r) if r.random() < describe else None
        if described is None:
            text = template.format(t=short_name(p.title, r))
        elif template.startswith("{t}") or r.random() < 0.5:  # "the novel about a marsh girl - how many pages?"
            asked = template.format(t="").strip(" :") if template.startswith("{t}") else template.replace("the {t}", "{t}").format(t="it")
            text = f"{described} - {asked}"
        else:
            text = template.replace("the {t}", "{t}").format(t=described)
        out.append(Question(capitalised(text, r), p.uid, p.row_id, "fact", sentence))
    return out


# Words too vague to ask about on their own (open_fact_questions).
_VAGUE = frozenset("this that these those their them they with from into over under about your have more most also "
                   "each every other than then when where which while what will would could should just only very "
                   "many much some such like make makes made ones".split())
# Shoppers ask about details no fact kind names ("what insole", "where is it made", "what awards did it win"), with a
# word of the sentence that states it around the product's name or description.
OPEN_TEMPLATES = ("{t} {w}?", "what about the {w} on the {t}?", "does the {t} have {w}?", "{t} - any {w}?",
                  "what {w} does the {t} have?", "{t}: {w}?", "tell me the {w} of the {t}", "{w} of the {t}?")
OPEN_ASKS = ("any {w}?", "what about the {w}?", "{w}?", "what {w} does it have?", "does it have {w}?", "tell me the {w}")


def open_fact_questions(p: Product, r: random.Random, limit: int = 1, describe: float = 0.0) -> list[Question]:
    """Up to ``limit`` questions about one description sentence each, asked with one or two of its own words that
    neither the title nor another sentence of the description has; ``Question.sentence`` is that sentence.

    Beside the typed fact questions (:func:`fact_questions`, thirteen kinds), they teach a selector that the answer is
    the sentence holding what is asked, not the one sharing most words with a question that names or describes the
    product: "frank herbert's epic about paul atreides on a desert planet - what awards?" is answered by "Winner of
    the Hugo and Nebula Awards", not by the sentence the description came from."""
    from amzqa.grounding.text import content_words, split_sentences

    if limit <= 0 or not p.content:
        return []
    sentences = split_sentences(p.content)
    named = content_words(p.title)
    options = []
    for i, sentence in enumerate(sentences):
        elsewhere = named.union(*(content_words(o) for j, o in enumerate(sentences) if j != i))
        own = [w for w in _WORD.findall(html.unescape(sentence))
               if len(w) > 3 and w.isalpha() and w.casefold() not in _VAGUE and (cw := content_words(w)) and not cw & elsewhere]
        if own:
            options.append((sentence, own))
    r.shuffle(options)
    out = []
    for sentence, own in options[:limit]:
        start = r.randrange(len(own))
        asked = " ".join(own[start:start + r.randint(1, 2)]).lower()
        template = r.choice(OPEN_TEMPLATES)
        described = described_name(p, [s for s in sentences if s != sentence], r) if r.random() < describe else None
        if described is None:
            text = template.format(t=short_name(p.title, r), w=asked)
        else:  # "the novel about a marsh girl - any awards?"
            text = f"{described} - " + r.choice(OPEN_ASKS).format(w=asked)
        out.append(Question(capitalised(text, r), p.uid, p.row_id, "fact", sentence))
    return out


# The kind of thing a described product is ("that novel where..."), when its title says it.
KINDS = frozenset("book novel cookbook guide memoir speaker headphones earbuds headset skillet pan pot kettle blender "
                  "toaster toy game puzzle kit bag backpack watch lamp chair camera charger bottle shirt jacket shoes "
                  "boots dress toothbrush helmet gloves pants tent knife mat dryer vacuum mouse keyboard".split())
DESCRIBED_TEMPLATES = ("the {k} about {s}", "that {k} where {s}", "the {k} with {s}", "the {k} that {s}")


def described_name(p: Product, sentences: list[str], r: random.Random, max_words: int = 8) -> str | None:
    """The product as a shopper describes it without naming it: a few words of one of ``sentences`` (its description
    other than the fact's own sentence) with the title's words removed, some dropped, lower-cased, now and then
    misspelt; None when no sentence leaves enough words."""
    title_words = {w.casefold() for w in _WORD.findall(p.title)}
    kind = next((w.casefold() for w in reversed(_WORD.findall(p.title)) if w.casefold() in KINDS), "one")
    # Sentences that state no fact of their own describe the product best; entities decoded ("Jane&#8217;s").
    ordered = sorted(r.sample(sentences, len(sentences)), key=lambda s: fact_of(s) is not None)
    for sentence in ordered:
        words = [w for w in _WORD.findall(html.unescape(sentence)) if w.casefold() not in title_words]
        if sum(w.casefold() not in _STOP for w in words) < 3:
            continue
        start = r.randrange(0, max(1, len(words) - max_words + 1))
        kept = [w for w in words[start:start + max_words] if r.random() > 0.2] or words[:3]
        if r.random() < 0.2:
            j = r.randrange(len(kept))
            kept[j] = _typo(kept[j], r)
        return r.choice(DESCRIBED_TEMPLATES).format(k=kind, s=" ".join(kept).lower())
    return None


def capitalised(question: str, r: random.Random) -> str:
    """Shoppers write "how many..." and "How many..." alike: half the questions start with a capital."""
    return question[:1].upper() + question[1:] if r.random() < 0.5 else question


def make_questions(products: list[Product], seed: int = 0, kinds: tuple[str, ...] = ("title", "content")) -> list[Question]:
    """One question per product and kind (content questions only for products with a description)."""
    r = random.Random(seed)
    out: list[Question] = []
    for p in products:
        if "title" in kinds:
            out.append(title_question(p, r))
        if "content" in kinds and p.content:
            q = content_question(p, r)
            if q is not None:
                out.append(q)
        if "pt" in kinds:
            out.append(portuguese_question(p, r))
    return out


def relevant_sets(store, golds: list[Product]) -> dict[str, set[str]]:
    """Each gold product plus its near-duplicate editions (same normalised title): any of them is a hit."""
    want = {title_key(p.title): p.uid for p in golds}
    groups: dict[str, set[str]] = {p.uid: {p.uid} for p in golds}
    for batch in store.table.select(["uid", "title"]).to_batches(max_chunksize=100_000):  # 2M titles at once: ~0.5 GiB
        for uid, title in zip(batch.column("uid").to_pylist(), batch.column("title").to_pylist()):
            gold = want.get(title_key(title))
            if gold is not None:
                groups[gold].add(uid)
    return groups
