"""Search spaces: sampled specs are valid, the block enumeration is exact."""

import random

import pytest

import latvit
from latvit.models.spaces import SPACES, SearchSpace, _efficientformer, get_space


def tiny_space() -> SearchSpace:
    return SearchSpace(
        "tiny",
        widths=((32,), (64,), (160,), (320, 352)),
        depths=((1,), (1,), (2,), (2,)),
        expansions=(4.0,),
        extras=(1,),
        make_spec=_efficientformer,
    )


def test_tiny_space_enumeration_count():
    # stem 2 + stage1 meta4d 1 + stage2 (down, meta4d) 2 + stage3 (down, meta4d) 2
    # + stage4: downs 160->320, 160->352, and meta4d + meta3d at each of 2 widths = 2 + 4
    blocks = tiny_space().enumerate_blocks()
    assert len(blocks) == 13
    assert sorted(b.spec.kind for b in blocks).count("meta3d") == 2


@pytest.mark.parametrize("name", sorted(SPACES))
def test_enumeration_covers_every_sampled_spec(name):
    space = SPACES[name]
    keys = {b.key for b in space.enumerate_blocks()}
    for spec in space.sample_specs(60, seed=1):
        missing = [b.where for b in latvit.plan_network(spec).blocks if b.key not in keys]
        assert not missing, (spec.name, missing)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_largest_and_smallest_bound_the_samples(name):
    space = SPACES[name]
    big = latvit.spec_cost(space.spec(space.largest())).flops
    small = latvit.spec_cost(space.spec(space.smallest())).flops
    flops = [latvit.spec_cost(s).flops for s in space.sample_specs(30, seed=2)]
    assert small <= min(flops) and max(flops) <= big and small < big


def test_samples_are_distinct_and_build():
    specs = SPACES["efficientformerv2"].sample_specs(5, seed=3)
    assert len({(s.widths, s.depths, tuple(b.expansion for st in s.stages for b in st.blocks)) for s in specs}) == 5
    model = latvit.create_model(specs[0], num_classes=3, img_size=64)
    assert model.num_classes == 3


def test_unknown_space():
    with pytest.raises(latvit.LatvitError, match="unknown search space 'nope'"):
        get_space("nope")


def test_too_small_space():
    with pytest.raises(latvit.LatvitError, match="fewer than 5 distinct points"):
        tiny_space().sample_specs(5)
    assert tiny_space().sample(random.Random(0)) == tiny_space().largest()
