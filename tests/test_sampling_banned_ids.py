"""Sampler ban list: banned ids are never chosen, and logps stay those of the unfiltered logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trait_rl.model import sampling

# Id 0 (pad) has the largest logit and id 1 (bos) the second largest.
LOGITS = jnp.array([[5.0, 4.0, 1.0, 0.5, -1.0]] * 64)


@pytest.mark.parametrize(
    "config",
    [
        sampling.SamplingConfig(max_new_tokens=1, greedy=True, banned_ids=(0, 1)),
        sampling.SamplingConfig(max_new_tokens=1, temperature=2.0, banned_ids=(0, 1)),
        sampling.SamplingConfig(max_new_tokens=1, top_k=3, banned_ids=(0, 1)),
        sampling.SamplingConfig(max_new_tokens=1, top_p=0.9, banned_ids=(0, 1)),
    ],
    ids=["greedy", "temperature", "top_k", "top_p"],
)
def test_banned_ids_never_chosen(config):
    tokens, logps = sampling._choose(config, LOGITS, jax.random.key(0))
    assert not np.any(np.isin(np.asarray(tokens), [0, 1]))
    unfiltered = jax.nn.log_softmax(LOGITS / config.logps_temperature, axis=-1)
    expected = jnp.take_along_axis(unfiltered, tokens[:, None], axis=-1)[:, 0]
    np.testing.assert_allclose(logps, expected, atol=1e-6)


def test_default_bans_only_pad():
    config = sampling.SamplingConfig(max_new_tokens=1, greedy=True)
    assert config.banned_ids == (0,)
    tokens, _ = sampling._choose(config, LOGITS[:1], jax.random.key(0))
    assert int(tokens[0]) == 1


def test_no_ban_restores_argmax():
    config = sampling.SamplingConfig(max_new_tokens=1, greedy=True, banned_ids=())
    tokens, _ = sampling._choose(config, LOGITS[:1], jax.random.key(0))
    assert int(tokens[0]) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"banned_ids": (-1,)}, r"sampling.banned_ids=\(-1,\)"),
        ({"banned_ids": (0, 3), "stop_ids": (3,)}, "overlaps stop_ids"),
    ],
)
def test_bad_banned_ids_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampling.SamplingConfig(max_new_tokens=2, **kwargs)
