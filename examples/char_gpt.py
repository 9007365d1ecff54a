"""Grow seeds inside a nanoGPT-style character model, trained by the ``esper`` command.

``GPT`` below is an ordinary decoder-only transformer (token and position embeddings, pre-norm
blocks of causal self-attention and an MLP, a tied-free ``lm_head``). The CLI injects a slot
after every block (``transformer.h.0``, ``transformer.h.1``, ...) and trains it on a text file
(``CHAR_GPT_TEXT``; default: CPython's built-in pydoc topics, no download):

    CHAR_GPT_TEXT=input.txt esper train heuristic \\
        --model examples/char_gpt.py:make_model --data examples/char_gpt.py:make_data \\
        --target-modules 'transformer\\.h\\.\\d+' --epochs 10

``python examples/char_gpt.py --text-file input.txt --epochs 10`` runs that same command.
The factories take no arguments (the command calls them), so the text comes from the
environment; both read the same text, so the model's vocabulary fits the data.
"""

from __future__ import annotations

import argparse
import functools
import math
import os

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

BLOCK_SIZE = 64
MAX_CHARS = 300_000  # enough for a CPU run of a few minutes


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's layout: ``transformer.{wte, wpe, h, ln_f}`` and ``lm_head``."""

    def __init__(
        self, vocab_size: int, block_size: int = BLOCK_SIZE, n_layer: int = 2, n_embd: int = 64
    ) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab_size, n_embd),
                "wpe": nn.Embedding(block_size, n_embd),
                "h": nn.ModuleList(Block(n_embd, n_head=4) for _ in range(n_layer)),
                "ln_f": nn.LayerNorm(n_embd),
            }
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        for name, p in self.named_parameters():  # GPT-2's init, scaled residual projections
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: Tensor) -> Tensor:  # (B, T) token ids -> (B, T, vocab) logits
        t = self.transformer
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = t["wte"](idx) + t["wpe"](pos)
        for block in t["h"]:
            x = block(x)
        return self.lm_head(t["ln_f"](x))


@functools.cache
def _corpus() -> tuple[str, tuple[str, ...]]:
    """The text (``CHAR_GPT_TEXT``, else pydoc topics) and its sorted characters."""
    path = os.environ.get("CHAR_GPT_TEXT")
    if path:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        from pydoc_data.topics import topics

        text = "\n".join(topics[k] for k in sorted(topics))
    text = text[:MAX_CHARS]
    return text, tuple(sorted(set(text)))


def make_model() -> nn.Module:
    """The ``--model`` factory: a 2-layer GPT over the corpus's characters."""
    return GPT(vocab_size=len(_corpus()[1]))


def make_data(batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    """The ``--data`` factory: (B, T) windows of token ids and their next tokens, 90/10 split."""
    text, vocab = _corpus()
    index = {ch: i for i, ch in enumerate(vocab)}
    tokens = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    n = (len(tokens) - 1) // BLOCK_SIZE
    if n < 10:
        raise ValueError(f"the text has {len(text)} characters; it needs at least {10 * BLOCK_SIZE + 1}")
    x = tokens[: n * BLOCK_SIZE].view(n, BLOCK_SIZE)
    y = tokens[1 : n * BLOCK_SIZE + 1].view(n, BLOCK_SIZE)
    cut = n - max(1, n // 10)
    shuffle = torch.Generator().manual_seed(0)
    train = DataLoader(
        TensorDataset(x[:cut], y[:cut]), batch_size=batch_size, shuffle=True, generator=shuffle
    )
    return train, DataLoader(TensorDataset(x[cut:], y[cut:]), batch_size=128)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--text-file", default=None, help="UTF-8 text to train on (default: pydoc topics)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=None, help="the run directory (default: runs/<timestamp>-...)")
    args = parser.parse_args()
    if args.text_file:
        os.environ["CHAR_GPT_TEXT"] = args.text_file
    from esper.cli.main import main as esper

    here = os.path.abspath(__file__)
    command = ["train", "heuristic", "--model", f"{here}:make_model", "--data", f"{here}:make_data"]
    command += ["--target-modules", r"transformer\.h\.\d+", "--epochs", str(args.epochs)]
    esper([*command, *(["--out", args.out] if args.out else [])])


if __name__ == "__main__":
    main()
