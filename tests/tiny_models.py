"""Tiny random models for fast tests (not package code)."""
from __future__ import annotations


def tiny_causal_lm(tokenizer, *, layers: int = 2, hidden: int = 64, seed: int = 0):
    """A tiny randomly initialised Llama-architecture model for ``tokenizer`` (fast tests and dry runs of the
    training code; its text is gibberish)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
