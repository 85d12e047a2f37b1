"""Tunix's sampler at the reference shape: new tokens/s at batch 1 and 64, prefill included.

  benchmarks/.venvs/tunix/bin/python benchmarks/peers/tunix_sampler.py [--repeats 10]

Prompts of exactly 32 words, exactly 32 new tokens (the eos id lies outside the vocabulary),
temperature 1 with top-p 1, the KV cache sized to prompt + new tokens. The same call as our
`bench_sampler.py` times: one full generate, prefill and decode loop together.
"""

import argparse
import time

import jax
import peer_common as pc
import tunix
import tunix_common as tc
from tunix.generate import sampler as sampler_lib


def time_batch(sampler, batch: int, args) -> dict:
    prompts = pc.prompt_texts(batch, seed=batch)

    def call(i: int) -> None:
        out = sampler(
            prompts,
            max_generation_steps=pc.NEW_TOKENS,
            max_prompt_length=pc.PROMPT_LEN,
            temperature=1.0,
            top_p=1.0,
            seed=i,
        )
        lengths = {len(tokens) for tokens in out.tokens}
        if lengths != {pc.NEW_TOKENS}:
            raise RuntimeError(f"expected {pc.NEW_TOKENS} new tokens each, got lengths {lengths}")

    times = []
    with pc.LoadMonitor() as load:
        for i in range(args.warmup + args.repeats):
            start = time.perf_counter()
            call(i)
            times.append(time.perf_counter() - start)
    summary = pc.summarize(times[args.warmup :])
    return {
        "batch": batch,
        **summary,
        "first_call_s": times[0],
        "new_tok_per_s": batch * pc.NEW_TOKENS / summary["median_s"],
        **load.result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    mesh = tc.make_mesh()
    model = tc.build_model(mesh)
    cache = sampler_lib.CacheConfig(
        cache_size=pc.PROMPT_LEN + pc.NEW_TOKENS,
        num_layers=pc.LAYERS,
        num_kv_heads=pc.HEADS,
        head_dim=pc.WIDTH // pc.HEADS,
    )
    with jax.set_mesh(mesh):
        sampler = sampler_lib.Sampler(model, tc.WordTokenizer(), cache)
        rows = [time_batch(sampler, batch, args) for batch in args.batches]
    for row in rows:
        print(
            f"batch {row['batch']:3d}: {row['median_s']:.4f} s/call, "
            f"{row['new_tok_per_s']:,.0f} new tokens/s, others' CPU {row['others_cpu_share']:.0%}"
        )
    pc.write_results(
        "peer_tunix_sampler",
        {
            "versions": {"jax": jax.__version__, "tunix": getattr(tunix, "__version__", "?")},
            "settings": vars(args),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
