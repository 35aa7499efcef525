import math

import numpy as np
import pytest

from lfme.selfpaced import expert_weight, expert_weights, initial_instance_weights, scheduled_instance_weights
from lfme.subsets import Subset


@pytest.mark.parametrize(
    "student,expert,alpha,expected",
    [
        (0.2, 0.5, 0.6, 1.0),  # 0.2 <= 0.6 * 0.5
        (0.4, 0.8, 0.5, 1.0),  # exactly at alpha * Acc_E
        (0.4, 0.5, 0.6, 0.5),  # (0.5 - 0.4) / (0.5 * 0.4)
        (0.6, 0.8, 0.5, 0.5),  # (0.8 - 0.6) / (0.8 * 0.5)
        (0.25, 0.5, 0.0, 0.5),  # alpha 0: (0.5 - 0.25) / 0.5
        (0.5, 0.5, 0.6, 0.0),  # student caught up
        (0.7, 0.5, 0.6, 0.0),  # (0.5 - 0.7) / 0.2 = -1, clipped
        (0.5, 0.5, 1.0, 1.0),  # alpha 1: full weight up to Acc_E ...
        (0.51, 0.5, 1.0, 0.0),  # ... then none (no division by 1 - alpha = 0)
        (0.0, 0.0, 0.6, 0.0),  # an expert at 0 accuracy has nothing to teach
    ],
)
def test_expert_weight(student, expert, alpha, expected):
    assert expert_weight(student, expert, alpha) == pytest.approx(expected)


def test_expert_weight_validation():
    for args in [(0.5, 0.5, 1.5), (0.5, 0.5, -0.1), (1.2, 0.5, 0.6), (0.5, -0.1, 0.6)]:
        with pytest.raises(ValueError):
            expert_weight(*args)


def test_expert_weights_list():
    assert expert_weights([0.2, 0.4, 0.7], [0.5, 0.5, 0.5], 0.6) == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError):
        expert_weights([0.2], [0.5, 0.5], 0.6)


# Subset mean counts: many (100+60)/2 = 80, medium (20+10)/2 = 15, few (4+2)/2 = 3.
# Nbar_min / Nbar_l: many 3/80 = 0.0375, medium 3/15 = 0.2, few 1.
COUNTS = [100, 60, 20, 10, 4, 2]
SUBSETS = [Subset("many", (0, 1)), Subset("medium", (2, 3)), Subset("few", (4, 5))]
LABELS = [0, 0, 0, 2, 2, 4, 1, 1]
CONF = [0.5, 0.2, 0.35, 0.8, 0.4, 0.6, 0.7, 0.7]


def test_initial_weights_paper():
    v1 = initial_instance_weights(CONF, LABELS, SUBSETS, COUNTS)
    assert v1.dtype == np.float32
    expected = [0.5 * 0.0375, 0.2 * 0.0375, 0.35 * 0.0375, 0.8 * 0.2, 0.4 * 0.2, 0.6, 0.7 * 0.0375, 0.7 * 0.0375]
    np.testing.assert_allclose(v1, expected, rtol=1e-6)


def test_initial_weights_official():
    v1 = initial_instance_weights(CONF, LABELS, SUBSETS, COUNTS, variant="official")
    # class 0: p in [0.2, 0.5] -> [0.0375, 1]; 0.35 -> 0.0375 + 0.5 * 0.9625 = 0.51875
    # class 2: p in [0.4, 0.8] -> [0.2, 1]; class 4: single instance; class 1: equal p -> 1
    np.testing.assert_allclose(v1, [1.0, 0.0375, 0.51875, 1.0, 0.2, 1.0, 1.0, 1.0], rtol=1e-6)


def test_initial_weights_validation():
    with pytest.raises(ValueError):
        initial_instance_weights(CONF, LABELS, SUBSETS, COUNTS, variant="oops")
    with pytest.raises(ValueError):
        initial_instance_weights([1.5] * 8, LABELS, SUBSETS, COUNTS)
    with pytest.raises(ValueError):
        initial_instance_weights(CONF[:3], LABELS, SUBSETS, COUNTS)


V1 = np.array([0.2, 0.6], dtype=np.float32)


def test_linear_schedule():
    # e=1, E=4: (1 - v1) / 4 + v1 = 0.4, 0.7
    np.testing.assert_allclose(scheduled_instance_weights(V1, 1, 4), [0.4, 0.7], rtol=1e-6)
    np.testing.assert_allclose(scheduled_instance_weights(V1, 4, 4), [1.0, 1.0], rtol=1e-6)


def test_convex_schedule():
    # e=2, E=4: 1 - (1 - v1) cos(pi/4)
    c = math.cos(math.pi / 4)
    np.testing.assert_allclose(scheduled_instance_weights(V1, 2, 4, "convex"), [1 - 0.8 * c, 1 - 0.4 * c], rtol=1e-6)
    np.testing.assert_allclose(scheduled_instance_weights(V1, 4, 4, "convex"), [1.0, 1.0], rtol=1e-6)


def test_concave_schedule_as_printed():
    # e=1, E=4: (1 - v1) log(1.25) / log 2; it starts below v1 and ends at 1 - v1
    r = math.log(1.25) / math.log(2)
    np.testing.assert_allclose(scheduled_instance_weights(V1, 1, 4, "concave_printed"), [0.8 * r, 0.4 * r], rtol=1e-6)
    np.testing.assert_allclose(scheduled_instance_weights(V1, 4, 4, "concave_printed"), [0.8, 0.4], rtol=1e-6)


def test_concave_schedule_grows_from_v1_to_one():
    # V1 = [0.2, 0.6]; e=1, E=4: v1 + (1 - v1) log(1.25) / log 2 = [0.2 + 0.8 r, 0.6 + 0.4 r]
    r = math.log(1.25) / math.log(2)
    np.testing.assert_allclose(scheduled_instance_weights(V1, 1, 4, "concave"), [0.2 + 0.8 * r, 0.6 + 0.4 * r], rtol=1e-6)
    np.testing.assert_allclose(scheduled_instance_weights(V1, 4, 4, "concave"), [1.0, 1.0], rtol=1e-6)
    # concave: above the linear schedule in between
    assert (scheduled_instance_weights(V1, 2, 4, "concave") > scheduled_instance_weights(V1, 2, 4, "linear")).all()


@pytest.mark.parametrize("schedule", ["linear", "convex", "concave", "concave_printed"])
def test_schedules_increase(schedule):
    weights = np.stack([scheduled_instance_weights(V1, e, 10, schedule) for e in range(1, 11)])
    assert (np.diff(weights, axis=0) > 0).all()
    assert weights.dtype == np.float32


def test_schedule_validation():
    with pytest.raises(ValueError, match="cubic"):
        scheduled_instance_weights(V1, 1, 4, "cubic")
    with pytest.raises(ValueError, match="0"):
        scheduled_instance_weights(V1, 0, 4)
    with pytest.raises(ValueError, match="5"):
        scheduled_instance_weights(V1, 5, 4)


def test_official_ramp_reaches_one_at_half_the_run_and_grows_on_unclipped():
    """The official code: v = (1 - v1) e / (E/2) + v1, not clipped; by hand for v1 = 0.2, E = 10."""
    v1 = np.array([0.2, 1.0], dtype=np.float32)
    at = {e: scheduled_instance_weights(v1, e, 10, "linear", horizon="half", clip=False) for e in (1, 5, 10)}
    np.testing.assert_allclose(at[1], [0.2 + 0.8 * 0.2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(at[5], [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(at[10], [1.8, 1.0], rtol=1e-6)  # 2 - v1


def test_half_horizon_clipped_holds_the_end_value():
    v1 = np.array([0.2], dtype=np.float32)
    for e in (5, 6, 10):
        np.testing.assert_allclose(scheduled_instance_weights(v1, e, 10, "linear", horizon="half", clip=True), [1.0])
    np.testing.assert_allclose(scheduled_instance_weights(v1, 2, 10, "linear", horizon="half"), [0.2 + 0.8 * 0.4], rtol=1e-6)
    # convex past its horizon, unclipped: 1 - 0.8 cos(1.6 * pi/2) > 1
    convex = scheduled_instance_weights(v1, 8, 10, "convex", horizon="half", clip=False)
    np.testing.assert_allclose(convex, [1 - 0.8 * math.cos(1.6 * math.pi / 2)], rtol=1e-6)


def test_full_horizon_is_unchanged_by_clipping():
    v1 = np.array([0.1, 0.5], dtype=np.float32)
    for e in range(1, 11):
        np.testing.assert_array_equal(
            scheduled_instance_weights(v1, e, 10, "linear", clip=True), scheduled_instance_weights(v1, e, 10, "linear", clip=False)
        )
    with pytest.raises(ValueError, match="horizon"):
        scheduled_instance_weights(v1, 1, 10, "linear", horizon="quarter")
