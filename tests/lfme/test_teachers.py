"""Tests of lfme.teachers (live and cached teacher signals, cache rows) and lfme.losses.DistillationLoss."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lfme.engine import Batch, train_epoch
from lfme.losses import DistillationLoss, lfme_loss
from lfme.subsets import Subset
from lfme.teacher_cache import TeacherRows, read_cache, write_cache
from lfme.teachers import CachedTeachers, LiveTeachers, teacher_rows

C = 5
# Non-contiguous subsets, so a wrong column scatter cannot pass by accident.
SUBSETS = [Subset("a", (0, 3)), Subset("b", (1, 4)), Subset("c", (2,))]


def linear(weight, bias) -> nn.Linear:
    weight = torch.tensor(weight, dtype=torch.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


def hand_experts():
    return [
        linear([[1, 0], [0, 1]], [0, 10]),  # a: (x0, x1 + 10) -> classes 0, 3
        linear([[2, 1], [-1, 0]], [0, 0]),  # b: (2 x0 + x1, -x0) -> classes 1, 4
        linear([[0, 3]], [-1]),  # c: 3 x1 - 1 -> class 2
    ]


def random_experts(features, seed=0):
    gen = torch.Generator().manual_seed(seed)
    experts = []
    for s in SUBSETS:
        layer = nn.Linear(features, len(s))
        with torch.no_grad():
            layer.weight.copy_(torch.randn(len(s), features, generator=gen))
            layer.bias.copy_(torch.randn(len(s), generator=gen))
        experts.append(layer)
    return experts


def cache_style_assembly(experts, images: np.ndarray) -> np.ndarray:
    """What stages.cache does: zeros (n, C), then logits[:, list(s.classes)] = expert l's output."""
    logits = np.zeros((len(images), C), dtype=np.float32)
    for expert, s in zip(experts, SUBSETS):
        w = expert.weight.detach().numpy().astype(np.float64)
        b = expert.bias.detach().numpy().astype(np.float64)
        logits[:, list(s.classes)] = images.astype(np.float64) @ w.T + b
    return logits


def test_hand_values_in_global_class_order():
    teachers = LiveTeachers(hand_experts(), SUBSETS, C)
    out = teachers(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
    # image (1, 2): a (1, 12) -> cols 0, 3; b (4, -1) -> cols 1, 4; c 5 -> col 2
    # image (-1, .5): a (-1, 10.5); b (-1.5, 1); c 0.5
    expected = torch.tensor([[1.0, 4.0, 5.0, 12.0, -1.0], [-1.0, -1.5, 0.5, 10.5, 1.0]])
    assert out.dtype == torch.float32 and out.shape == (2, C)
    torch.testing.assert_close(out, expected)


def test_equals_cache_stage_assembly():
    experts = random_experts(6)
    images = np.random.default_rng(0).standard_normal((7, 6)).astype(np.float32)
    got = LiveTeachers(experts, SUBSETS, C)(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, cache_style_assembly(experts, images), rtol=1e-5, atol=1e-5)


def test_lfme_loss_same_from_live_teachers_and_from_the_cache(tmp_path):
    experts = random_experts(4, seed=1)
    rng = np.random.default_rng(1)
    images = rng.standard_normal((9, 4)).astype(np.float32)
    labels = rng.integers(0, C, 9)
    owner = np.array([0, 1, 2, 0, 1])
    rows = TeacherRows(
        sample_ids=np.arange(9, dtype=np.int64),
        labels=labels,
        subsets=owner[labels].astype(np.int32),
        logits=cache_style_assembly(experts, images),
        confidence=np.full(9, 0.5, dtype=np.float32),
    )
    write_cache(tmp_path, {"train": rows}, fingerprint="fp", subsets=SUBSETS, experts={s.name: "0" * 64 for s in SUBSETS})
    cached = torch.from_numpy(read_cache(tmp_path, "train").logits.copy())  # float16, as distill uses it

    live = LiveTeachers(experts, SUBSETS, C)(torch.from_numpy(images))
    student = torch.from_numpy(rng.standard_normal((9, C)).astype(np.float32))
    classes = [torch.tensor(s.classes) for s in SUBSETS]
    weights = torch.tensor([1.0, 0.5, 2.0])
    y = torch.from_numpy(labels)
    loss_live, _ = lfme_loss(student, y, live, classes, weights, None)
    loss_cached, _ = lfme_loss(student, y, cached, classes, weights, None)
    # the cache holds float16: equal up to its rounding
    assert loss_live.item() == pytest.approx(loss_cached.item(), rel=1e-3)


def test_experts_are_frozen_and_no_gradient_flows():
    experts = random_experts(3)
    teachers = LiveTeachers(experts, SUBSETS, C)
    assert not any(p.requires_grad for p in teachers.parameters())

    images = torch.randn(4, 3, requires_grad=True)
    student = nn.Linear(3, C)
    with torch.enable_grad():
        target = teachers(images)
        assert not target.requires_grad
        loss, _ = lfme_loss(student(images), torch.tensor([0, 1, 2, 3]), target, [torch.tensor(s.classes) for s in SUBSETS], torch.ones(3), None)
        loss.backward()
    assert all(p.grad is None for p in teachers.parameters())
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0


def test_train_keeps_experts_in_eval_mode():
    def noisy(k):
        # dropout and batch norm behave differently in train mode: outputs would vary, running stats move
        return nn.Sequential(nn.Linear(3, k), nn.BatchNorm1d(k), nn.Dropout(0.5))

    teachers = LiveTeachers([noisy(len(s)) for s in SUBSETS], SUBSETS, C)
    assert not any(m.training for m in teachers.experts.modules())
    parent = nn.ModuleDict({"teachers": teachers}).train()  # a student's .train() reaches it this way too
    assert parent.training and teachers.training
    assert not any(m.training for m in teachers.experts.modules())

    images = torch.randn(8, 3)
    first, second = teachers(images), teachers(images)
    torch.testing.assert_close(first, second)
    for expert in teachers.experts:
        bn = expert[1]
        assert bn.num_batches_tracked.item() == 0
        torch.testing.assert_close(bn.running_mean, torch.zeros_like(bn.running_mean))
    # eval-mode values: Linear, then BN with running mean 0 / var 1 (divide by sqrt(1 + eps)), no dropout
    expected = torch.cat([e[0](images) for e in teachers.experts], 1) / (1 + 1e-5) ** 0.5
    columns = torch.cat([torch.tensor(s.classes) for s in SUBSETS])
    torch.testing.assert_close(first[:, columns], expected)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="2 experts for 3 subsets"):
        LiveTeachers(hand_experts()[:2], SUBSETS, C)
    with pytest.raises(ValueError, match="in two subsets"):
        LiveTeachers(hand_experts(), [Subset("a", (0, 3)), Subset("b", (1, 3)), Subset("c", (2, 4))], C)
    with pytest.raises(ValueError, match="in no subset"):
        LiveTeachers(hand_experts(), SUBSETS, C + 1)
    wrong_width = hand_experts()
    wrong_width[2] = linear([[0, 3], [1, 1]], [0, 0])  # 2 outputs for a 1-class subset
    with pytest.raises(ValueError, match="for 1 classes returned logits of shape \\(2, 2\\)"):
        LiveTeachers(wrong_width, SUBSETS, C)(torch.zeros(2, 2))


def _shuffled_rows(experts, images: np.ndarray, labels: np.ndarray) -> TeacherRows:
    """Cache rows of `images` stored in another order than the batches come (sample id k = image k)."""
    order = np.random.default_rng(5).permutation(len(images))
    return teacher_rows(order, labels[order], cache_style_assembly(experts, images[order]), SUBSETS)


def test_train_epoch_with_live_and_cached_teachers_takes_one_path():
    torch.manual_seed(0)
    experts = random_experts(4)
    images = torch.randn(18, 4)
    labels = torch.randint(0, C, (18,))
    batches = [(images[6 * k : 6 * k + 6], labels[6 * k : 6 * k + 6], torch.arange(6) + 6 * k) for k in range(3)]
    rows = _shuffled_rows(experts, images.numpy(), labels.numpy())
    classes = [torch.tensor(s.classes) for s in SUBSETS]
    live = LiveTeachers(experts, SUBSETS, C)
    before = [p.clone() for p in live.parameters()]
    results = {}
    for name, teachers in (("live", live), ("cache", CachedTeachers(rows))):
        student = nn.Linear(4, C)
        student.load_state_dict({"weight": torch.zeros(C, 4), "bias": torch.zeros(C)})
        loss_fn = DistillationLoss(teachers, rows, classes)
        loss_fn.expert_weights = torch.ones(3)
        stats = train_epoch(student, batches, torch.optim.SGD(student.parameters(), lr=0.1), loss_fn, torch.device("cpu"))
        results[name] = (stats, student.weight.detach().clone())
    assert results["live"][0].samples == 18 and results["live"][0].parts["kd"] > 0
    # the same training up to the cache's float16 rounding of the teacher logits
    assert results["live"][0].parts["kd"] == pytest.approx(results["cache"][0].parts["kd"], rel=1e-3)
    torch.testing.assert_close(results["live"][1], results["cache"][1], rtol=1e-3, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(before, live.parameters()))


def test_cached_teachers_find_each_image_by_sample_id():
    experts = random_experts(4, seed=2)
    images = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    labels = np.arange(8) % C
    rows = _shuffled_rows(experts, images, labels)
    batch = Batch(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), torch.tensor([7, 0, 3]))
    got = CachedTeachers(rows).targets(batch)
    want = cache_style_assembly(experts, images[[7, 0, 3]]).astype(np.float16).astype(np.float32)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), want)


def test_distillation_loss_weights_each_instance_by_its_own_row():
    experts = random_experts(4, seed=3)
    images = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)
    labels = np.arange(6) % C
    rows = _shuffled_rows(experts, images, labels)
    v_per_row = np.linspace(0.1, 0.6, 6).astype(np.float32)  # row k's weight, rows stored shuffled
    classes = [torch.tensor(s.classes) for s in SUBSETS]
    loss_fn = DistillationLoss(None, rows, classes)  # no KD: the CE term alone shows the weights
    loss_fn.instance_weights = v_per_row
    ids = torch.tensor([4, 1, 5])
    logits = torch.randn(3, C)
    batch = Batch(torch.zeros(3, 4), torch.tensor(labels[[4, 1, 5]]), ids)
    loss, _ = loss_fn(logits, batch)
    v = np.array([v_per_row[int(np.flatnonzero(rows.sample_ids == i)[0])] for i in (4, 1, 5)])
    ce = torch.nn.functional.cross_entropy(logits, batch.labels, reduction="none").numpy()
    assert loss.item() == pytest.approx(float((v * ce).mean()), rel=1e-6)


def test_teacher_rows_hold_the_cache_columns():
    logits = np.array([[2.0, 0.0, 0.0, 1.0, 5.0], [0.0, 3.0, 1.0, 0.0, 0.0]], dtype=np.float32)
    rows = teacher_rows(np.array([10, 11]), np.array([3, 1]), logits, SUBSETS)
    # SUBSETS: a = (0, 3), b = (1, 4), c = (2,); label 3 is in a, label 1 in b
    np.testing.assert_array_equal(rows.subsets, [0, 1])
    assert rows.logits.dtype == np.float16 and rows.sample_ids.dtype == np.int64
    # p_i: softmax of the label within its subset's columns: e^1 / (e^2 + e^1); e^3 / (e^3 + e^0)
    np.testing.assert_allclose(rows.confidence, [math.e / (math.e**2 + math.e), math.e**3 / (math.e**3 + 1)], rtol=1e-6)


def test_expert_confidence_is_the_label_probability_within_its_subset():
    from lfme.teachers import expert_confidence

    subsets = [Subset("a", (0, 2)), Subset("b", (1,))]
    logits = np.array([[0.0, 9.0, math.log(3)], [5.0, 0.0, 5.0]])
    # row 0, label 2 in subset a: softmax over columns 0, 2 = (1, 3) / 4 -> 3/4 (column 1 ignored)
    # row 1, label 1 alone in subset b: 1
    np.testing.assert_allclose(expert_confidence(logits, np.array([2, 1]), subsets), [0.75, 1.0], rtol=1e-6)
