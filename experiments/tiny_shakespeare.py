"""The tiny Shakespeare experiment as Python: build an ExperimentConfig, call model_pipeline.

Run with:  .venv/bin/python experiments/tiny_shakespeare.py
"""

from __future__ import annotations

from pathlib import Path

from baseline import ExperimentConfig, LoggingConfig, RunConfig, TrainConfig, model_pipeline
from baseline_bpe import BPETokenizerConfig
from baseline_decoder import BaselineDecoderConfig
from baseline_holdout import HoldoutSplitConfig
from baseline_text import LocalTextDatasetConfig

ROOT = Path(__file__).resolve().parents[1]


def build_config() -> ExperimentConfig:
    """The same experiment as tiny_shakespeare.toml."""
    return ExperimentConfig(
        run=RunConfig(
            project_name="tiny-shakespeare",
            artifacts_root=str(ROOT / "artifacts" / "runs"),
            checkpoint_every_n_steps=250,
            seed=1337,
        ),
        dataset=LocalTextDatasetConfig(
            path=str(ROOT / "data" / "tinyshakespeare.txt"), segment_delimiter="\n\n"
        ),
        tokenizer=BPETokenizerConfig(
            base_vocab_size=4096,
            num_special_tokens=1,
            vocab_path=str(ROOT / "artifacts" / "tokenizers" / "tiny_shakespeare_bpe4096.json"),
        ),
        model=BaselineDecoderConfig(
            d_model=128, n_heads=4, layers=4, position_encoding="rope", qk_norm=True
        ),
        train=TrainConfig(
            max_time_s=105,
            epochs=2,  # or 105 s, whichever ends first (more epochs overfit this corpus)
            learning_rate=8e-3,
            optimizer="muon",
            warmup_steps=100,
            lr_schedule="cosine",
            adam_beta2=0.99,
            weight_decay=0.3,
            batch_size=16,
            seq_len=64,
            stride=32,
        ),
        split=HoldoutSplitConfig(train_fraction=0.9, seed=42, shuffle=False),
        logging=LoggingConfig(provider="console", log_every_n_steps=10),
    )


def main() -> int:
    """Train and print where the artifacts are."""
    result = model_pipeline(build_config())
    print(result.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
