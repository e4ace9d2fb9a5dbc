"""Running the models: engine venvs, the OpenAI-compatible servers (vLLM, llama.cpp), what this machine can do,
and the optional allocator for CPU training."""
