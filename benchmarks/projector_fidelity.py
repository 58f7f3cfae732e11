"""How well each projector keeps LESS's cosines, on real per-example gradients.

Exact per-example gradients (no projection) of a small Llama in training are computed
once per setting and transform; each projector then projects the same rows, and we
compare with the exact values:

* ``r(cos)``: Pearson correlation of projected with exact cosines over all
  (train, validation) pairs, LESS's similarity;
* ``MAE``: mean absolute error of those cosines;
* ``ρ(score)``: Spearman correlation of the LESS scores (mean cosine over the
  validation set) with the exact, identity-projector scores.

Settings: LoRA r = 16 on a hidden-256, 4-layer Llama (D = 376,832) and full fine-tuning
of a hidden-128, 2-layer one (the quickstart model's shape, D = 430,208); transforms
``sgd`` (train and validation plain gradients) and ``adam`` (train rows Adam-transformed
with the optimizer's real moments after 8 AdamW steps, validation rows plain, as LESS
does). Every figure is the mean over ``--seeds`` projection seeds. Prints a markdown
table; asserts nothing.

    python benchmarks/projector_fidelity.py                  # ~6 min on 1 busy core
    python benchmarks/projector_fidelity.py --ks 4096 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.feature_setup import build, tokenised_pool

SETTINGS = {
    "lora": {"hidden": 256, "layers": 4, "lora_rank": 16},
    "full": {"hidden": 128, "layers": 2, "lora_rank": None},
}


def exact_features(setting, rows, transform: str) -> torch.Tensor:
    from dataflex.gradients import FeaturePlan

    plan = FeaturePlan(setting.model, transform=transform, optimizer=setting.optimizer)
    out = []
    for a in range(0, len(rows), 16):
        out.append(plan.features(setting.collator(rows[a : a + 16])))
    return torch.cat(out)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def metrics(train: torch.Tensor, val: torch.Tensor, exact_cos: torch.Tensor) -> dict[str, float]:
    from scipy.stats import spearmanr

    cos = unit(train) @ unit(val).t()
    r = torch.corrcoef(torch.stack([cos.flatten(), exact_cos.flatten()]))[0, 1].item()
    rho = spearmanr(cos.mean(1).numpy(), exact_cos.mean(1).numpy()).statistic
    return {"r_cos": r, "mae": (cos - exact_cos).abs().mean().item(), "rho_score": float(rho)}


def projector(name: str, dim: int, k: int, seed: int):
    from dataflex.projectors import RademacherProjector, SJLTProjector

    if name == "rademacher":
        return RademacherProjector(dim, k, seed=seed, cache_bytes=0)
    s = int(name.split("s=")[1])
    return SJLTProjector(dim, k, seed=seed, nnz_per_column=s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument(
        "--methods", nargs="+", default=["rademacher", "sjlt s=1", "sjlt s=2", "sjlt s=4", "sjlt s=8"]
    )
    p.add_argument("--train", type=int, default=64)
    p.add_argument("--val", type=int, default=16)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    pool = tokenised_pool(96, 160)
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(pool), generator=g)[: args.train + args.val].tolist()
    rows = [pool[i] for i in pick]
    train_rows, val_rows = rows[: args.train], rows[args.train :]
    results = []
    for sname in args.settings:
        setting = build(sname, examples=pool, **SETTINGS[sname])
        val = exact_features(setting, val_rows, "sgd")
        train = {t: exact_features(setting, train_rows, t) for t in ("sgd", "adam")}
        stacked = torch.cat([train["sgd"], train["adam"], val])
        exact = {t: unit(train[t]) @ unit(val).t() for t in train}
        n = args.train
        for k in args.ks:
            for method in args.methods:
                per_seed: dict[str, list[dict[str, float]]] = {"sgd": [], "adam": []}
                seconds = []
                for seed in range(args.seeds):
                    proj = projector(method, setting.dim, k, seed)
                    t0 = time.perf_counter()
                    f = proj.project(stacked)  # one call: P is generated once for all rows
                    seconds.append(time.perf_counter() - t0)
                    fv = f[2 * n :]
                    per_seed["sgd"].append(metrics(f[:n], fv, exact["sgd"]))
                    per_seed["adam"].append(metrics(f[n : 2 * n], fv, exact["adam"]))
                for t, ms in per_seed.items():
                    row = {
                        "setting": sname,
                        "D": setting.dim,
                        "transform": t,
                        "k": k,
                        "method": method,
                        **{m: statistics.mean(x[m] for x in ms) for m in ms[0]},
                        "seconds_per_row": statistics.mean(seconds) / len(stacked),
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
    print()
    print("| setting | transform | k | method | r(cos) | MAE | ρ(score) | ms/row |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['setting']} (D={r['D']:,}) | {r['transform']} | {r['k']} | {r['method']} | "
            f"{r['r_cos']:.3f} | {r['mae']:.4f} | {r['rho_score']:.3f} | {1000 * r['seconds_per_row']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
