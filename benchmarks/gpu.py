"""GPU throughput and model FLOPs utilisation (MFU) of GPT-2-124M-size ``baseline_decoder``s.

For each model (GPT-2 style, and the Llama-style variant: RMSNorm, SwiGLU, RoPE, grouped-query
attention) and each parallelism (``ddp``, ``fsdp``), ``torchrun`` starts one process per visible
GPU. Each trains on random tokens (throughput does not depend on the text) with bf16 autocast,
``torch.compile`` and fused AdamW, and rank 0 reports the global tokens/s after warm-up and the
MFU: tokens/s times the model's training FLOPs per token (``flops_per_token``), over the peak
bf16 FLOP/s of all GPUs (``baseline.train.trainer.PEAK_BF16_FLOPS``).

    python benchmarks/gpu.py                 # every model and parallelism
    python benchmarks/gpu.py --steps 30 --models gpt2 --parallelism fsdp

Without CUDA it says so and exits 0. The FSDP runs use the core's own wrapping
(``baseline.distributed.wrapping.shard_model``): each decoder block is one unit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VOCAB = 50304  # GPT-2's 50257 rounded up to a multiple of 128
SEQ_LEN = 1024
MODELS: dict[str, dict[str, Any]] = {
    "gpt2": {"d_model": 768, "n_heads": 12, "layers": 12},
    "llama": {
        "d_model": 768,
        "n_heads": 12,
        "n_kv_heads": 4,
        "layers": 12,
        "norm": "rmsnorm",
        "mlp": "swiglu",
        "position_encoding": "rope",
    },
}


def worker(args: argparse.Namespace) -> None:
    """One process of the job: train ``args.steps`` steps and report from rank 0."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from baseline.distributed.wrapping import full_tensor, shard_model
    from baseline.train.device import peak_flops
    from baseline_decoder import BaselineDecoderConfig
    from baseline_decoder.model import DecoderModel

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # --smoke: the same code on the CPU (gloo) with a tiny model and no compilation, to check
    # the script itself on a machine without a GPU.
    device_type = "cpu" if args.smoke else "cuda"
    if not args.smoke:
        torch.cuda.set_device(local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
    dist.init_process_group("gloo" if args.smoke else "nccl")
    world = dist.get_world_size()
    device = torch.device(device_type, local_rank) if not args.smoke else torch.device("cpu")
    torch.manual_seed(0)
    shape = {**MODELS[args.model], **({"d_model": 48, "layers": 2} if args.smoke else {})}
    config = BaselineDecoderConfig(**shape)
    seq_len = 32 if args.smoke else SEQ_LEN
    model = DecoderModel(config, vocab_size=VOCAB, max_seq_len=seq_len).to(device)
    flops_per_token = model.flops_per_token(seq_len)
    parameters = sum(p.numel() for p in model.parameters())
    if args.parallelism == "fsdp":
        train_model: torch.nn.Module = shard_model(
            model, precision="bf16", device=device, reshard_after_forward=True
        )
    else:
        ids = None if args.smoke else [local_rank]
        train_model = DistributedDataParallel(model, device_ids=ids)
    optimizer = torch.optim.AdamW(train_model.parameters(), lr=3e-4, fused=True)
    compiled = train_model if args.smoke else torch.compile(train_model)
    local_batch = args.batch_size
    tokens = torch.randint(0, VOCAB, (local_batch, seq_len + 1), device=device)

    def step() -> float:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            logits = compiled(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(train_model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(full_tensor(norm))

    compile_started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    synchronize = torch.cuda.synchronize if not args.smoke else (lambda: None)
    synchronize()
    compile_s = time.perf_counter() - compile_started
    if not args.smoke:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        grad_norm = step()
    synchronize()
    elapsed = time.perf_counter() - started
    rate = args.steps * local_batch * seq_len * world / elapsed
    peak = peak_flops(device)
    if dist.get_rank() == 0:
        print(
            "RESULT "
            + json.dumps(
                {
                    "model": args.model,
                    "parallelism": args.parallelism,
                    "gpus": world,
                    "gpu": "cpu" if args.smoke else torch.cuda.get_device_name(device),
                    "parameters": parameters,
                    "tokens_per_s": rate,
                    "mfu": rate * flops_per_token / (peak * world) if peak else None,
                    "step_ms": 1000 * elapsed / args.steps,
                    "warmup_s": compile_s,
                    "peak_memory_gib": 0.0
                    if args.smoke
                    else torch.cuda.max_memory_allocated(device) / 2**30,
                    "last_grad_norm": grad_norm,
                }
            ),
            flush=True,
        )
    dist.destroy_process_group()


def launch(model: str, parallelism: str, gpus: int, args: argparse.Namespace) -> dict[str, Any]:
    """One torchrun job; the result line of its rank 0."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={gpus}",
        __file__,
        "--worker",
        f"--model={model}",
        f"--parallelism={parallelism}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--batch-size={args.batch_size}",
    ]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            parsed: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return parsed
    tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
    return {"model": model, "parallelism": parallelism, "error": " | ".join(tail)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="gpt2", choices=sorted(MODELS))
    parser.add_argument("--parallelism", default="ddp", choices=("ddp", "fsdp"))
    parser.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS))
    parser.add_argument(
        "--parallelisms", nargs="+", default=["ddp", "fsdp"], choices=("ddp", "fsdp")
    )
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (compilation)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per GPU")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    import torch

    if not torch.cuda.is_available():
        print(f"no CUDA device: benchmarks/gpu.py needs a GPU (torch {torch.__version__}); skipped")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import print_table

    gpus = torch.cuda.device_count()
    rows = []
    for model in args.models:
        for parallelism in args.parallelisms:
            result = launch(model, parallelism, gpus, args)
            print(json.dumps(result), flush=True)
            if "error" in result:
                rows.append([model, parallelism, str(gpus), "failed", "-", "-", result["error"]])
                continue
            mfu = result["mfu"]
            rows.append(
                [
                    model,
                    parallelism,
                    f"{gpus} x {result['gpu']}",
                    f"{result['tokens_per_s']:,.0f}",
                    f"{100 * mfu:.1f}%" if mfu is not None else "unknown GPU",
                    f"{result['step_ms']:.0f}",
                    f"{result['peak_memory_gib']:.1f}",
                ]
            )
    print_table(
        f"GPT-2-124M-size baseline_decoder, seq_len {SEQ_LEN}, {args.batch_size} sequences/GPU, "
        "bf16 autocast, torch.compile, fused AdamW",
        ["model", "parallelism", "GPUs", "tokens/s", "MFU", "step ms", "peak GiB"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
