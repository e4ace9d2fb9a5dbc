"""Our components inside llama-index-core (real library, real index)."""

from llama_index.core.schema import NodeWithScore, QueryBundle

from amzqa.integrations.llama_index import AmzqaRetriever


def test_retriever_returns_nodes_with_uid_metadata(retrievers):
    li = AmzqaRetriever(retrievers.hybrid, k=3)
    nodes = li.retrieve("cordless electric kettle")
    assert len(nodes) == 3 and all(isinstance(n, NodeWithScore) for n in nodes)
    top = nodes[0]
    assert top.node.metadata["uid"] == "B07X1KT6QK" == top.node.node_id
    assert top.node.metadata["title"].startswith("Hamilton Beach")
    assert "Boils up to 1.7 liters" in top.node.get_content()
    assert nodes[0].score >= nodes[1].score
    # Same answer through llama-index's QueryBundle entry point.
    assert [n.node.node_id for n in li.retrieve(QueryBundle("cordless electric kettle"))] == [n.node.node_id for n in nodes]


def test_llm_adapter_completes_and_streams(hf_generator):
    from amzqa.integrations.llama_index import AmzqaLLM

    llm = AmzqaLLM(hf_generator)
    assert llm.metadata.num_output == 24
    full = llm.complete("What is the capital of France? Answer in one word.")
    assert "Paris" in full.text
    chunks = list(llm.stream_complete("What is the capital of France? Answer in one word."))
    assert chunks[-1].text.strip() == full.text.strip() and all(c.delta is not None for c in chunks)


def test_a_calibrated_gate_applies_to_catalog_prompts_not_to_llama_index_prompts(hf_generator, monkeypatch):
    from amzqa.generation.abstention import Threshold
    from amzqa.generation.prompt import ABSTAIN_MESSAGE, build_prompt
    from amzqa.integrations.llama_index import AmzqaLLM
    from amzqa.records import Hit, Product

    monkeypatch.setattr(hf_generator, "abstain_threshold", Threshold(-1e9), raising=False)  # fitted: always abstain
    catalog = build_prompt("Tell me about this one.", [Hit(Product(0, "U1", "JBL Flip 5", "IPX7 waterproof speaker."), 1.0, 1)])
    assert hf_generator.generate(catalog) == ABSTAIN_MESSAGE
    assert "Paris" in AmzqaLLM(hf_generator).complete("What is the capital of France? Answer in one word.").text


def test_query_engine_answers_with_source_nodes(qa_extractive):
    from amzqa.integrations.llama_index import AmzqaQueryEngine

    engine = AmzqaQueryEngine(qa=qa_extractive)
    response = engine.query("Is the JBL Flip 5 waterproof?")
    assert "IPX7" in str(response)
    assert response.source_nodes[0].node.metadata["uid"] == "B07QXV6N1B"
    assert response.metadata["citations"][0]["uid"] == "B07QXV6N1B" and response.metadata["abstained"] is False
