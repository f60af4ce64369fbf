"""Benchmark of the Fast AutoAugment search (not a test): where the time of a search goes.

Runs the default search (``SearchConfig()``: digits, small_cnn; ``--trials/--splits/--epochs`` shrink it)
and reports, next to their targets:

1. wall and device seconds per phase (``SearchResult.costs``);
2. images forwarded per second in phase 2;
3. the share of phase-2 time spent augmenting (measured outside Ray on one child model, same calls as
   ``density.evaluate_policy``; target <= 30%);
4. policy-trial throughput with 1 and 2 concurrent trials (target: 2 >= 1.6x of 1), start-up apart;
5. fixed overhead per trial (child-model load, Tune scheduling);
6. search device time / one final training, as run and for the paper's setting from measured
   per-image WRN-40-2 costs (target <= 1x).

With ``--cluster`` it measures instead, on a real Ray cluster on loopback (``ray start``, one CPU per
node; see ``scripts/loopback_cluster.py``):

7. policy-trial (phase 2) throughput of a search joined with ``--address`` on two nodes against one
   node (target: two >= 1.6x one), which nodes ran phase 2, and the child-cache hits;
8. the per-trial fixed overhead after the child cache: child load (``load_seconds``), data access
   (``data_seconds``) and Tune's share per trial.

Run from the repository root:
    PYTHONPATH=. python scripts/bench_search.py [--trials N --splits K --epochs E] [--json PATH]
    PYTHONPATH=. python scripts/bench_search.py --cluster [--cluster-trials N] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from policysearch.arguments import whole_number
from policysearch.augment.policy import software_versions
from policysearch.augment.standard import trivialaugment_policy
from policysearch.augment.transforms import BatchPolicyTransform
from policysearch.search import SearchConfig, prepare, run_search
from policysearch.search.candidates import candidate_recipes
from policysearch.search.config import DEFAULT_SPACE
from policysearch.search.domain import PROBE_VIEWS, DomainFit, probe_levels, probed_ops
from policysearch.search.spaces import load_space
from policysearch.search.tuning import start_ray
from policysearch.training.data import baseline_for, load_dataset, normalize
from policysearch.training.models import build_model
from policysearch.training.pretrained import min_image_size
from policysearch.training.train import train_model

TARGET_AUG_SHARE = 0.30
TARGET_SPEEDUP_2 = 1.6
TARGET_PAPER_RATIO = 1.0
TARGET_CLUSTER_SPEEDUP = 1.6

# The paper's setting (Fast AutoAugment, reduced CIFAR-10, WRN-40-2).
PAPER = {"train_images": 4000, "splits": 5, "dm_ratio": 0.6, "child_epochs": 200, "trials": 200,
         "da_images": 1600, "views": 5, "final_images": 50000, "final_epochs": 200}


class _Recorder(io.TextIOBase):
    """A stream for run_search's progress lines that stamps each finished phase-2 trial."""

    def __init__(self, echo: bool) -> None:
        self.echo, self.phase2_done = echo, []

    def write(self, text: str) -> int:
        if text.startswith("[phase 2"):
            self.phase2_done.append(time.monotonic())
        if self.echo:
            sys.stdout.write(text)
        return len(text)

    def flush(self) -> None:
        if self.echo:
            sys.stdout.flush()


def _read_trials(run_dir: Path) -> list[dict]:
    with open(run_dir / "trials.csv", newline="", encoding="utf-8") as handle:
        return [{k: float(v) if k in ("seconds", "load_seconds", "data_seconds") else v for k, v in row.items()}
                for row in csv.DictReader(handle) if row["status"] == "ok"]


def run_timed_search(config: SearchConfig, echo: bool) -> dict:
    """One run_search into a temporary folder, with per-trial completion times of phase 2."""
    recorder = _Recorder(echo)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        run_dir = Path(folder) / "run"
        result = run_search(config, run_dir, stream=recorder)
        rows = _read_trials(run_dir)
        children = sorted(glob.glob(str(run_dir / "tune" / result.run_id / "phase1_children" / "**" / "child.pt"),
                                     recursive=True))
        child_state = torch.load(children[0], weights_only=True, map_location="cpu") if children else None
    p2_start, p2_end = result.spans["phase2"]
    done = sorted(recorder.phase2_done)
    n = len(rows)
    in_trial = [r["seconds"] for r in rows]
    loads = [r["load_seconds"] for r in rows]
    first_done = done[0] - p2_start if done else float("nan")
    after_first = (n - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else float("nan")
    concurrency = config.max_concurrent or (os.cpu_count() or 1)
    return {
        "costs": dict(result.costs),
        "trials": n,
        "concurrency": concurrency,
        "phase2_tuner_wall_s": p2_end - p2_start,
        "first_trial_done_s": first_done,
        "startup_overhead_s": first_done - in_trial[0] if in_trial else float("nan"),
        "trials_per_s_after_first": after_first,
        "trial_seconds_mean": statistics.mean(in_trial),
        "load_seconds_mean": statistics.mean(loads),
        "data_seconds_mean": statistics.mean(r.get("data_seconds", 0.0) for r in rows),
        "child_cache_hits": sum(1 for r in rows if r.get("child_cached") == "True"),
        "phase2_nodes": sorted({r.get("node_id", "") for r in rows}),
        "load_seconds_max": max(loads),
        "load_seconds_first_use": sorted(loads, reverse=True)[:concurrency],
        "trials_loading_over_10ms": sum(1 for x in loads if x > 0.01),
        # Tune's share per trial after start-up: the wall one concurrency slot spends per trial (from the
        # steady throughput), minus the in-trial seconds.
        "scheduling_overhead_per_trial_s": min(concurrency, n) / after_first - statistics.mean(in_trial),
        "child_state": child_state,
    }


def measure_augment_share(config: SearchConfig, child_state, num_policies: int, seed: int) -> dict:
    """Augment vs forward time on D_A x views for sampled policies, as evaluate_policy runs them."""
    prepared = prepare(config)
    data = prepared.data
    model = build_model(config.model, data.num_classes, data.images.shape[1])
    if child_state is not None:
        model.load_state_dict(child_state["model"])
    model.eval()
    _, da = prepared.splits[0]
    index = torch.as_tensor(da)
    images, labels = data.images[index], data.labels[index]
    rng = np.random.default_rng(seed)
    t_aug = t_fwd = 0.0
    batch_size = 1024  # evaluate_policy's default
    for _ in range(num_policies):
        policy = prepared.space.decode(prepared.space.sample(rng))
        augment = BatchPolicyTransform(policy)
        generator = torch.Generator().manual_seed(config.seed * 1000)
        with torch.inference_mode():
            for _ in range(config.num_views):
                for start in range(0, len(images), batch_size):
                    chunk = slice(start, start + batch_size)
                    t0 = time.perf_counter()
                    x = augment(images[chunk], generator)
                    t1 = time.perf_counter()
                    logits = model(normalize(x, prepared.mean, prepared.std)).float()
                    loss = F.cross_entropy(logits, labels[chunk], reduction="none")
                    correct = logits.argmax(1) == labels[chunk]
                    float(loss.sum()), int(correct.sum())
                    t2 = time.perf_counter()
                    t_aug += t1 - t0
                    t_fwd += t2 - t1
    views = len(images) * config.num_views * num_policies
    return {"policies": num_policies, "da_images": len(images), "views": config.num_views,
            "image_shape": list(images.shape[1:]), "augment_s": t_aug, "forward_s": t_fwd,
            "augment_share": t_aug / (t_aug + t_fwd), "augment_per_image_s": t_aug / views,
            "forward_per_image_s": t_fwd / views, "trained_child": child_state is not None}


def measure_final_training(config: SearchConfig) -> dict:
    """Train the child architecture once on the whole training split with the search's epochs."""
    prepared = prepare(config)  # mean and std of the data set
    data = load_dataset(config.dataset, split="train", data_root=config.data_root, image_size=config.image_size,
                        least_side=min_image_size(config.model))  # sized as the search sizes it
    model = build_model(config.model, data.num_classes, data.images.shape[1])
    t0 = time.perf_counter()
    train_model(model, data, config.train_config(), baseline=baseline_for(config.dataset, data.images.shape[-1]),
                mean=prepared.mean, std=prepared.std, device="cpu")
    seconds = time.perf_counter() - t0
    return {"images": len(data), "epochs": config.epochs, "seconds": seconds,
            "per_image_step_s": seconds / (len(data) * config.epochs)}


def measure_wrn(train_batches: int, infer_batches: int, seed: int) -> dict:
    """Per-image training-step and inference cost of WRN-40-2 at 32x32 RGB, plus augmenting at that size."""
    torch.manual_seed(seed)
    model = build_model("wrn40_2", 10, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    tb, ib = 32, 128
    x = torch.randn(tb, 3, 32, 32)
    y = torch.randint(0, 10, (tb,))
    model.train()
    timings = []
    for k in range(train_batches + 1):  # the first batch warms up
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k:
            timings.append(time.perf_counter() - t0)
    train_per_image = sum(timings) / (len(timings) * tb)
    model.eval()
    xi = torch.randn(ib, 3, 32, 32)
    timings = []
    with torch.inference_mode():
        for k in range(infer_batches + 1):
            t0 = time.perf_counter()
            model(xi).argmax(1)
            if k:
                timings.append(time.perf_counter() - t0)
    infer_per_image = sum(timings) / (len(timings) * ib)
    space = load_space("fast_autoaugment")
    rng = np.random.default_rng(seed)
    batch = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(seed)
    t_aug, count = 0.0, 0
    for _ in range(10):
        augment = BatchPolicyTransform(space.decode(space.sample(rng)))
        t0 = time.perf_counter()
        augment(batch, generator)
        t_aug += time.perf_counter() - t0
        count += len(batch)
    return {"train_batch": tb, "train_batches": train_batches, "infer_batch": ib, "infer_batches": infer_batches,
            "train_per_image_s": train_per_image, "infer_per_image_s": infer_per_image,
            "augment_per_image_s": t_aug / count}


def paper_ratio(wrn: dict) -> dict:
    """Search / final training in the paper's setting, from measured per-image costs, for every phase of
    this search at its selection defaults: phase 1's children, phase 1b's probes (one forward of D_A per
    op and level), phase 2's density matching (the paper's B=200, T=1) and phase 3's selection, which
    trains each candidate recipe on the first cross-fit fold and the raced share of them on the others,
    at the final training's epochs on the search's images.

    Phase 3 keeps ``ceil(keep x candidates)``, plus the standard recipe when it is not among them, so the
    ratio is a range (``ratio`` to ``ratio_worst``). The candidates are those of a data set with a crop
    and no op excluded by the domain fit; an excluded TrivialAugment op adds two. ``ratio_phases_1_and_2``
    is the paper's own procedure. Evaluations of held-out images (a few ten thousand forwards) are left out.
    """
    p, defaults = PAPER, SearchConfig()
    stand_in = trivialaugment_policy()  # any policy: only the number of candidates matters here
    candidates = len(candidate_recipes(baseline_for("cifar10", 32), DomainFit(ops={}), stand_in,
                                       strengths=defaults.strengths))
    kept = math.ceil(defaults.selection_keep * candidates)
    folds = defaults.selection_folds * defaults.selection_repeats
    trainings = [candidates + survivors * (folds - 1) for survivors in (kept, kept + 1)]
    fold_images = p["train_images"] * (defaults.selection_folds - 1) / defaults.selection_folds
    probes = 1 + sum(len(probe_levels(op)) for op in probed_ops(load_space(DEFAULT_SPACE)) if op != "Identity")
    child_steps = p["splits"] * p["train_images"] * p["dm_ratio"] * p["child_epochs"]
    probe_forwards = p["splits"] * p["da_images"] * probes * PROBE_VIEWS
    forwards = p["splits"] * p["trials"] * p["da_images"] * p["views"]
    selection_steps = [n * fold_images * p["final_epochs"] for n in trainings]
    final_steps = p["final_images"] * p["final_epochs"]
    t_train, t_infer, t_aug = wrn["train_per_image_s"], wrn["infer_per_image_s"], wrn["augment_per_image_s"]
    phases_1_and_2_s = child_steps * t_train + forwards * (t_infer + t_aug)
    search_s = [phases_1_and_2_s + probe_forwards * (t_infer + t_aug) + steps * (t_train + t_aug)
                for steps in selection_steps]
    final_s = final_steps * (t_train + t_aug)
    return {"formula": "(splits*train_images*dm_ratio*child_epochs*t_train + (splits*da_images*probes*probe_views + "
                       "splits*trials*da_images*views)*(t_infer + t_augment) + selection_trainings*fold_images*"
                       "final_epochs*(t_train + t_augment)) / (final_images*final_epochs*(t_train + t_augment))",
            "setting": {**p, "candidates": candidates, "selection_trainings": trainings, "fold_images": fold_images,
                        "probes": probes},
            "child_image_steps": child_steps, "probe_forwards": probe_forwards, "phase2_forwards": forwards,
            "selection_image_steps": selection_steps, "final_image_steps": final_steps, "search_s": search_s,
            "final_s": final_s, "ratio": search_s[0] / final_s, "ratio_worst": search_s[1] / final_s,
            "ratio_phases_1_and_2": phases_1_and_2_s / final_s}


def default_ratio(run: dict, config: SearchConfig, final: dict, n_train: int) -> dict:
    """The search/final ratio of the defaults, from per-image costs measured in this (maybe shrunk) run."""
    d = SearchConfig()
    c = run["costs"]
    dm = round(n_train * (1 - config.da_ratio))
    da = n_train - dm
    child_per_step = c["phase1_device_s"] / (config.splits * dm * config.epochs)
    fwd_per_view = c["phase2_device_s"] / (config.splits * config.repeats * config.trials * da * config.num_views)
    search_s = (d.splits * dm * d.epochs * child_per_step
                + d.splits * d.repeats * d.trials * da * d.num_views * fwd_per_view)
    final_s = n_train * d.epochs * final["per_image_step_s"]
    return {"formula": "(splits*|D_M|*epochs*t_child_step + splits*trials*|D_A|*views*t_phase2_view) / "
                       "(N*epochs*t_final_step), defaults of SearchConfig()",
            "t_child_step_s": child_per_step, "t_phase2_view_s": fwd_per_view,
            "t_final_step_s": final["per_image_step_s"], "ratio": search_s / final_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=whole_number, default=None, help="policy trials per split (default: SearchConfig)")
    parser.add_argument("--splits", type=whole_number, default=None)
    parser.add_argument("--epochs", type=whole_number, default=None, help="child-model (and final-model) epochs")
    parser.add_argument("--conc-trials", type=whole_number, default=16, help="trials of each concurrency run")
    parser.add_argument("--policies", type=whole_number, default=20, help="sampled policies for the augment share")
    parser.add_argument("--wrn-batches", type=whole_number, default=3)
    parser.add_argument("--json", default=None, help="write every figure here")
    parser.add_argument("--verbose", action="store_true", help="echo the search's progress lines")
    parser.add_argument("--cluster", action="store_true",
                        help="measure phase-2 throughput on a two-node loopback Ray cluster against one node instead")
    parser.add_argument("--cluster-trials", type=whole_number, default=96,
                        help="policy trials of each cluster search (enough that every node's workers start "
                             "before the phase ends)")
    args = parser.parse_args(argv)
    if args.cluster:
        return cluster_main(args)

    torch.set_num_threads(1)  # as a trial with cpus_per_trial=1 does, so direct timings compare with trials
    overrides = {k: v for k, v in (("trials", args.trials), ("splits", args.splits), ("epochs", args.epochs))
                 if v is not None}
    config = replace(SearchConfig(), **overrides)
    t_start = time.monotonic()
    out: dict = {"command": " ".join([Path(sys.executable).name] + sys.argv), "config": asdict(config),
                 "shrunk_from_defaults": overrides, "software": {**software_versions(), "ray": _ray_version(),
                 "platform": platform.platform()}, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "targets": {"augment_share_max": TARGET_AUG_SHARE, "speedup_2_over_1_min": TARGET_SPEEDUP_2,
                             "paper_ratio_max": TARGET_PAPER_RATIO}}

    # One local Ray for all three searches (run_search joins it instead of starting its own): the start-up
    # is paid once, before any timing.
    import ray

    local = start_ray(config)
    try:
        _run_all(args, config, overrides, out)
    finally:
        if local is not None:
            local.stop()  # Ray, and whatever of it would outlive ray.shutdown
        else:
            ray.shutdown()
    out["bench_wall_s"] = time.monotonic() - t_start

    _print_table(out)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=float) + "\n", encoding="utf-8")
        print(f"\nwrote {path}")
    return 0


def _run_all(args, config: SearchConfig, overrides: dict, out: dict) -> None:
    print(f"[1/5] search {overrides or 'defaults'} ...", flush=True)
    main_run = run_timed_search(config, args.verbose)
    child_state = main_run.pop("child_state")
    c = main_run["costs"]
    n_train = len(prepare(config).data)
    da = n_train - round(n_train * (1 - config.da_ratio))
    forwarded = da * config.num_views * config.trials * config.splits * config.repeats
    main_run["phase2_images_forwarded"] = forwarded
    main_run["phase2_images_per_device_s"] = forwarded / c["phase2_device_s"]
    main_run["phase2_images_per_wall_s"] = forwarded / c["phase2_wall_s"]
    out["search"] = main_run

    print("[2/5] augment vs forward on one child model ...", flush=True)
    out["augment"] = measure_augment_share(config, child_state, args.policies, config.seed)

    print("[3/5] concurrency 1 vs 2 ...", flush=True)
    conc = {}
    for k in (1, 2):
        small = replace(config, splits=1, epochs=1, trials=args.conc_trials, max_concurrent=k)
        run = run_timed_search(small, args.verbose)
        run.pop("child_state")
        conc[str(k)] = run
    conc["speedup_2_over_1"] = conc["2"]["trials_per_s_after_first"] / conc["1"]["trials_per_s_after_first"]
    out["concurrency"] = conc

    print("[4/5] final training ...", flush=True)
    final = measure_final_training(config)
    out["final_training"] = final
    out["ratio_as_run"] = {"formula": "total_device_s (every phase) / final training seconds",
                           "ratio": c["total_device_s"] / final["seconds"]}
    out["ratio_defaults_from_per_image"] = default_ratio(main_run, config, final, n_train)

    print("[5/5] WRN-40-2 per-image costs ...", flush=True)
    wrn = measure_wrn(args.wrn_batches, max(1, args.wrn_batches - 1), config.seed)
    out["wrn40_2"] = wrn
    out["paper_ratio"] = paper_ratio(wrn)


def cluster_main(args) -> int:
    """``--cluster``: the same small search joined to a 1-node and to a 2-node loopback cluster."""
    import ray

    from loopback_cluster import loopback_cluster

    torch.set_num_threads(1)
    repo = str(Path(__file__).resolve().parents[1])
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")  # the driver joins as the nodes do
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    base = replace(SearchConfig(), splits=1, trials=args.cluster_trials, epochs=1, min_steps=20, top_n=2,
                   selection_folds=2, strengths=(1.0,))
    out: dict = {"command": " ".join([Path(sys.executable).name] + sys.argv), "config": asdict(base),
                 "software": {**software_versions(), "ray": _ray_version(), "platform": platform.platform()},
                 "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(),
                 "target": {"two_nodes_over_one_min": TARGET_CLUSTER_SPEEDUP}, "runs": {}}
    t_start = time.monotonic()
    for nodes in (1, 2):
        print(f"[cluster] {nodes} node(s), {args.cluster_trials} policy trials ...", flush=True)
        with loopback_cluster(nodes - 1, env) as cluster, tempfile.TemporaryDirectory(prefix="bench-storage-") as store:
            config = replace(base, address=cluster.address, storage=store, max_concurrent=nodes)
            try:
                run = run_timed_search(config, args.verbose)
            finally:
                ray.shutdown()
            run.pop("child_state")
            run["nodes"] = nodes
            run["node_ids"] = [cluster.head_node_id, *cluster.worker_node_ids]
            out["runs"][str(nodes)] = run
    one, two = out["runs"]["1"], out["runs"]["2"]
    out["speedup_two_over_one"] = two["trials_per_s_after_first"] / one["trials_per_s_after_first"]
    out["per_trial_fixed_overhead_s"] = {
        f"{n}_node": {"child_load_mean": r["load_seconds_mean"], "child_load_max": r["load_seconds_max"],
                      "child_cache_hits": f"{r['child_cache_hits']}/{r['trials']}",
                      "data_access_mean": r["data_seconds_mean"], "tune_per_trial": r["scheduling_overhead_per_trial_s"]}
        for n, r in (("1", one), ("2", two))}
    out["load_average_end"] = os.getloadavg()
    out["bench_wall_s"] = time.monotonic() - t_start
    print(f"\nphase-2 trials/s after the first: 1 node {one['trials_per_s_after_first']:.2f}, 2 nodes "
          f"{two['trials_per_s_after_first']:.2f} -> {out['speedup_two_over_one']:.2f}x (target >= "
          f"{TARGET_CLUSTER_SPEEDUP}x {_mark(out['speedup_two_over_one'] >= TARGET_CLUSTER_SPEEDUP)}); "
          f"2-node phase 2 ran on {len(two['phase2_nodes'])} node(s)")
    for name, figures in out["per_trial_fixed_overhead_s"].items():
        print(f"fixed overhead per trial, {name}: " + ", ".join(f"{k} {v:.4f} s" if isinstance(v, float) else f"{k} {v}"
                                                                for k, v in figures.items()))
    print(f"load average start {out['load_average_start']}, end {out['load_average_end']}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=float) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _ray_version() -> str:
    import ray

    return ray.__version__


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def _print_table(o: dict) -> None:
    s, c, a, k = o["search"], o["search"]["costs"], o["augment"], o["concurrency"]
    cfg = o["config"]
    rows = [
        ("search", f"{cfg['splits']} splits x {cfg['trials']} trials, {cfg['epochs']} epochs, {cfg['model']}", ""),
        ("phase 1 wall / device s", f"{c['phase1_wall_s']:.1f} / {c['phase1_device_s']:.1f}", ""),
        ("phase 2 wall / device s", f"{c['phase2_wall_s']:.1f} / {c['phase2_device_s']:.1f}", ""),
        ("phase 3 wall s", f"{c['phase3_wall_s']:.2f}", ""),
        ("phase 2 images/s (device)", f"{s['phase2_images_per_device_s']:.0f} ({s['phase2_images_forwarded']} views)", ""),
        ("phase 2 images/s (wall)", f"{s['phase2_images_per_wall_s']:.0f}", ""),
        ("augment share of phase 2", f"{a['augment_share']:.1%} ({a['policies']} policies)",
         f"<= {TARGET_AUG_SHARE:.0%} {_mark(a['augment_share'] <= TARGET_AUG_SHARE)}"),
        ("trials/s after first, 1 conc.", f"{k['1']['trials_per_s_after_first']:.2f}", ""),
        ("trials/s after first, 2 conc.", f"{k['2']['trials_per_s_after_first']:.2f}", ""),
        ("speed-up 2 over 1", f"{k['speedup_2_over_1']:.2f}x",
         f">= {TARGET_SPEEDUP_2}x {_mark(k['speedup_2_over_1'] >= TARGET_SPEEDUP_2)}"),
        ("start-up to first result 1 / 2", f"{k['1']['first_trial_done_s']:.1f} / {k['2']['first_trial_done_s']:.1f} s", ""),
        ("in-trial seconds mean", f"{s['trial_seconds_mean']:.3f} s", ""),
        ("child load mean / max", f"{s['load_seconds_mean']:.3f} / {s['load_seconds_max']:.3f} s", ""),
        ("Tune overhead per trial", f"{s['scheduling_overhead_per_trial_s']:.3f} s (1 conc.: "
         f"{k['1']['scheduling_overhead_per_trial_s']:.3f}, 2 conc.: {k['2']['scheduling_overhead_per_trial_s']:.3f})", ""),
        ("final training s", f"{o['final_training']['seconds']:.1f}", ""),
        ("search device / final (as run)", f"{o['ratio_as_run']['ratio']:.2f}x", ""),
        ("phases 1 and 2, defaults (per-image)", f"{o['ratio_defaults_from_per_image']['ratio']:.2f}x", ""),
        ("WRN-40-2 train / infer / aug per img", f"{o['wrn40_2']['train_per_image_s'] * 1e3:.2f} / "
         f"{o['wrn40_2']['infer_per_image_s'] * 1e3:.2f} / {o['wrn40_2']['augment_per_image_s'] * 1e3:.3f} ms", ""),
        ("paper setting, phases 1 and 2 only", f"{o['paper_ratio']['ratio_phases_1_and_2']:.2f}x", ""),
        ("paper setting search / final", f"{o['paper_ratio']['ratio']:.2f}-{o['paper_ratio']['ratio_worst']:.2f}x",
         f"<= {TARGET_PAPER_RATIO:.0f}x {_mark(o['paper_ratio']['ratio'] <= TARGET_PAPER_RATIO)}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':<48} target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<48} {target}")
    print(f"\npaper ratio formula: {o['paper_ratio']['formula']}")
    print(f"threads per trial/measurement: {o['torch_threads']}, cpus: {o['cpu_count']}")


if __name__ == "__main__":
    sys.exit(main())
