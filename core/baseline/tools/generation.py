"""Text generation from a trained run: temperature, top-k and top-p (nucleus) sampling."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from baseline.errors import ConfigError
from baseline.plugins.calls import plugin_call
from baseline.plugins.output_checks import component_label

if TYPE_CHECKING:
    import torch

    from baseline.tools.inference import LoadedRun


@attrs.frozen(kw_only=True)
class SamplingOptions:
    """How to pick each next token. ``temperature = 0`` is greedy decoding."""

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    num_samples: int = 1
    #: End each sample at its first end-of-segment token (the end of a speech, a document)
    #: instead of rendering the token as the dataset's delimiter and going on.
    stop_at_segment_end: bool = False

    def check(self) -> None:
        """Reject out-of-range options with a message naming the flag."""
        if self.max_new_tokens < 1:
            raise ConfigError(
                f"must be >= 1, got {self.max_new_tokens}", key_path="--max-new-tokens"
            )
        if self.temperature < 0:
            raise ConfigError(f"must be >= 0, got {self.temperature}", key_path="--temperature")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"must be >= 1, got {self.top_k}", key_path="--top-k")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.top_p}", key_path="--top-p")
        if self.num_samples < 1:
            raise ConfigError(f"must be >= 1, got {self.num_samples}", key_path="--num-samples")


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set the logits outside the top-k and outside the top-p probability mass to -inf."""
    import torch

    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def generate(run: LoadedRun, prompt: str, options: SamplingOptions | None = None) -> list[str]:
    """``options.num_samples`` continuations of ``prompt`` (each returned without the prompt).

    An empty prompt starts a new segment (after the end-of-segment token).
    """
    import torch

    options = options or SamplingOptions()
    options.check()
    with plugin_call(tokenizer_label(run)):
        prompt_ids = run.tokenizer.encode_batch([prompt])[0] if prompt else []
    context = prompt_ids or [run.end_of_segment_id]
    device = next(run.model.parameters()).device
    tokens = torch.tensor([context] * options.num_samples, dtype=torch.long, device=device)
    generator = torch.Generator()
    generator.manual_seed(options.seed if options.seed is not None else torch.seed())
    with torch.no_grad():
        for _ in range(options.max_new_tokens):
            # Sampling happens on the CPU with a private generator (reproducible anywhere).
            logits = run.model(tokens[:, -run.seq_len :])[:, -1, :].float().cpu()
            if options.temperature == 0:
                next_ids = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = filter_logits(logits / options.temperature, options.top_k, options.top_p)
                probabilities = torch.softmax(logits, dim=-1)
                next_ids = torch.multinomial(probabilities, 1, generator=generator)
            tokens = torch.cat([tokens, next_ids.to(device)], dim=1)
    start = len(context)
    return [
        render(run, row[start:].tolist(), stop_at_segment_end=options.stop_at_segment_end)
        for row in tokens
    ]


def render(run: LoadedRun, ids: list[int], *, stop_at_segment_end: bool = False) -> str:
    """Text of generated ``ids``: each end-of-segment token becomes the dataset's delimiter
    (``run.end_of_segment_text``), or, with ``stop_at_segment_end``, ends the text."""
    pieces: list[list[int]] = [[]]
    for token in ids:
        if token == run.end_of_segment_id:
            if stop_at_segment_end:
                break
            pieces.append([])
        else:
            pieces[-1].append(token)
    with plugin_call(tokenizer_label(run)):
        return run.end_of_segment_text.join(run.tokenizer.decode(piece) for piece in pieces)


def tokenizer_label(run: LoadedRun) -> str:
    """``tokenizer 'x' from <distribution>`` of a loaded run, for errors its tokenizer raises."""
    name = (run.inference_config.get("tokenizer") or {}).get("name", "tokenizer")
    return component_label("tokenizer", str(name))
