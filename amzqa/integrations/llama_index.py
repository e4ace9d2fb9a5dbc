"""llama-index adapters: our retriever as a ``BaseRetriever`` (and, with issue #4, our generator as an LLM).

We expose adapters only and keep our own store and indexes: llama-index's FaissVectorStore keeps no text,
adds vectors one by one and its JSON docstore takes minutes to load at this scale.

    from amzqa.retrieval import load_retriever
    from amzqa.integrations.llama_index import AmzqaRetriever
    li_retriever = AmzqaRetriever(load_retriever("runs/demo/artifacts"), k=5)
    nodes = li_retriever.retrieve("cordless kettle")     # list[NodeWithScore]; node.metadata["uid"]
"""

from __future__ import annotations

from typing import Any

from amzqa.optional import require
from amzqa.records import Hit

require("llama_index.core", "llamaindex")

from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402


def hit_to_node(hit: Hit) -> NodeWithScore:
    p = hit.product
    node = TextNode(
        id_=p.uid,
        text=f"{p.title}\n{p.content}".strip(),
        metadata={"uid": p.uid, "title": p.title, "row_id": p.row_id, "rank": hit.rank, "found_by": list(hit.found_by)},
        excluded_llm_metadata_keys=["row_id", "rank", "found_by"],
        excluded_embed_metadata_keys=["row_id", "rank", "found_by"],
    )
    return NodeWithScore(node=node, score=hit.score)


class AmzqaRetriever(BaseRetriever):
    """Any amzqa :class:`~amzqa.retrieval.Retriever` as a llama-index retriever."""

    def __init__(self, retriever: Any, k: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._retriever = retriever
        self._k = k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [hit_to_node(h) for h in self._retriever.retrieve(query_bundle.query_str, k=self._k)]


# ---------------------------------------------------------------- generator as an LLM, QA as a query engine

from llama_index.core.base.response.schema import Response  # noqa: E402
from llama_index.core.llms import CompletionResponse, CompletionResponseGen, CustomLLM, LLMMetadata  # noqa: E402
from llama_index.core.llms.callbacks import llm_completion_callback  # noqa: E402
from llama_index.core.query_engine import CustomQueryEngine  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402


def _prompt_from_text(text: str):
    from amzqa.generation.prompt import Prompt

    return Prompt(question=text, sources=(), messages=({"role": "user", "content": text},), catalog=False)


class AmzqaLLM(CustomLLM):
    """An amzqa generator (usually :class:`~amzqa.generation.HFGenerator`) as a llama-index LLM.

    llama-index hands over a finished prompt string; it is sent as one user turn through the model's chat template.
    """

    context_window: int = 8192
    num_output: int = 96
    model_name: str = "amzqa"
    _generator: Any = PrivateAttr()

    def __init__(self, generator: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._generator = generator
        cfg = getattr(generator, "config", None)
        if cfg is not None:
            self.num_output = cfg.max_new_tokens
            self.model_name = str(cfg.model)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.num_output, model_name=self.model_name)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._generator.generate(_prompt_from_text(prompt)))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = ""
        for piece in self._generator.stream(_prompt_from_text(prompt)):
            text += piece
            yield CompletionResponse(text=text, delta=piece)


class AmzqaQueryEngine(CustomQueryEngine):
    """Our retriever + generator + citation check behind llama-index's query-engine interface.

    ``response.source_nodes`` are the sources shown to the model (uid in metadata); ``response.metadata`` holds
    the checked citations and the abstention flag.
    """

    qa: Any

    def custom_query(self, query_str: str) -> Response:
        answer = self.qa.ask(query_str)
        return Response(
            response=answer.text,
            source_nodes=[hit_to_node(h) for h in answer.sources],
            metadata={
                "abstained": answer.abstained,
                "citations": [{"marker": c.marker, "uid": c.uid, "title": c.title, "attributed": c.attributed} for c in answer.citations],
                "timings": answer.timings,
            },
        )
