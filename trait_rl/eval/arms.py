"""Load a finished training phase as an evaluable arm: config, tokenizer, model config, params.

A phase directory contains the resolved config (config.json), a copy of the tokenizer model file and
an Orbax checkpoint with a FINAL marker, as written by trait_rl.training.checkpoints.
"""

import dataclasses
import json
import pathlib

import jax
import ml_collections

from trait_rl.data.records import PromptRecord
from trait_rl.data.tokenizer import Tokenizer
from trait_rl.eval import generate
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.training import arms as arms_lib
from trait_rl.training import checkpoints, output_filter, sft

CONVENTIONAL = "conventional"
RL_PHASE = "rl"
REWARD_PHASE = "reward"
# Top-level keys of the reward phase's params: the policy backbone plus the trait head.
REWARD_PARAM_KEYS = frozenset({"backbone", "head"})


class NotAPolicyError(checkpoints.CheckpointMismatchError):
    """A phase directory that contains another network than a policy (the reward model)."""


@dataclasses.dataclass(frozen=True)
class LoadedArm:
    """A trained policy ready for evaluation; `postprocess` is the arm's deployed output filter."""

    name: str
    config: ml_collections.ConfigDict
    model_cfg: ModelConfig
    tokenizer: Tokenizer
    params: object
    postprocess: generate.Postprocess | None


def conventional_filter(response: str, record: PromptRecord) -> str:
    """Apply the conventional arm's keyword output filter (an evaluate_arm postprocess)."""
    return output_filter.filter_response(record.prompt, response)


def arm_name(phase_dir: pathlib.Path, config: ml_collections.ConfigDict) -> str:
    """Name a phase directory's policy: `config.arm` for an RL phase, else the phase name."""
    name = phase_dir.name
    if name.startswith(checkpoints.RL_PREFIX):
        return checkpoints.arm_of_rl_phase(name)
    if name == RL_PHASE and config.get("arm"):
        return str(config.arm)
    return name


def deploys_output_filter(phase_dir: pathlib.Path, config: ml_collections.ConfigDict) -> bool:
    """Return whether the policy ships behind the keyword output filter.

    The conventional phase writes the run's shared config, whose `arm` may name the RL arm, so
    its directory name marks it as well as `config.arm` does.
    """
    if phase_dir.name == CONVENTIONAL:
        return True
    if "arm" not in config or "rl" not in config:
        return False
    return arms_lib.parse_arm(config.arm, config.rl).output_filter


def _tokenizer_file(phase_dir: pathlib.Path) -> pathlib.Path:
    models = sorted(phase_dir.glob("*.model"))
    if len(models) != 1:
        raise FileNotFoundError(
            f"{phase_dir}: expected exactly one tokenizer *.model file, found {len(models)}; "
            "point --checkpoint at a phase directory written by the training scripts"
        )
    return models[0]


def _is_reward_checkpoint(phase_dir: pathlib.Path) -> bool:
    step = checkpoints.final_step(phase_dir)
    if step is None:
        return False
    try:
        shapes = checkpoints.stored_param_shapes(phase_dir / checkpoints.CHECKPOINT_DIR / str(step))
    except checkpoints.RESTORE_ERRORS:
        return False  # The restore reports the unreadable checkpoint with its path.
    top_level_keys = {path.split("/", 1)[0] for path in shapes}
    return top_level_keys == REWARD_PARAM_KEYS


def check_policy_phase(phase_dir: pathlib.Path) -> None:
    """Raise NotAPolicyError when `phase_dir` is the reward phase, by its name or its params."""
    if phase_dir.name == REWARD_PHASE or _is_reward_checkpoint(phase_dir):
        raise NotAPolicyError(
            f"{phase_dir} is the reward model, not a policy. Pass a policy phase directory: "
            "WORKDIR/sft, WORKDIR/conventional or WORKDIR/rl_<arm>"
        )


def load_arm(phase_dir: str | pathlib.Path, mesh=None) -> LoadedArm:
    """Restore the final params of a policy phase directory onto `mesh` (default: its config).

    Raises NotAPolicyError for the reward phase, whose params are a backbone plus trait heads.
    """
    phase_dir = pathlib.Path(phase_dir)
    config_path = phase_dir / checkpoints.CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} not found; --checkpoint must be a phase directory such as "
            "WORKDIR/rl_trait_rl"
        )
    check_policy_phase(phase_dir)
    config = ml_collections.ConfigDict(json.loads(config_path.read_text(encoding="utf-8")))
    tokenizer = Tokenizer.load(_tokenizer_file(phase_dir))
    model_cfg = ModelConfig.from_config(config.model, tokenizer.vocab_size)
    mesh = mesh_lib.make_mesh(config.mesh) if mesh is None else mesh
    shapes = jax.eval_shape(lambda key: transformer.init_params(key, model_cfg), jax.random.key(0))
    shardings = sft.policy_shardings(config, model_cfg, mesh)
    target = jax.tree.map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
        shapes,
        shardings,
    )
    params = checkpoints.restore_final_params(phase_dir, target)
    return LoadedArm(
        name=arm_name(phase_dir, config),
        config=config,
        model_cfg=model_cfg,
        tokenizer=tokenizer,
        params=params,
        postprocess=conventional_filter if deploys_output_filter(phase_dir, config) else None,
    )
