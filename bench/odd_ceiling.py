"""How high can top-1 on ``fmnist-odd`` go? The ceiling that item recognition alone sets (issue #29).

The odd-one-out label needs the class of every item on the canvas. Fashion-MNIST items are
ambiguous (shirt / T-shirt / pullover / coat), so even a network that relates the items perfectly
is capped by how well it recognises each one. This script measures that cap on the CPU:

1. trains a small CNN on single 28x28 Fashion-MNIST items (train split) for ``--epochs`` and
   keeps its softmax posteriors on the test items (the items the task's validation canvases use);
2. draws ``--canvases`` item sets from the test items by the task's rule (``items - 1`` of a common
   class, one odd, ``evaluators.composed``) and decides each with the Bayes rule over the item
   posteriors: the odd class b maximising sum over slots s and common classes a != b of
   q_s(b) * prod_{j != s} q_j(a);
3. reports item top-1 and the odd-task top-1 of that decision, for 3 and 5 items per canvas.

A network that reached the odd ceiling of a given item accuracy recognises items at least that
well; the gap between the trained FasterViTs and the ceiling is the room capacity has.

    python bench/odd_ceiling.py --out results/benchmarks/odd-ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DEFAULT_OUT = ROOT / "results" / "benchmarks" / "odd-ceiling.json"


def item_classifier() -> nn.Module:
    """A small CNN for 28x28 items (~93 % on Fashion-MNIST after a few CPU epochs)."""
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(1, 32), block(32, 64), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 256),
                         nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 10))


def train_items(epochs: int, seed: int, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Train on the train items; returns (test posteriors (N, 10), test labels, item top-1 %)."""
    from evaluators.data import load_dataset

    torch.manual_seed(seed)
    data = load_dataset("fashion-mnist")
    x = data.train.images.float() / 255.0
    y = data.train.labels
    model = item_classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(len(x) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        xt = data.val.images.float() / 255.0
        logits = torch.cat([model(xt[i:i + 1000]) + model(xt[i:i + 1000].flip(-1)) for i in range(0, len(xt), 1000)])
    post = F.softmax(logits / 2, dim=1)
    acc = 100.0 * float((post.argmax(1) == data.val.labels).float().mean())
    return post, data.val.labels, acc


def odd_bayes_top1(post: torch.Tensor, labels: torch.Tensor, items: int, n: int, seed: int) -> float:
    """Top-1 % of the Bayes decision over item posteriors on ``n`` item sets drawn by the odd rule."""
    from evaluators.composed import _class_pools, _draw_instances, _odd_classes

    g = torch.Generator().manual_seed(seed)
    classes, odd = _odd_classes(n, items, g)
    inst = _draw_instances(_class_pools(labels, 10), classes, g)
    q = post[inst]                                            # (n, k, 10)
    logq = q.clamp_min(1e-12).log()
    total = logq.sum(1)                                       # (n, 10): sum_j log q_j(a)
    # score(b) = sum_s q_s(b) * sum_{a != b} prod_{j != s} q_j(a)
    prod_wo = torch.exp(total[:, None, :] - logq)             # (n, k, a): prod_{j != s} q_j(a)
    all_a = prod_wo.sum(2, keepdim=True)                      # (n, k, 1)
    wo_b = all_a - prod_wo                                    # (n, k, b): sum over a != b
    score = (q * wo_b).sum(1)                                 # (n, b)
    return 100.0 * float((score.argmax(1) == odd).float().mean())


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--canvases", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    post, labels, acc = train_items(args.epochs, args.seed)
    rows: list[dict[str, Any]] = []
    for items in (3, 5):
        top1 = odd_bayes_top1(post, labels, items, args.canvases, args.seed + items)
        rows.append(dict(items=items, odd_top1_bayes=round(top1, 2)))
        print(f"item top-1 {acc:.2f} % -> odd one out with {items} items: {top1:.2f} % (Bayes over item posteriors)")
    out = dict(benchmark="odd_ceiling", item_classifier="2x(conv3-bn-relu)x2 + MLP, flips + TTA flip, "
               f"{args.epochs} epochs AdamW one-cycle on the 60k train items", item_top1=round(acc, 2),
               canvases=args.canvases, ceilings=rows, seconds=round(time.time() - t0, 1), device="cpu",
               torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
