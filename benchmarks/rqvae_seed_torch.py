r"""The seed's RQ-VAE training step in PyTorch at the shapes of rqvae_step.py; one JSON line.

  python benchmarks/rqvae_seed_torch.py --workdir=W [--batch_size=8192 --steps=20 --repeats=3]
      [--grad_norm_logs]

Run it with a Python that has torch (a CPU build; not a dependency of semrec_jax), beside
`benchmarks/rqvae_step.py` in the same session so the two figures compare. A reimplementation of
what the seed's `train_rqvae.py` computes per step, written from its description:
  - MLP encoder input-512-256-128-32 with SiLU, the mirror decoder;
  - 3 levels x 256 codes x 32 dims, each level its own quantizer: nearest code by `torch.cdist`,
    the rotation trick applied per level to that level's residual (quantized outputs summed),
    codebook MSE + beta x commitment MSE per level, a usage counter updated by scatter_add;
  - AdamW (lr 3e-4, weight decay 0.01), gradients clipped to global norm 1.0.
The seed also reads the gradient norm back to the host before and after clipping on every step
(for its logs): `--grad_norm_logs` adds those two syncs; without it the step is the leaner one.
Codebooks start at encoded rows of the data (the seed runs k-means on the first batch; that is
set-up, not the step). The first steps (warm-up) are not timed; `--repeats` times that many windows
of `--steps` steps and reports the best (the least disturbed on a shared machine) and all.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def mlp(dims: list[int]) -> nn.Sequential:
  layers = []
  for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
    layers.append(nn.Linear(a, b))
    if i < len(dims) - 2:
      layers.append(nn.SiLU())
  return nn.Sequential(*layers)


def rotate_to(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
  """Equals q in the forward pass; e's gradient passes a constant rotation + rescale (Eq. 4.2)."""
  e_norm = e.norm(dim=-1, keepdim=True)
  q_norm = q.norm(dim=-1, keepdim=True)
  u = e / e_norm.clamp(min=eps)
  v = q / q_norm.clamp(min=eps)
  w = F.normalize(u + v, p=2, dim=-1, eps=eps).detach()
  e3 = e.unsqueeze(1)
  rotated = (e3 - 2 * (e3 @ w.unsqueeze(-1) @ w.unsqueeze(-2))
             + 2 * (e3 @ u.detach().unsqueeze(-1) @ v.detach().unsqueeze(-2))).squeeze(1)
  return rotated * (q_norm / e_norm.clamp(min=eps)).detach()


class Quantizer(nn.Module):

  def __init__(self, size: int, dim: int, beta: float):
    super().__init__()
    self.beta = beta
    self.embedding = nn.Embedding(size, dim)
    self.embedding.weight.data.uniform_(-1 / size, 1 / size)
    self.register_buffer("usage_count", torch.zeros(size))

  def forward(self, x: torch.Tensor):
    indices = torch.cdist(x, self.embedding.weight).argmin(dim=1)
    quantized = self.embedding(indices)
    quantized_st = rotate_to(x, quantized) if self.training else quantized
    loss = F.mse_loss(x.detach(), quantized) + self.beta * F.mse_loss(x, quantized.detach())
    if self.training:
      self.usage_count.scatter_add_(0, indices, torch.ones_like(indices, dtype=torch.float))
    return quantized_st, quantized, indices, loss


class SeedRQVAE(nn.Module):

  def __init__(self, input_dim: int, hidden: list[int], latent: int, levels: int, size: int,
               beta: float):
    super().__init__()
    self.encoder = mlp([input_dim, *hidden, latent])
    self.decoder = mlp([latent, *reversed(hidden), input_dim])
    self.vq_layers = nn.ModuleList([Quantizer(size, latent, beta) for _ in range(levels)])

  def forward(self, x: torch.Tensor):
    z = self.encoder(x)
    residual, out, vq_loss, codes = z, torch.zeros_like(z), 0, []
    for vq in self.vq_layers:
      q_st, q, idx, loss = vq(residual)
      residual = residual - q.detach()
      out = out + q_st
      vq_loss = vq_loss + loss
      codes.append(idx)
    recon = F.mse_loss(self.decoder(out), x)
    return recon + vq_loss, codes


def grad_norm(model: nn.Module) -> float:
  grads = [p.grad for p in model.parameters() if p.grad is not None]
  return torch.norm(torch.stack([torch.norm(g, 2) for g in grads]), 2).item()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--batch_size", type=int, default=8192)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--grad_norm_logs", action="store_true")
  args = parser.parse_args()
  x = torch.from_numpy(np.load(os.path.join(args.workdir, "embeddings", "items.npy")))
  torch.manual_seed(0)
  model = SeedRQVAE(x.shape[1], [512, 256, 128], 32, 3, 256, 0.25)
  with torch.no_grad():  # codebooks at encoded rows (a stand-in for the seed's k-means seeding)
    residual = model.encoder(x[torch.randperm(len(x))[:4096]])
    for vq in model.vq_layers:
      vq.embedding.weight.data.copy_(residual[torch.randperm(len(residual))[:256]])
      residual = residual - vq(residual)[1]
  optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
  model.train()
  rows = torch.from_numpy(np.random.default_rng(0).choice(
      len(x), (args.warmup + args.repeats * args.steps, args.batch_size)))

  def step(r):
    optimizer.zero_grad()
    loss, _ = model(x[r])
    loss.backward()
    if args.grad_norm_logs:
      grad_norm(model)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    if args.grad_norm_logs:
      grad_norm(model)
    optimizer.step()
    return loss.detach()

  for r in rows[:args.warmup]:
    step(r)
  rates = []
  for window in rows[args.warmup:].split(args.steps):
    start = time.perf_counter()
    for r in window:
      loss = step(r)
    float(loss)
    rates.append(args.steps * args.batch_size / (time.perf_counter() - start))
  print(json.dumps({
      "benchmark": "rqvae_train_step_seed_torch", "batch_size": args.batch_size,
      "input_dim": x.shape[1], "levels": 3, "codebook_size": 256, "hidden_dims": [512, 256, 128],
      "grad_norm_logs": args.grad_norm_logs, "steps": args.steps,
      "steps_per_s": round(max(rates) / args.batch_size, 2), "examples_per_s": round(max(rates)),
      "examples_per_s_windows": [round(r) for r in rates],
      "torch": torch.__version__, "threads": torch.get_num_threads(),
      "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
  main()
