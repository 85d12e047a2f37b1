"""transformers `generate` throughput on a random-weight Llama at the reference shape, torch CPU.

  benchmarks/.venvs/trl/bin/python benchmarks/peers/hf_generate.py [--batches 1 64]

Prompts of 32 tokens, exactly 32 new tokens (`min_new_tokens`), multinomial sampling at
temperature 1 with top-k and top-p off. new_tok_per_s counts the new tokens over the whole call,
prefill included.
"""

import argparse
import time

import peer_common as pc
import torch
import transformers


def build_model() -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=pc.VOCAB,
        hidden_size=pc.WIDTH,
        intermediate_size=pc.MLP,
        num_hidden_layers=pc.LAYERS,
        num_attention_heads=pc.HEADS,
        num_key_value_heads=pc.HEADS,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def measure(model, batch: int, args) -> dict:
    generator = torch.Generator().manual_seed(batch)
    times = []
    with pc.LoadMonitor() as load, torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            prompt = torch.randint(2, pc.VOCAB, (batch, pc.PROMPT_LEN), generator=generator)
            start = time.perf_counter()
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=pc.NEW_TOKENS,
                min_new_tokens=pc.NEW_TOKENS,
            )
            elapsed = time.perf_counter() - start
            if out.shape[1] != pc.PROMPT_LEN + pc.NEW_TOKENS:
                raise RuntimeError(f"generate returned {out.shape[1]} columns, expected 64")
            if i >= args.warmup:
                times.append(elapsed)
    summary = pc.summarize(times)
    return {
        "batch": batch,
        **summary,
        "new_tok_per_s": batch * pc.NEW_TOKENS / summary["median_s"],
        **load.result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model()
    rows = [measure(model, batch, args) for batch in args.batches]
    pc.write_results(
        "peer_hf_generate",
        {
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
            "settings": vars(args),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
