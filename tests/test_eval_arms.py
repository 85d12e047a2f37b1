"""Loading a phase directory as an arm: the reward phase is rejected by name and by params."""

import jax.numpy as jnp
import pytest

from configs import default
from trait_rl.eval import arms
from trait_rl.training import checkpoints, train_state

REWARD_PARAMS = {"backbone": {"embed": jnp.ones((8, 4))}, "head": {"kernel": jnp.zeros((4, 3))}}
POLICY_PARAMS = {"embed": jnp.ones((8, 4)), "final_norm": {"scale": jnp.ones((4,))}}


def _save_phase(directory, params):
    """Save a finished phase with `params` and the tiny config."""
    state = train_state.TrainState(
        step=jnp.asarray(2, jnp.int32),
        params=params,
        opt_state={"count": jnp.asarray(0, jnp.int32)},
        rng=jnp.zeros((2,), jnp.uint32),
    )
    manager = checkpoints.open_manager(directory, default.get_config("tiny").reward)
    checkpoints.save_final(manager, directory, state)
    manager.close()
    checkpoints.save_phase_files(directory, default.get_config("tiny"))


@pytest.mark.parametrize("name", ["reward", "copied_reward"])
def test_load_arm_rejects_reward_model(tmp_path, name):
    directory = tmp_path / name
    _save_phase(directory, REWARD_PARAMS)

    with pytest.raises(arms.NotAPolicyError) as error:
        arms.load_arm(directory)

    assert str(error.value) == (
        f"{directory} is the reward model, not a policy. Pass a policy phase directory: "
        "WORKDIR/sft, WORKDIR/conventional or WORKDIR/rl_<arm>"
    )


def test_policy_params_pass_check(tmp_path):
    directory = tmp_path / "copied_policy"
    _save_phase(directory, POLICY_PARAMS)

    arms.check_policy_phase(directory)
