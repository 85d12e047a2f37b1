"""TRL GRPOTrainer at the reference shape on a random-weight transformers Llama, torch CPU.

  benchmarks/.venvs/trl/bin/python benchmarks/peers/trl_grpo.py [--warmup 3] [--repeats 10]

Nothing is downloaded. The model comes from a LlamaConfig with random weights and is saved to a
temporary folder, because TRL loads the reference model from a path. The tokenizer is a
word-level one built here without BOS, so each prompt is exactly 32 tokens. `min_new_tokens`
forces exactly 32 new tokens. Generation and the reference forward are timed by wrapping the
model methods.
"""

import argparse
import tempfile
import time

import peer_common as pc
import torch
import transformers
import trl
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers


def build_tokenizer() -> transformers.PreTrainedTokenizerFast:
    vocab = {pc.word(i): i for i in range(pc.VOCAB)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=pc.word(1)))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=pc.word(0), eos_token=pc.word(1), unk_token=pc.word(1)
    )


def build_model(path: str) -> None:
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
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    print(f"random Llama with {params:,} parameters")
    model.save_pretrained(path)


def even_share_reward(completion_ids, **_):
    """Score each completion by its share of even token ids, as cheap as our synthetic reward."""
    return [sum(1 for t in ids if t % 2 == 0) / max(len(ids), 1) for ids in completion_ids]


class StepTimer(transformers.TrainerCallback):
    def __init__(self):
        self.times, self.start = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)


def wrap_timed(obj, name: str, totals: list[float], step_index) -> None:
    """Replace obj.<name> by a version that adds its seconds to totals[current step]."""
    original = getattr(obj, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        while len(totals) <= step_index():
            totals.append(0.0)
        totals[step_index()] += time.perf_counter() - start
        return out

    setattr(obj, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.warmup + args.repeats

    with tempfile.TemporaryDirectory() as workdir:
        build_model(f"{workdir}/model")
        tokenizer = build_tokenizer()
        prompts = pc.prompt_texts(pc.PROMPTS * steps)
        config = trl.GRPOConfig(
            output_dir=f"{workdir}/out",
            per_device_train_batch_size=pc.PROMPTS * pc.GROUP,
            gradient_accumulation_steps=1,
            num_generations=pc.GROUP,
            max_completion_length=pc.NEW_TOKENS,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            beta=pc.KL_COEF,
            num_iterations=1,
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            use_vllm=False,
            generation_kwargs={"min_new_tokens": pc.NEW_TOKENS},
            max_steps=steps,
            logging_steps=steps,
            save_strategy="no",
            report_to=[],
            shuffle_dataset=False,
        )
        timer = StepTimer()
        trainer = trl.GRPOTrainer(
            model=f"{workdir}/model",
            reward_funcs=even_share_reward,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        generate_s, reference_s = [], []
        wrap_timed(trainer.model, "generate", generate_s, lambda: len(timer.times))
        if trainer.ref_model is not None:
            wrap_timed(trainer.ref_model, "forward", reference_s, lambda: len(timer.times))
        with pc.LoadMonitor() as load:
            trainer.train()

    timed = slice(args.warmup, steps)
    summary = pc.summarize(timer.times[timed])
    row = {
        "peer": "trl",
        **summary,
        "first_step_s": timer.times[0],
        "completions_per_s": pc.PROMPTS * pc.GROUP / summary["median_s"],
        "generate_s": pc.summarize(generate_s[timed])["median_s"] if generate_s else None,
        "reference_s": pc.summarize(reference_s[timed])["median_s"] if reference_s else None,
        **load.result,
    }
    pc.write_results(
        "peer_trl_grpo",
        {
            "versions": {
                "trl": trl.__version__,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
            },
            "settings": vars(args),
            "row": row,
        },
    )


if __name__ == "__main__":
    main()
