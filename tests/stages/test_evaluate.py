"""stages.evaluate's pure parts: the numbers a summary shows of a student's report, and what the test task reserves."""

from __future__ import annotations

import numpy as np
import pytest

from lfme.evaluation import accuracy_report
from lfme.subsets import Subset
from rundir.config import load_config
from stages.evaluate import headline, task_options


def test_the_headline_is_overall_and_the_inclusive_many_medium_few():
    # Training counts 100, 50, 20: inclusive (N >= 100 many, N <= 20 few) puts class 0 in many and class 2 in few;
    # strict (N > 100, N < 20) puts all three in medium. Predictions by hand: class 0 right 1 of 2, class 1 right
    # 2 of 2, class 2 right 0 of 2; overall 3 of 6.
    logits = np.eye(3)[[0, 2, 1, 1, 0, 1]]
    labels = np.array([0, 0, 1, 1, 2, 2])
    report = accuracy_report(logits, labels, np.array([100, 50, 20]), [Subset("many", (0,)), Subset("rest", (1, 2))])
    assert headline(report) == {
        "overall": 0.5, "many": 0.5, "medium": 1.0, "few": 0.0, "shot_rule": "many N>=100, few N<=20",
    }
    assert report["shots"]["strict"]["medium"] == 0.5  # the rule headline does not take


def test_a_group_without_classes_stays_none_in_the_headline():
    # Counts 30 and 40: no class has 100 images or 20 or fewer, so many and few are empty (None), medium all.
    report = accuracy_report(np.eye(2)[[0, 1, 1]], np.array([0, 1, 1]), np.array([30, 40]), [Subset("all", (0, 1))])
    assert headline(report) == {"overall": 1.0, "many": None, "medium": 1.0, "few": None, "shot_rule": "many N>=100, few N<=20"}


@pytest.mark.parametrize("sets, options", [
    ([], {"num_cpus": 1.0, "num_gpus": 0.0}),
    (["evaluate.resources.cpus_per_worker=2", "evaluate.resources.gpus_per_worker=0.25"], {"num_cpus": 2.0, "num_gpus": 0.25}),
])
def test_the_test_task_reserves_the_evaluate_resources(sets, options):
    assert task_options(load_config(None, sets)) == options
