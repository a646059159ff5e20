"""Cuts the small real sample the repository ships: a 10-core subgraph of Gowalla.

Run from the repository root (needs ../shared/data/gowalla, the public LightGCN files):
    python3 data/gowalla-sample/cut_sample.py ../shared/data/gowalla data/gowalla-sample

1. Read train.txt and test.txt; every (user, item) pair keeps the file it came from.
2. Draw 7,000 of the 29,858 users with random.Random(2024).sample over the sorted user ids.
3. Keep their pairs; repeatedly drop users and items with fewer than 10 pairs until none is left
   (the 10-core, as in the NGCF/LightGCN preprocessing).
4. Renumber users and items 0..n-1 in increasing LightGCN id; write train.txt and test.txt in the
   LightGCN format (a line per user, items in increasing new id; users with no test pair get a
   line with the user id alone), and user_list.txt / item_list.txt mapping new id to LightGCN id.
Standard library only; the output is a function of the input files and the seed.
"""
import random
import sys
from collections import Counter
from pathlib import Path


def read(path):
    lists = {}
    for line in open(path):
        t = line.split()
        if t:
            lists[int(t[0])] = [int(x) for x in t[1:]]
    return lists


def main(src, dst):
    src, dst = Path(src), Path(dst)
    train, test = read(src / "train.txt"), read(src / "test.txt")
    pairs = [(u, i, "train") for u, items in train.items() for i in items]
    pairs += [(u, i, "test") for u, items in test.items() for i in items]
    users = set(random.Random(2024).sample(sorted(train), 7000))
    kept = [p for p in pairs if p[0] in users]
    while True:
        uc, ic = Counter(u for u, _, _ in kept), Counter(i for _, i, _ in kept)
        pruned = [p for p in kept if uc[p[0]] >= 10 and ic[p[1]] >= 10]
        if len(pruned) == len(kept):
            break
        kept = pruned
    user_ids = sorted({u for u, _, _ in kept})
    item_ids = sorted({i for _, i, _ in kept})
    new_user = {u: n for n, u in enumerate(user_ids)}
    new_item = {i: n for n, i in enumerate(item_ids)}
    for part in ("train", "test"):
        lines = {n: [] for n in range(len(user_ids))}
        for u, i, where in kept:
            if where == part:
                lines[new_user[u]].append(new_item[i])
        with open(dst / f"{part}.txt", "w") as f:
            for n in range(len(user_ids)):
                f.write(" ".join(str(x) for x in [n] + sorted(lines[n])) + "\n")
    with open(dst / "user_list.txt", "w") as f:
        f.write("remap_id lightgcn_id\n")
        f.writelines(f"{n} {u}\n" for n, u in enumerate(user_ids))
    with open(dst / "item_list.txt", "w") as f:
        f.write("remap_id lightgcn_id\n")
        f.writelines(f"{n} {i}\n" for n, i in enumerate(item_ids))
    n_test = sum(1 for p in kept if p[2] == "test")
    print(f"{len(user_ids)} users, {len(item_ids)} items, {len(kept)} interactions "
          f"({len(kept) - n_test} train, {n_test} test)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
