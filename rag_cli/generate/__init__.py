"""Generation: prompts, context packing and narrowing, the generators (llama.cpp in this process, an
OpenAI-compatible server), the crash canary, the circuit breaker, and the checks after generation."""
