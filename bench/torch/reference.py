"""PyTorch side of `npm run bench:torch`: a Llama-style causal LM, its checkpoints and the reference.

  make DIR [--dim ...]     base + K checkpoints as PyTorch state dicts and as ONNX exports made by
                           torch.onnx.export (inputs input_ids, attention_mask, position_ids;
                           output logits), plus a dev set of token ids (JSONL)
  eval DIR --weights ...   the merge base + sum_i w_i (theta_i - base) in PyTorch and its
                           token-weighted mean next-token cross-entropy (nats) on the dev set,
                           timed: merge, load, forward + loss; prints one JSON line

Run with Debian's interpreter (/usr/bin/python3, packages python3-torch and python3-onnx).
The checkpoints are the base plus a random low-rank update and small dense noise per vector (the
shape of a continual pre-training delta), not trained models: the benchmark measures speed and
agreement, not merge quality.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(nn.Module):
    def __init__(self, dim, heads, kv_heads, ffn):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.attn_norm = RMSNorm(dim)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.mlp_norm = RMSNorm(dim)
        self.gate_proj = nn.Linear(dim, ffn, bias=False)
        self.up_proj = nn.Linear(dim, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, dim, bias=False)

    def repeat_kv(self, x):
        # each KV head serves heads / kv_heads query heads (as Hugging Face's Llama does it)
        b, kv, t, hd = x.shape
        rep = self.heads // self.kv_heads
        return x[:, :, None, :, :].expand(b, kv, rep, t, hd).reshape(b, kv * rep, t, hd)

    def forward(self, x, cos, sin, bias):
        b, t, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = self.repeat_kv(k), self.repeat_kv(v)
        att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + bias
        y = torch.matmul(torch.softmax(att, dim=-1), v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.o_proj(y)
        h = self.mlp_norm(x)
        return x + self.down_proj(nn.functional.silu(self.gate_proj(h)) * self.up_proj(h))


class LlamaLike(nn.Module):
    def __init__(self, vocab, dim, layers, heads, kv_heads, ffn):
        super().__init__()
        self.head_dim = dim // heads
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, heads, kv_heads, ffn) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, input_ids, attention_mask, position_ids):
        x = self.embed_tokens(input_ids)
        freqs = position_ids.to(torch.float32).unsqueeze(-1) * self.inv_freq  # [b, t, hd/2]
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)  # [b, 1, t, hd]
        cos, sin = emb.cos(), emb.sin()
        t = input_ids.shape[1]
        idx = torch.arange(t, device=input_ids.device)
        causal = idx.unsqueeze(0) <= idx.unsqueeze(1)  # [t, t]: key <= query
        keep = causal.unsqueeze(0) & (attention_mask.unsqueeze(1) > 0)  # [b, t, t]
        bias = (1.0 - keep.to(torch.float32)).unsqueeze(1) * -1e9
        for layer in self.layers:
            x = layer(x, cos, sin, bias)
        return self.lm_head(self.norm(x))


def build(args):
    return LlamaLike(args.vocab, args.dim, args.layers, args.heads, args.kv_heads, args.ffn)


def make(args):
    os.makedirs(args.dir, exist_ok=True)
    torch.manual_seed(args.seed)
    model = build(args).eval()
    with torch.no_grad():
        # norms near 1 but not all equal: torch.onnx.export shares identical initializers through
        # Identity nodes, so a base with equal norms would export another graph than its checkpoints
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.02 if "proj" in name or "lm_head" in name else 0.5)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    names = ["base"] + [f"v{i + 1}" for i in range(args.vectors)]
    g = torch.Generator().manual_seed(args.seed + 1)
    for i, name in enumerate(names):
        sd = {k: v.clone() for k, v in base.items()}
        if i > 0:
            for k, v in sd.items():
                if v.dim() == 2:  # a rank-8 update plus dense noise, about 5% of the weights' scale
                    r = 8
                    a = torch.randn(v.shape[0], r, generator=g) / math.sqrt(r)
                    b = torch.randn(r, v.shape[1], generator=g)
                    v += 0.05 * v.std() * (a @ b + 0.3 * torch.randn(v.shape, generator=g))
                else:
                    v += 0.01 * torch.randn(v.shape, generator=g)
        torch.save(sd, os.path.join(args.dir, f"{name}.pt"))
        model.load_state_dict(sd)
        ids = torch.randint(0, args.vocab, (2, 16))
        os.makedirs(os.path.join(args.dir, name), exist_ok=True)
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.arange(16).expand(2, 16).contiguous()),
            os.path.join(args.dir, name, "model.onnx"),
            input_names=["input_ids", "attention_mask", "position_ids"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "sequence_length"},
                "position_ids": {0: "batch_size", 1: "sequence_length"},
                "logits": {0: "batch_size", 1: "sequence_length"},
            },
            opset_version=14,
            do_constant_folding=True,
        )
    # the dev set: Zipf-like token ids, sequences of varying length (so batches are padded)
    rng = torch.Generator().manual_seed(args.seed + 2)
    ranks = torch.arange(1, args.vocab + 1, dtype=torch.float64)
    probs = (1.0 / ranks) / (1.0 / ranks).sum()
    with open(os.path.join(args.dir, "dev.jsonl"), "w") as f:
        for s in range(args.seqs):
            n = args.seq_len - (s % 4) * (args.seq_len // 8)
            ids = torch.multinomial(probs, n, replacement=True, generator=rng)
            f.write(json.dumps({"input_ids": ids.tolist()}) + "\n")
    with open(os.path.join(args.dir, "shape.json"), "w") as f:
        json.dump({k: getattr(args, k) for k in ("vocab", "dim", "layers", "heads", "kv_heads", "ffn", "vectors")}, f)
    print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "checkpoints": names}))


def evaluate(args):
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.dir, "shape.json")) as f:
        shape = json.load(f)
    for k, v in shape.items():
        setattr(args, k, v)
    weights = {}
    for part in filter(None, args.weights.split(",")):
        k, v = part.split("=")
        weights[k] = float(v)
    base = torch.load(os.path.join(args.dir, "base.pt"))
    # the distribution vectors, computed once outside the timing (as optimer's pool build does)
    vectors = {}
    for name in weights:
        sd = torch.load(os.path.join(args.dir, f"{name}.pt"))
        vectors[name] = {k: sd[k] - base[k] for k in base}
    seqs = [json.loads(line)["input_ids"] for line in open(os.path.join(args.dir, "dev.jsonl"))]
    with torch.inference_mode():
        t0 = time.perf_counter()
        merged = {}
        for k, b in base.items():
            acc = b.clone()
            for name, w in weights.items():
                acc.add_(vectors[name][k], alpha=w)
            merged[k] = acc
        t1 = time.perf_counter()
        model = build(args).eval()
        model.load_state_dict(merged)
        t2 = time.perf_counter()
        # batches as optimer forms them: longest first, batch x padded length <= batch_tokens
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        total, tokens, i = 0.0, 0, 0
        while i < len(order):
            length = len(seqs[order[i]])
            rows = max(1, args.batch_tokens // length)
            batch = [seqs[j] for j in order[i : i + rows]]
            i += len(batch)
            ids = torch.zeros(len(batch), length, dtype=torch.long)
            mask = torch.zeros(len(batch), length, dtype=torch.long)
            for r, s in enumerate(batch):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            pos = torch.arange(length).expand(len(batch), length) * mask
            logp = torch.log_softmax(model(ids, mask, pos).float(), dim=-1)
            nll = -logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            scored = mask[:, 1:].bool()
            total += nll[scored].double().sum().item()
            tokens += int(scored.sum())
        t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "nll": total / tokens,
                "tokens": tokens,
                "threads": torch.get_num_threads(),
                "mergeMs": (t1 - t0) * 1000,
                "loadMs": (t2 - t1) * 1000,
                "evalMs": (t3 - t2) * 1000,
            }
        )
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    for k, d in (("vocab", 32000), ("dim", 512), ("layers", 8), ("heads", 8), ("kv-heads", 4), ("ffn", 1408)):
        m.add_argument(f"--{k}", type=int, default=d)
    m.add_argument("--vectors", type=int, default=2)
    m.add_argument("--seqs", type=int, default=16)
    m.add_argument("--seq-len", type=int, default=128)
    m.add_argument("--seed", type=int, default=7)
    e = sub.add_parser("eval")
    e.add_argument("dir")
    e.add_argument("--weights", required=True)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--batch-tokens", type=int, default=8192)
    args = p.parse_args()
    make(args) if args.cmd == "make" else evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
