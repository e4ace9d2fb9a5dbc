"""Artifact layout: the format tags and file names of every folder amzqa writes, defined once.

Build time (``indexing``, ``training``) writes these folders and query time reads them; both import the names from
here, so a renamed file cannot leave a reader looking for the old one.
"""

from __future__ import annotations

MANIFEST = "manifest.json"  # every sealed folder: what it holds, how it was made, a checksum of each file

# Prepared corpus (amzqa prepare)
CORPUS_FORMAT = "amzqa-corpus/1"
CORPUS_SHARDS = "shards"
CORPUS_STATS = "stats.json"
CORPUS_QUARANTINE = "quarantine.jsonl"

# Index artifact (amzqa index); format 2: fusion.json sealed in, the manifest checksums itself.
INDEX_FORMAT = "amzqa-index/2"
PRODUCTS_FILE = "products.arrow"
UID_KEYS_FILE = "uid_keys.npy"
UID_ROWS_FILE = "uid_rows.npy"
EMBEDDINGS_FILE = "embeddings.f16.npy"
DENSE_FILE = "dense.faiss"
LEXICAL_DIR = "bm25"
LEXICAL_TOKENS_DIR = "bm25_tokens"  # the documents' token ids, so an update tokenises only what changed
FUSION_FILE = "fusion.json"
STATIC_MODEL_DIR = "static_model"  # a static-embedding index's own model2vec model (its queries need exactly it)

# SFT data (amzqa sft-data)
SFT_FORMAT = "amzqa-sft/1"
SFT_DATASET = "dataset"
SFT_HELDOUT = "heldout.json"

# Beside an adapter, a merged model or an exported one
ADAPTER_PROVENANCE = "amzqa_adapter.json"
ABSTENTION_CALIBRATION = "amzqa_abstention.json"
EXPORT_MANIFEST = "amzqa_export.json"


def trained_prompt(folder) -> dict:
    """The prompt an adapter (or a merged/exported model of one) was trained on, as its SFT data recorded it
    (``k``, ``excerpt_chars``, ``target``...): from the adapter's provenance or an export's manifest; {} if none."""
    import json
    from pathlib import Path

    if not folder:
        return {}
    folder = Path(folder)
    try:
        if (folder / ADAPTER_PROVENANCE).is_file():
            prov = json.loads((folder / ADAPTER_PROVENANCE).read_text())
        elif (folder / EXPORT_MANIFEST).is_file():
            prov = json.loads((folder / EXPORT_MANIFEST).read_text()).get("adapter_provenance") or {}
        else:
            return {}
    except (OSError, ValueError):
        return {}
    return prov.get("data", {}).get("prompt", {}) or {}
