"""`python -m knowpack.real` (`make real`): set SmolLM2-135M-Instruct up (fetch and convert it:
`knowpack.real.smollm2`) and ask it one question."""

from __future__ import annotations

import logging
import time

from knowpack.cli.console import third_party_output
from knowpack.models import load_model
from knowpack.real.smollm2 import NAME, PROMPT, smollm2_dir


def main() -> None:
    """Set the model up and ask it the capital of France; print the answer, the folder and the time taken."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    third_party_output(False)  # as the CLI without -v: no third-party chatter
    started = time.perf_counter()
    model, tokenizer = load_model(NAME, device="cpu")
    prompt = PROMPT + "\n\nQuestion: What is the capital of France?\nAnswer:"
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    answer = tokenizer.decode(out[0, ids.input_ids.shape[1] :]).strip().splitlines()[0]
    seconds = time.perf_counter() - started
    print(f"{NAME} ready at {smollm2_dir()} ({seconds:.0f} s); the capital of France? {answer}")


if __name__ == "__main__":
    main()
