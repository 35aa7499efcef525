import math

import pytest
import torch
import torch.nn.functional as F

from lfme.losses import lfme_loss, subset_kd_loss


def test_subset_kd_hand_value():
    # classes (0, 2); teacher (2 ln 3, 0) / T=2 -> softmax (3/4, 1/4); student (0, 0) -> (1/2, 1/2)
    # CE = -(3/4 ln 1/2 + 1/4 ln 1/2) = ln 2; column 1 is outside the subset and must be ignored.
    student = torch.tensor([[0.0, 5.0, 0.0]])
    teacher = torch.tensor([[2 * math.log(3), 99.0, 0.0]])
    classes = torch.tensor([0, 2])
    assert subset_kd_loss(student, teacher, classes).item() == pytest.approx(math.log(2))
    assert subset_kd_loss(student, teacher, classes, t_squared=True).item() == pytest.approx(4 * math.log(2))


def test_subset_kd_is_kl_plus_teacher_entropy():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 10), torch.randn(6, 10) * 3
    classes = torch.tensor([1, 4, 5, 8])
    T = 3.0
    log_q = F.log_softmax(student[:, classes] / T, dim=1)
    p = F.softmax(teacher[:, classes] / T, dim=1)
    kl = F.kl_div(log_q, p, reduction="none").sum(1)
    teacher_entropy = -(p * p.log()).sum(1)
    got = subset_kd_loss(student, teacher, classes, temperature=T)
    assert got.shape == (6,)
    torch.testing.assert_close(got, kl + teacher_entropy)


def test_subset_kd_gradient_equals_kl_gradient():
    torch.manual_seed(1)
    base, teacher = torch.randn(5, 8), torch.randn(5, 8, requires_grad=True)
    classes = torch.tensor([0, 3, 7])
    s1 = base.clone().requires_grad_()
    subset_kd_loss(s1, teacher, classes).sum().backward()
    s2 = base.clone().requires_grad_()
    F.kl_div(
        F.log_softmax(s2[:, classes] / 2.0, dim=1), F.softmax(teacher.detach()[:, classes] / 2.0, dim=1),
        reduction="sum",
    ).backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    assert s1.grad[:, [1, 2, 4, 5, 6]].abs().max() == 0  # only S_l's logits are distilled
    assert teacher.grad is None  # the cached teacher is a constant


def test_lfme_loss_ce_only():
    torch.manual_seed(2)
    logits, labels = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    loss, stats = lfme_loss(logits, labels, None, [], None, None)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels))
    assert stats["ce"].item() == pytest.approx(loss.item()) and stats["kd"].item() == 0.0
    assert stats["kd_per_expert"].numel() == 0


def test_lfme_loss_instance_weights_are_batch_mean():
    logits = torch.zeros(2, 4)  # every CE_i = ln 4
    labels = torch.tensor([0, 1])
    loss, _ = lfme_loss(logits, labels, None, [], None, torch.tensor([1.0, 0.0]))
    # mean_i v_i CE_i = (1 * ln 4 + 0 * ln 4) / 2, not renormalised by sum v = 1
    assert loss.item() == pytest.approx(math.log(4) / 2)


def test_lfme_loss_with_experts():
    torch.manual_seed(3)
    logits, teacher = torch.randn(6, 7, requires_grad=True), torch.randn(6, 7)
    labels = torch.randint(0, 7, (6,))
    v = torch.rand(6)
    subsets = [torch.tensor([0, 1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])]
    w = torch.tensor([1.0, 0.5, 0.0])
    loss, stats = lfme_loss(logits, labels, teacher, subsets, w, v, temperature=2.0)
    kd = [subset_kd_loss(logits, teacher, c).mean() for c in subsets]
    ce = (v * F.cross_entropy(logits, labels, reduction="none")).mean()
    expected = ce + 1.0 * kd[0] + 0.5 * kd[1]
    torch.testing.assert_close(loss, expected)
    assert stats["ce"].item() == pytest.approx(ce.item())
    assert stats["kd"].item() == pytest.approx((kd[0] + 0.5 * kd[1]).item())
    assert stats["kd_per_expert"].tolist() == pytest.approx([k.item() for k in kd])
    # detached: logging them keeps no graph alive
    assert not any(t.requires_grad for t in (stats["ce"], stats["kd"], stats["kd_per_expert"]))
    loss.backward()
    assert logits.grad is not None


def test_lfme_loss_weight_count_mismatch():
    with pytest.raises(ValueError):
        lfme_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, 3), [torch.tensor([0])], [1.0, 1.0], None)


def test_spis_on_logits_scales_the_logits_of_both_terms():
    """The official form: instance i's logits times v_i, then unweighted CE and KD, written out by hand."""
    torch.manual_seed(0)
    z = torch.randn(3, 4)
    teacher = torch.randn(3, 4)
    labels = torch.tensor([0, 2, 3])
    v = torch.tensor([0.5, 1.0, 1.5])
    classes = [torch.tensor([0, 1]), torch.tensor([2, 3])]
    w = torch.tensor([1.0, 0.5])
    loss, parts = lfme_loss(z, labels, teacher, classes, w, v, temperature=2.0, spis_on="logits")
    scaled = z * v[:, None]
    ce = F.cross_entropy(scaled, labels)
    kd = sum(
        wl * -(F.softmax(teacher[:, c] / 2, 1) * F.log_softmax(scaled[:, c] / 2, 1)).sum(1).mean() for wl, c in zip(w, classes)
    )
    assert loss.item() == pytest.approx((ce + kd).item(), rel=1e-6)
    assert parts["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    # The paper's form on the same inputs weights the CE instead: another value.
    paper, _ = lfme_loss(z, labels, teacher, classes, w, v, temperature=2.0)
    assert paper.item() != pytest.approx(loss.item(), rel=1e-3)
    with pytest.raises(ValueError, match="spis_on"):
        lfme_loss(z, labels, teacher, classes, w, v, spis_on="grads")


def test_base_loss_offsets_by_hand():
    """Two classes of 3 and 1 training images, logits (0, 0), label 1."""
    from lfme.losses import base_loss_offsets

    counts = [3, 1]
    z, y = torch.zeros(1, 2), torch.tensor([1])
    plain, _ = lfme_loss(z, y, None, [], None, None)
    assert plain.item() == pytest.approx(math.log(2))  # softmax: p = 1/2
    assert base_loss_offsets("softmax", counts) is None
    la = base_loss_offsets("logit_adjusted", counts, tau=1.0)
    torch.testing.assert_close(la, torch.tensor([math.log(0.75), math.log(0.25)]))
    # tau = 1: softmax of (log .75, log .25) gives p_1 = 0.25, CE = log 4
    assert lfme_loss(z, y, None, [], None, None, ce_offsets=la)[0].item() == pytest.approx(math.log(4))
    # tau = 2: weights .5625 and .0625, p_1 = 0.1, CE = log 10
    la2 = base_loss_offsets("logit_adjusted", counts, tau=2.0)
    assert lfme_loss(z, y, None, [], None, None, ce_offsets=la2)[0].item() == pytest.approx(math.log(10))
    # Balanced Softmax: log n_c = (log 3, 0); the same loss as logit adjustment at tau = 1
    bs = base_loss_offsets("balanced_softmax", counts)
    torch.testing.assert_close(bs, torch.tensor([math.log(3), 0.0]))
    assert lfme_loss(z, y, None, [], None, None, ce_offsets=bs)[0].item() == pytest.approx(math.log(4))
    # a class without training images counts as one image
    assert torch.isfinite(base_loss_offsets("logit_adjusted", [3, 0])).all()
    with pytest.raises(ValueError, match="base loss must be one of"):
        base_loss_offsets("focal", counts)


def test_the_offsets_shift_the_cross_entropy_only_not_the_kd_terms():
    from lfme.losses import base_loss_offsets

    torch.manual_seed(0)
    z, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    classes = [torch.tensor([0, 1]), torch.tensor([2, 3])]
    offsets = base_loss_offsets("balanced_softmax", [40, 20, 5, 1])
    _, plain = lfme_loss(z, y, t, classes, torch.ones(2), None)
    _, adjusted = lfme_loss(z, y, t, classes, torch.ones(2), None, ce_offsets=offsets)
    torch.testing.assert_close(adjusted["kd_per_expert"], plain["kd_per_expert"])
    expected_ce = torch.nn.functional.cross_entropy(z + offsets, y)
    torch.testing.assert_close(adjusted["ce"], expected_ce)
