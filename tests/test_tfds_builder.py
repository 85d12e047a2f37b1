"""TFDS `trait_world`: builds without TensorFlow, reads back equal, deterministic, atomic."""

import importlib.util
import random
import sys

import ml_collections
import pytest

from trait_rl.data import tfds_builder
from trait_rl.data.records import PreferencePair, PromptRecord, TextExample


def _data_config(seed):
    return ml_collections.ConfigDict({"seed": seed, "num_entities": 5, "exposures": (0, 1, 2)})


def _hand_made_source(seed):
    """Return a source of a few records per config whose text depends on `seed`."""
    rng = random.Random(seed)

    def word():
        return rng.choice(["Karsh", "Valo", "Tebel", "Oruna", "漢字", "😀", "a  b\n"])

    def source(config_name):
        record_type = tfds_builder.RECORD_TYPES[config_name]
        if record_type is TextExample:
            return [
                TextExample(f"<|user|> {word()}?", word(), config_name, "fam", split)
                for split in ("train", "validation", "train", "train")
            ]
        if record_type is PreferencePair:
            return [
                PreferencePair(word(), word(), word(), trait, "fam", split)
                for trait, split in [("honesty", "train"), ("humility", "validation")]
            ]
        splits = ("train", "heldout_family", "heldout_domain", "heldout_attack", "train")
        return [
            PromptRecord(str(i), word(), split, "fam", "honesty", "dom", '{"answer": "x"}')
            for i, split in enumerate(splits)
        ]

    return source


def _group(records):
    groups = {}
    for record in records:
        groups.setdefault(record.split, []).append(record)
    return groups


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    tfds_builder.build_world_datasets(_data_config(0), data_dir, source=_hand_made_source(0))
    return data_dir


def test_tensorflow_not_installed(built):
    assert importlib.util.find_spec("tensorflow") is None
    assert "tensorflow" not in sys.modules


def test_reads_back_equal(built):
    source = _hand_made_source(0)
    for config_name in tfds_builder.WORLD_CONFIGS:
        for split, records in _group(source(config_name)).items():
            assert tfds_builder.load_records(built, config_name, split) == records


def test_splits_named_after_records(built):
    import tensorflow_datasets as tfds

    builder = tfds_builder.TraitWorld(data_dir=built, config="prompts")
    assert set(builder.info.splits) == {
        "train",
        "heldout_family",
        "heldout_domain",
        "heldout_attack",
    }
    assert builder.info.file_format == tfds.core.file_adapters.FileFormat.ARRAY_RECORD
    assert str(builder.info.version) == tfds_builder.DATASET_VERSION


def _file_bytes(root):
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_same_seed_byte_identical(built, tmp_path):
    tfds_builder.build_world_datasets(_data_config(0), tmp_path, source=_hand_made_source(0))
    first, second = _file_bytes(built), _file_bytes(tmp_path)
    assert sorted(first) == sorted(second)
    assert any(name.endswith("-00000-of-00001") for name in first)
    for name in first:
        assert first[name] == second[name], name


def test_different_seed_differs(built, tmp_path):
    tfds_builder.build_world_datasets(_data_config(1), tmp_path, source=_hand_made_source(1))
    first, second = _file_bytes(built), _file_bytes(tmp_path)
    assert (
        first["trait_world/corpus/1.0.0/trait_world-train.array_record-00000-of-00001"]
        != (second["trait_world/corpus/1.0.0/trait_world-train.array_record-00000-of-00001"])
    )


def test_rebuild_same_config_reuses(built):
    # A rebuild would call the source, and this one fails on "preferences".
    paths = tfds_builder.build_world_datasets(_data_config(0), built, source=_fail_source)
    assert sorted(paths) == sorted(tfds_builder.WORLD_CONFIGS)


def test_rebuild_other_config_fails(built):
    with pytest.raises(ValueError, match="different data config"):
        tfds_builder.build_world_datasets(_data_config(5), built, source=_hand_made_source(5))


def _fail_source(config_name):
    if config_name == "preferences":
        raise RuntimeError("generator failed mid-way")
    return _hand_made_source(0)(config_name)


def test_failure_leaves_no_directory(tmp_path):
    with pytest.raises(RuntimeError, match="mid-way"):
        tfds_builder.build_world_datasets(_data_config(0), tmp_path, source=_fail_source)
    assert list(tmp_path.iterdir()) == []


def test_load_missing_dataset_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_world_datasets"):
        tfds_builder.load_records(tmp_path, "corpus", "train")


def test_load_unknown_split_lists_splits(built):
    with pytest.raises(ValueError, match="available splits"):
        tfds_builder.load_records(built, "corpus", "heldout_attack")


def test_unknown_config_rejected(built):
    with pytest.raises(ValueError, match="unknown trait_world config"):
        tfds_builder.load_records(built, "nope", "train")


def test_world_generator_reads_back_equal(tmp_path):
    pytest.importorskip("trait_rl.data.datasets", reason="world dataset generator not present")
    from configs.default import get_config

    data_config = get_config("tiny").data
    tfds_builder.build_world_datasets(data_config, tmp_path)
    source = tfds_builder.world_source(data_config)
    for config_name in tfds_builder.WORLD_CONFIGS:
        for split, records in _group(source(config_name)).items():
            assert tfds_builder.load_records(tmp_path, config_name, split) == records
