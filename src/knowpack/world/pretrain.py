"""Pretrain the organism: a small Llama-architecture model, from scratch, on the world corpus.

A plain loop rather than the transformers Trainer: the model is tiny, the run is single-process on a CPU,
and a loop we can read top to bottom makes bit-for-bit reproducibility (fixed seed, fixed thread count,
no data-loader workers) easy to see. Documents are reshuffled and re-packed into `seq_len` windows each epoch.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

from knowpack.world.config import WorldConfig

log = logging.getLogger(__name__)


def make_model(config: WorldConfig, tokenizer):
    """A randomly initialized Llama of the configured size, seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(model_config)


def _pack(docs: list[list[int]], seq_len: int, rng: random.Random):
    import torch

    order = list(range(len(docs)))
    rng.shuffle(order)
    stream = [t for i in order for t in docs[i]]
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len]).view(n, seq_len)


def pretrain(
    model,
    tokenizer,
    documents: list[str],
    config: WorldConfig,
    on_epoch: Callable[[int, float], dict] | None = None,
) -> list[dict]:
    """Train `model` on `documents` for `config.epochs`; return one record per epoch.

    `on_epoch(epoch, mean_loss)` may return extra numbers (e.g. quick accuracies) to add to the record.
    """
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed + 2)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    encoded = tokenizer(documents, add_special_tokens=False)["input_ids"]
    docs = [[bos, *ids, eos] for ids in encoded]
    n_tokens = sum(len(d) for d in docs)
    steps_per_epoch = n_tokens // config.seq_len // config.batch_size
    total = steps_per_epoch * config.epochs
    log.info("pretraining on %d documents, %d tokens, %d steps", len(docs), n_tokens, total)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))

    history = []
    step = 0
    device = next(model.parameters()).device
    bar = tqdm(total=total, desc="pretrain", unit="step")
    for epoch in range(config.epochs):
        model.train()
        t0 = time.time()
        windows = _pack(docs, config.seq_len, rng)
        losses = []
        for b in range(steps_per_epoch):
            batch = windows[b * config.batch_size : (b + 1) * config.batch_size].to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        record = {"epoch": epoch + 1, "loss": sum(losses) / len(losses), "seconds": time.time() - t0}
        if on_epoch is not None:
            model.eval()
            record.update(on_epoch(epoch + 1, record["loss"]))
        log.info("epoch %s", record)
        history.append(record)
    bar.close()
    model.eval()
    return history
