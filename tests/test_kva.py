"""Fast KVA (knowpack.methods.loki.kva) against the plain reference (tests/kva_reference.py: L·m full
passes with a hook) on tiny random models of every family in the architecture table: the same scores, the
same target, the same selections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knowpack.errors import KnowpackError
from knowpack.methods.loki.kva import kva_batch, kva_scores, prompts_per_pass
from knowpack.methods.loki.select import STRATEGIES, select_nodes
from knowpack.methods.loki.stats import KVAStats
from kva_reference import FAMILIES, naive_kva, random_model

PROMPTS = 3  # per family
LENGTH = 24  # tokens per prompt


pytestmark = pytest.mark.usefixtures("one_thread")


def prompts(n: int = PROMPTS, length: int = LENGTH, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 128, (length - i,), generator=generator) for i in range(n)]


def assert_same_scores(ours: np.ndarray, reference: torch.Tensor) -> None:
    """Per node within 1e-4 relative; nodes within 1e-5 of their layer's largest |score| of zero are held to
    that absolute floor instead (there fp32 rounding in either implementation is the whole difference)."""
    reference = reference.numpy()
    floor = 1e-5 * np.abs(reference).max(axis=1, keepdims=True)
    bad = np.abs(ours - reference) > 1e-4 * np.abs(reference) + floor
    assert not bad.any(), f"{bad.sum()} nodes differ; worst {np.abs(ours - reference)[bad].max():.3g}"


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_kva_equals_the_naive_reference_and_selects_the_same_rows(family):
    model = random_model(family, layers=4, seed=FAMILIES.index(family))
    fast, slow = KVAStats(4, 32), KVAStats(4, 32)
    for ids in prompts():
        reference, target = naive_kva(model, ids)
        result = kva_scores(model, ids)
        assert result.target == target
        assert result.scores.shape == (4, 32) and result.scores.dtype == np.float64
        assert_same_scores(result.scores, reference)
        fast.add(result.scores)
        slow.add(reference.numpy())
    for strategy in STRATEGIES:
        for quota in (10, 25, 50, 100):
            assert select_nodes(fast, quota, strategy) == select_nodes(slow, quota, strategy), (
                strategy,
                quota,
            )


def test_in_float64_the_two_agree_to_rounding():
    """The fast way is the same computation, not an approximation: in float64 nothing is left but rounding."""
    model = random_model("llama", layers=3).double()
    for ids in prompts(2):
        reference, _ = naive_kva(model, ids)
        np.testing.assert_allclose(kva_scores(model, ids).scores, reference.numpy(), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("packed", [True, False])
def test_both_row_layouts_and_passes_of_fewer_rows(packed, monkeypatch):
    """Rows packed as positions of one sequence (a custom mask) or as a batch against an expanded cache
    (flash attention, a sliding window that dropped keys), all in one pass or a few layers a pass."""
    import knowpack.methods.loki.kva as kva

    monkeypatch.setattr(kva, "_can_pack", lambda *args: packed)
    model = random_model("qwen2", layers=4, seed=3)
    ids = prompts(1)[0]
    reference = torch.from_numpy(naive_kva(model, ids)[0].numpy())
    for rows in (None, 1, 7, 10, 21):  # all; rows < m round up to a whole layer: 1, 1, 1 and 3 layers a pass
        assert_same_scores(kva_scores(model, ids, rows_per_pass=rows).scores, reference)


def test_a_sliding_window_shorter_than_the_prompt():
    import knowpack.methods.loki.kva as kva

    windowed = random_model("mistral", layers=3, seed=4)
    windowed.config.sliding_window = 8  # the cache and the masks read it at every forward
    ids = prompts(1, length=30)[0]
    assert not kva._can_pack(windowed, kva._prefix_cache(windowed, ids[:-1]), 29)  # the cache dropped keys
    reference, _ = naive_kva(windowed, ids)
    assert_same_scores(kva_scores(windowed, ids).scores, reference)
    windowed.config.sliding_window = None
    assert not np.allclose(
        kva_scores(windowed, ids).scores, reference.numpy(), rtol=1e-3
    )  # the window mattered


def test_one_token_prompt_and_other_step_counts():
    model = random_model("llama", layers=2, seed=5)
    for ids, steps in ((torch.tensor([7]), 7), (prompts(1)[0], 3)):
        reference, _ = naive_kva(model, ids, steps=steps)
        assert_same_scores(kva_scores(model, ids, steps=steps).scores, reference)


def test_completeness_and_the_probabilities_it_reports():
    """p_target is F(z), p_ablated[l] is F(0); with many steps Σ_j Attr_{l,j} approaches their difference."""
    model = random_model("llama", layers=2, seed=6)
    ids = prompts(1)[0]
    with torch.no_grad():
        probs = model(ids[None]).logits[0, -1].softmax(-1)
    result = kva_scores(model, ids, steps=64)
    assert result.p_target == pytest.approx(float(probs.max()), rel=1e-5)
    gaps = np.array([result.p_target - p for p in result.p_ablated])
    np.testing.assert_allclose(result.scores.sum(axis=1), gaps, rtol=0.05, atol=1e-3)


def test_the_model_is_left_as_it_was():
    model = random_model("llama", layers=2, seed=7).train()
    model.lm_head.weight.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    kva_scores(model, prompts(1)[0])
    assert model.training and flags == {name: p.requires_grad for name, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())
    assert not any(module._forward_hooks for module in model.modules())


def test_an_unsupported_family_is_a_one_line_error():
    import transformers

    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(KnowpackError, match="unsupported model family 'gpt2'") as err:
        kva_scores(model, [1, 2, 3])
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ several prompts at once


def batch_sizes(monkeypatch) -> list[int]:
    """Records how many prompts each forward of kva.py carried."""
    import knowpack.methods.loki.kva as kva

    seen, one_pass = [], kva._one_pass
    monkeypatch.setattr(
        kva,
        "_one_pass",
        lambda model, downs, batch, *a: seen.append(len(batch)) or one_pass(model, downs, batch, *a),
    )
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_prompts_of_unequal_lengths_in_one_batch_score_as_one_at_a_time(family, monkeypatch):
    """Right-padded prefixes in one call and every prompt's rows in the same forward and backward: the
    scores, targets and probabilities of each prompt alone, and the naive reference's."""
    model = random_model(family, layers=3, seed=10 + FAMILIES.index(family))
    batch = [prompts(1, length=n, seed=n)[0] for n in (17, 5, 24, 1, 12)]  # one a single token
    alone = [kva_scores(model, ids) for ids in batch]
    seen = batch_sizes(monkeypatch)
    together = kva_batch(model, batch)
    assert seen == [5]  # one forward carried all five
    for a, b in zip(alone, together, strict=True):
        assert (b.target, b.scores.shape) == (a.target, a.scores.shape)
        assert_same_scores(b.scores, torch.from_numpy(a.scores))  # float32 rounding (float64: 1e-9 below)
        np.testing.assert_allclose([b.p_target, *b.p_ablated], [a.p_target, *a.p_ablated], rtol=1e-5)
    for ids, result in zip(batch[:3], together, strict=False):
        reference, target = naive_kva(model, ids)
        assert result.target == target
        assert_same_scores(result.scores, reference)


def test_a_batch_in_float64_equals_one_at_a_time_to_rounding():
    model = random_model("llama", layers=3, seed=11).double()
    batch = [prompts(1, length=n, seed=n)[0] for n in (9, 20, 2)]
    for ids, result in zip(batch, kva_batch(model, batch), strict=True):
        np.testing.assert_allclose(result.scores, kva_scores(model, ids).scores, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(result.scores, naive_kva(model, ids)[0].numpy(), rtol=1e-9, atol=1e-15)


def test_a_batch_in_passes_of_fewer_rows_and_of_one_token_prompts_only(monkeypatch):
    model = random_model("qwen2", layers=4, seed=12)
    batch = [prompts(1, length=n, seed=n)[0] for n in (15, 8)]
    seen = batch_sizes(monkeypatch)
    for rows in (1, 10, 21):  # 1, 1 and 3 layers a pass
        for ids, result in zip(batch, kva_batch(model, batch, rows_per_pass=rows), strict=True):
            assert_same_scores(result.scores, naive_kva(model, ids)[0])
    assert seen == [2] * (4 + 4 + 2)
    singles = [torch.tensor([5]), torch.tensor([9])]  # no prefix at all
    for ids, result in zip(singles, kva_batch(model, singles), strict=True):
        assert_same_scores(result.scores, naive_kva(model, ids)[0])


def test_a_batch_whose_rows_cannot_be_packed_goes_one_prompt_at_a_time(monkeypatch):
    """A sliding window that dropped prefix keys (or flash attention): no shared padded batch, the same
    scores."""
    windowed = random_model("mistral", layers=3, seed=13)
    windowed.config.sliding_window = 8
    batch = [prompts(1, length=n, seed=n)[0] for n in (30, 6, 20)]
    seen = batch_sizes(monkeypatch)
    results = kva_batch(windowed, batch)
    assert seen == [1, 1, 1]
    for ids, result in zip(batch, results, strict=True):
        assert_same_scores(result.scores, naive_kva(windowed, ids)[0])
    assert kva_batch(windowed, []) == []
    with pytest.raises(KnowpackError, match="empty prompt"):
        kva_batch(windowed, [batch[0], []])


def test_prompts_per_pass_from_free_memory():
    """1 without a GPU; on one, half the free memory over a prompt's rows' estimated bytes, in [1, 16]."""
    llama8b = dict(num_layers=32, hidden=4096, intermediate=14336, vocab=128256, element_bytes=2)
    row = 32 * (4 * 14336 + 8 * 4096) * 2 + 12 * 128256  # bytes
    prompt = 225 * row  # 1 + 32 x 7 rows: ~1.6 GB
    assert prompts_per_pass(None, **llama8b) == 1
    assert prompts_per_pass(2 * 5 * prompt + 1, **llama8b) == 5
    assert prompts_per_pass(2 * 5 * prompt - 1, **llama8b) == 4
    assert prompts_per_pass(8 * 2**30, **llama8b) == 2  # a 24 GB card beside the 16 GB model
    assert prompts_per_pass(120 * 2**30, **llama8b) == 16  # an H200: capped
    assert prompts_per_pass(120 * 2**30, **llama8b, most=64) == 39
    assert prompts_per_pass(2**20, **llama8b) == 1  # never 0
    assert prompts_per_pass(2 * 5 * 33 * row + 1, **llama8b, steps=1) == 5  # 1 + 32 rows a prompt
