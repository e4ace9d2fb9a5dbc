"""The page's own words in English and in Brazilian Portuguese; the page follows the question's language unless the
sidebar's language switch fixes one. Product text is never translated here (it is the catalog's)."""

from __future__ import annotations

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Ask the catalog", "settings": "Settings", "k": "Sources (k)", "mode": "Retriever",
        "generator": "Generator", "language": "Language", "index": "Index", "examples": "Examples",
        "question": "Your question", "placeholder": "e.g. Is the Lodge skillet dishwasher safe?", "ask": "Ask",
        "answer": "Answer", "unsupported": "{n} sentence(s) the model wrote were removed: no source says them.",
        "evidence": "Evidence", "says": "says", "catalog_says": "What the catalog does say", "timings": "Timings",
        "sources": "Sources", "cited": "cited", "found_by": "found by", "no_description": "no description",
        "retrieved": "Retrieved products", "translated": "Asked in Portuguese; the English catalog was searched for: {q}",
        "base": "base model", "adapter": "fine-tuned adapter", "server": "server ({model})", "extractive": "extractive (no model)",
        "auto": "follow the question",
        "no_index": "No index artifact at {path}. Build it with `make demo`, or with `amzqa prepare --input "
                    "trn.json.gz --out runs/corpus` then `amzqa index --corpus runs/corpus --out` {path}.",
        "generation_failed": "The answer could not be completed: {error}",
    },
    "pt": {
        "title": "Pergunte ao catálogo", "settings": "Configurações", "k": "Fontes (k)", "mode": "Busca",
        "generator": "Gerador", "language": "Idioma", "index": "Índice", "examples": "Exemplos",
        "question": "Sua pergunta", "placeholder": "ex.: A frigideira Lodge pode ir na lava-louças?", "ask": "Perguntar",
        "answer": "Resposta", "unsupported": "{n} frase(s) escrita(s) pelo modelo removida(s): nenhuma fonte as afirma.",
        "evidence": "Evidência", "says": "diz", "catalog_says": "O que o catálogo diz", "timings": "Tempos",
        "sources": "Fontes", "cited": "citada", "found_by": "encontrado por", "no_description": "sem descrição",
        "retrieved": "Produtos encontrados", "translated": "Pergunta em português; o catálogo (em inglês) foi consultado com: {q}",
        "base": "modelo base", "adapter": "adaptador ajustado", "server": "servidor ({model})", "extractive": "extrativo (sem modelo)",
        "auto": "seguir a pergunta",
        "no_index": "Nenhum índice em {path}. Crie-o com `make demo`, ou com `amzqa prepare --input trn.json.gz "
                    "--out runs/corpus` e depois `amzqa index --corpus runs/corpus --out` {path}.",
        "generation_failed": "Não foi possível concluir a resposta: {error}",
    },
}
EXAMPLES = {
    "en": ["Is the JBL Flip 5 waterproof?", "What ages is the LEGO Classic brick box for?",
           "How long does the Sony WH-1000XM4 battery last?", "Who illustrated Goodnight Moon?"],
    "pt": ["A caixa de som JBL Flip 5 é à prova d'água?", "Para que idade é a caixa de peças LEGO Classic?",
           "Quanto dura a bateria do fone Sony WH-1000XM4?", "Quem ilustrou o livro Goodnight Moon?"],
}
LANGUAGES = {"auto": None, "en": "English", "pt": "Português"}


def page_language(choice: str, answer) -> str:
    """The switch's language, or with 'auto' the last answer's (Portuguese questions get a Portuguese page)."""
    if choice in ("en", "pt"):
        return choice
    return "pt" if answer is not None and getattr(answer, "language", "en") == "pt" else "en"
