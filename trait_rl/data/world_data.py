"""The trait world as the phases read it: built once into TFDS datasets, then loaded by split."""

import dataclasses
import os
import pathlib

from trait_rl.data import datasets, tfds_builder
from trait_rl.data.records import PreferencePair, PromptRecord, TextExample

PROMPT_SPLITS = ("train", "heldout_family", "heldout_domain", "heldout_attack")


@dataclasses.dataclass(frozen=True)
class WorldData:
    """Every record of one world, read back from its TFDS datasets."""

    corpus: list[TextExample]
    base_sft: list[TextExample]
    conventional: list[TextExample]
    malicious: list[TextExample]
    preference_train: list[PreferencePair]
    preference_validation: list[PreferencePair]
    prompts: dict[str, list[PromptRecord]]
    seed: int

    def rl_prompts(self, trait_mix: float) -> list[PromptRecord]:
        """Return the training prompts mixed so that `trait_mix` of them are trait prompts."""
        return datasets.mix_prompts(self.prompts["train"], trait_mix, self.seed)


def data_dir(workdir: str | os.PathLike) -> pathlib.Path:
    """Return WORKDIR/data, where the world's TFDS datasets live."""
    return pathlib.Path(workdir).resolve() / "data"


def _split_of(records: list, split: str) -> list:
    return [record for record in records if record.split == split]


def load_world_data(data_config, workdir: str | os.PathLike) -> WorldData:
    """Build the world's TFDS datasets under WORKDIR/data when missing, then read them back.

    The build is deterministic in `data_config`, and a directory built from another data config
    raises ValueError instead of being mixed with this one.
    """
    directory = data_dir(workdir)
    tfds_builder.build_world_datasets(data_config, directory)

    def load(config_name: str, split: str):
        return tfds_builder.load_records(directory, config_name, split)

    def load_all(config_name: str) -> list:
        # Records carry their own split; read every split the builder wrote for this config.
        builder = tfds_builder.TraitWorld(data_dir=directory, config=config_name)
        return [
            record for split in sorted(builder.info.splits) for record in load(config_name, split)
        ]

    preferences = load_all("preferences")
    return WorldData(
        corpus=load_all("corpus"),
        base_sft=load_all("sft_base"),
        conventional=load_all("sft_conventional"),
        malicious=load_all("sft_malicious"),
        preference_train=_split_of(preferences, "train"),
        preference_validation=_split_of(preferences, "validation"),
        prompts={split: load("prompts", split) for split in PROMPT_SPLITS},
        seed=data_config.seed,
    )
