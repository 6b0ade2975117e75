"""Generation: prompts, context packing, the llama.cpp generator, routing."""
