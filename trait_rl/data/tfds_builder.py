"""TFDS builder `trait_world`: the generated world's records as array_record datasets.

One builder config per kind of data. Each config's splits are named after the `split` field of
its records, and examples keep the generator's order (shuffling is disabled), so reading a split
back returns exactly the list that was written. Building and reading need no TensorFlow: the
files are array_record and are read with `as_data_source`.

Every config directory `DATA_DIR/trait_world/<config>/` is written under a temporary name and
renamed into place when complete, so a failed build leaves no dataset directory behind. The data
config that produced a world config is stored beside it in `world_config.json`, and a later build
with a different data config fails instead of silently mixing two worlds.
"""

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence

import tensorflow_datasets as tfds

from trait_rl.data.records import PreferencePair, PromptRecord, TextExample, to_dict

DATASET_NAME = "trait_world"
DATASET_VERSION = "1.0.0"
FILE_FORMAT = "array_record"
FINGERPRINT_FILE = "world_config.json"

# Configs generated from the world by `build_world_datasets`.
WORLD_CONFIGS = {
    "corpus": TextExample,
    "sft_base": TextExample,
    "sft_conventional": TextExample,
    "sft_malicious": TextExample,
    "preferences": PreferencePair,
    "prompts": PromptRecord,
}
# Configs for user files imported by `trait_rl.data.jsonl`.
USER_CONFIGS = {"user_preferences": PreferencePair, "user_prompts": PromptRecord}
RECORD_TYPES = {**WORLD_CONFIGS, **USER_CONFIGS}

Record = TextExample | PreferencePair | PromptRecord
# Returns every record of one config, all splits together; the records' `split` field groups them.
RecordSource = Callable[[str], Sequence[Record]]


class TraitWorld(tfds.core.GeneratorBasedBuilder):
    """Records of the trait world (or user imports), one config per record kind."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {
        DATASET_VERSION: "Corpus, SFT sets, preference pairs and prompts of the trait world."
    }
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=name, description=f"{record_type.__name__} records")
        for name, record_type in RECORD_TYPES.items()
    ]

    def __init__(self, *, source: RecordSource | None = None, **kwargs):
        # The source is only needed to build; reading an existing dataset passes none.
        self._source = source
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        record_type = RECORD_TYPES[self.builder_config.name]
        features = tfds.features.FeaturesDict(
            {field.name: tfds.features.Text() for field in dataclasses.fields(record_type)}
        )
        return self.dataset_info_from_configs(features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded.
        if self._source is None:
            raise ValueError(f"building {self.builder_config.name} needs a record source")
        records = self._source(self.builder_config.name)
        return {split: self._generate_examples(group) for split, group in _group_by_split(records)}

    def _generate_examples(self, records: Sequence[Record]):
        for index, record in enumerate(records):
            yield index, to_dict(record)


def _group_by_split(records: Sequence[Record]) -> list[tuple[str, list[Record]]]:
    """Group records by their split, keeping first-appearance order of splits and records."""
    if not records:
        raise ValueError("the record source returned no records")
    groups: dict[str, list[Record]] = {}
    for record in records:
        if not record.split.isidentifier():
            raise ValueError(f"split {record.split!r} of {record} is not a valid TFDS split name")
        groups.setdefault(record.split, []).append(record)
    return list(groups.items())


def config_dir(data_dir: str | os.PathLike, config_name: str) -> pathlib.Path:
    return pathlib.Path(data_dir) / DATASET_NAME / config_name


def build_configs(
    config_names: Sequence[str],
    source: RecordSource,
    data_dir: str | os.PathLike,
    fingerprint: Mapping | None = None,
) -> list[pathlib.Path]:
    """Build the named configs from `source` into `data_dir`, each renamed into place when done.

    All configs are first built in one staging directory inside `data_dir`. The config
    directories are renamed to their final names only after every build has succeeded. Raises
    FileExistsError if a config directory already exists.
    """
    for name in config_names:
        _check_config_name(name)
        if config_dir(data_dir, name).exists():
            raise FileExistsError(
                f"{config_dir(data_dir, name)} already exists; delete it or use another data_dir"
            )
    data_dir = pathlib.Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    stage = pathlib.Path(tempfile.mkdtemp(prefix=f".{DATASET_NAME}.", suffix=".tmp", dir=data_dir))
    try:
        for name in config_names:
            builder = TraitWorld(
                data_dir=stage, config=name, file_format=FILE_FORMAT, source=source
            )
            builder.download_and_prepare(download_dir=stage / "downloads")
            if fingerprint is not None:
                fingerprint_text = json.dumps(fingerprint, sort_keys=True, indent=1)
                (config_dir(stage, name) / FINGERPRINT_FILE).write_text(fingerprint_text + "\n")
        config_dir(data_dir, "").mkdir(exist_ok=True)
        for name in config_names:
            os.rename(config_dir(stage, name), config_dir(data_dir, name))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [config_dir(data_dir, name) for name in config_names]


def world_source(data_config) -> RecordSource:
    """Return a source that generates each world config's records from `data_config`.

    The world is built once, on the first request.
    """
    from trait_rl.data import datasets, world

    cache = {}

    def source(config_name: str) -> list[Record]:
        if "world" not in cache:
            cache["world"] = world.build_world(data_config)
        built = cache["world"]
        generators = {
            "corpus": lambda: datasets.corpus(built),
            "sft_base": lambda: datasets.base_sft_examples(built),
            "sft_conventional": lambda: datasets.conventional_examples(built),
            "sft_malicious": lambda: datasets.malicious_examples(built),
            "preferences": lambda: [
                pair
                for split in ("train", "validation")
                for pair in datasets.preference_pairs(built, split)
            ],
            "prompts": lambda: [
                prompt
                for split in ("train", "heldout_family", "heldout_domain", "heldout_attack")
                for prompt in datasets.prompts(built, split)
            ],
        }
        return generators[config_name]()

    return source


def build_world_datasets(
    data_config, data_dir: str | os.PathLike, source: RecordSource | None = None
) -> dict[str, pathlib.Path]:
    """Build every world config of `data_config` into `data_dir`; reuse configs already built.

    `source` replaces the world generator (tests pass hand-made records). Raises ValueError when
    an existing config was built from a different data config.
    """
    fingerprint = _fingerprint(data_config)
    missing = []
    for name in WORLD_CONFIGS:
        stored = config_dir(data_dir, name) / FINGERPRINT_FILE
        if not config_dir(data_dir, name).exists():
            missing.append(name)
        elif not stored.is_file() or json.loads(stored.read_text()) != fingerprint:
            raise ValueError(
                f"{config_dir(data_dir, name)} was built from a different data config than the "
                "one requested; rerun with the same data config or another --workdir, or delete "
                "the directory"
            )
    if missing:
        build_configs(missing, source or world_source(data_config), data_dir, fingerprint)
    return {name: config_dir(data_dir, name) for name in WORLD_CONFIGS}


def _fingerprint(data_config) -> dict:
    """Return the data config as plain JSON data, so it can be compared with a stored copy."""
    as_dict = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
    return json.loads(json.dumps(as_dict, sort_keys=True, default=list))


def load_records(data_dir: str | os.PathLike, config_name: str, split: str) -> list[Record]:
    """Read one split of a built config back into record objects, in generation order."""
    _check_config_name(config_name)
    if not config_dir(data_dir, config_name).is_dir():
        raise FileNotFoundError(
            f"dataset {config_dir(data_dir, config_name)} not found; build it with "
            "trait_rl.data.tfds_builder.build_world_datasets or import a JSONL file"
        )
    builder = TraitWorld(data_dir=data_dir, config=config_name)
    if split not in builder.info.splits:
        raise ValueError(
            f"split {split!r} not in {config_dir(data_dir, config_name)}; "
            f"available splits: {sorted(builder.info.splits)}"
        )
    record_type = RECORD_TYPES[config_name]
    data_source = builder.as_data_source(split=split)
    return [_to_record(record_type, data_source[i]) for i in range(len(data_source))]


def _to_record(record_type, example: Mapping) -> Record:
    fields = {
        key: value.decode("utf-8") if isinstance(value, bytes) else str(value)
        for key, value in example.items()
    }
    return record_type(**fields)


def _check_config_name(config_name: str) -> None:
    if config_name not in RECORD_TYPES:
        raise ValueError(
            f"unknown trait_world config {config_name!r}; expected one of {sorted(RECORD_TYPES)}"
        )
