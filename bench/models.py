"""What Kiln's training benchmark (`python -m validation.models`) measures on real lab
hosts, and what its harness costs, in one run. For each `tiny` workload (resnet-tiny,
bert-tiny):

(a) samples/s in total and per rank on 1 node and on 2 nodes (one rank per node), and
    the weak-scaling efficiency E(2) = T(2) / (2 T(1)) (`validation.scaling`);
(b) the DDP bucket-size sweep on 2 nodes (`--bucket-sweep 1,5,25,100`): samples/s per
    bucket size and the best one;
(c) harness overhead: Kiln's samples/s on 2 nodes against a bare DDP loop written
    here with no Kiln imports, copied to the nodes and started by the same launcher,
    training the same transformers model from the same config (sent as JSON from
    `validation.models.presets`, so the two cannot drift), with the same per-rank
    batch, bucket_cap_mb, warm-up and timed steps, synthetic data, gloo and torch
    threads (one per rank unless --threads says otherwise: the two lab nodes share
    this host's two cores, and two threads per rank made runs differ by 20-150%)
    (target kiln/bare >= 0.95).

Runs are interleaved (kiln 1 node, kiln 2 nodes, bare 2 nodes, sweep; then kiln 1
node, bare, kiln 2 nodes, sweep: the pair's order swaps every round) and each figure
is the median of --repeats runs, printed with its spread (max - min over the median):
the lab nodes share this host's 2 CPUs, so drift hits whichever run is unlucky. The
kiln/bare ratio is the median of each round's own ratio, its two runs side by side.
The Kiln side of (c) is the 2-node run of (a). For the same reason E(2) on the lab
measures two nodes sharing two cores, not a fabric; it has no target here.

Printed, never asserted: exit 0 after printing, non-zero only when something could
not run. Run as root (it brings up its own 2-node lab, id `kmd`, and tears it down
at the end unless --keep; a kept lab is reused by the next run):

    .venv/bin/python bench/models.py [--repeats 3] [--warmup 5] [--steps 40] [--keep]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.lab_runtime import install_script, provision_runtime  # noqa: E402
from kiln.errors import KilnError  # noqa: E402
from kiln.lab.lifecycle import Lab, teardown  # noqa: E402
from kiln.role_defaults import validation_runtime  # noqa: E402
from kiln.stack import cluster_from_document  # noqa: E402
from validation.launch import HostSpec, SshLauncher  # noqa: E402
from validation.models.presets import PRESETS, Workload  # noqa: E402
from validation.models.result import ModelRun, ModelsResult  # noqa: E402
from validation.scaling import Ladder, efficiencies  # noqa: E402

PRESET = "tiny"
NODES = ("m1", "m2")
SWEEP_MB = (1, 5, 25, 100)
BUCKET_MB = 25.0  # validation.models' default --bucket-mb (DDP's own default)
TARGET = 0.95
TIMEOUT_S = 120  # validation.models --timeout: join, every step, every collective
BARE_MODULE = "kiln_bench_models_bare"

# A DDP training loop with nothing around it, as a user would write it: build the
# model from its transformers config (random weights, seed 0), wrap it in DDP with the
# given bucket_cap_mb, one synthetic batch made once in the model's input form, the
# optimizer of the recipe, `warmup` untimed steps, a barrier, `steps` timed steps, and
# the slowest rank's time. Threads: what validation.models sets (the host's cores
# shared by its ranks) unless OMP_NUM_THREADS is set. argv[1] is the JSON spec; rank 0
# writes its result to the path after --json (the launcher adds it and fetches it).
BARE = """
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
import torch, torch.distributed as dist, transformers
from torch.nn.parallel import DistributedDataParallel

spec = json.loads(sys.argv[1])
out = sys.argv[sys.argv.index("--json") + 1]
if "OMP_NUM_THREADS" not in os.environ:
    share = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, share))
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
rates = {}
for w in spec["workloads"]:
    torch.manual_seed(0)
    n, gen = w["batch"], torch.Generator().manual_seed(rank)
    if w["family"] == "resnet":
        model = transformers.ResNetForImageClassification(transformers.ResNetConfig(**w["config"]))
        side = w["image_size"]
        batch = {
            "pixel_values": torch.rand(n, 3, side, side, generator=gen) * 2 - 1,
            "labels": torch.randint(0, w["num_labels"], (n,), generator=gen),
        }
    else:
        model = transformers.BertForPreTraining(transformers.BertConfig(**w["config"]))
        ids = torch.randint(0, w["vocab_size"], (n, w["seq_len"]), generator=gen)
        masked = torch.rand(n, w["seq_len"], generator=gen) < 0.15
        batch = {
            "input_ids": ids,
            "labels": torch.where(masked, ids, -100),
            "next_sentence_label": torch.randint(0, 2, (n,), generator=gen),
        }
    ddp = DistributedDataParallel(model, bucket_cap_mb=spec["bucket_mb"])
    if w["family"] == "resnet":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        ddp(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(spec["warmup"]):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    slowest = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    rates[w["name"]] = {"samples_per_s": world * n * spec["steps"] / slowest.item(), "batch": n}
    del ddp, opt, model
if rank == 0:
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as handle:
        json.dump({"runs": rates, "torch_threads": torch.get_num_threads()}, handle)
dist.barrier()
dist.destroy_process_group()
"""


class CouldNotRun(Exception):
    """A launch failed or returned no result: the bench has nothing to report."""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 after printing (whatever was measured), 1 if something "
        "could not run.",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="N",
        help="interleaved runs of each measurement; the median is printed (default: 3)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        metavar="N",
        help="untimed steps per phase, Kiln and bare alike (default: 5)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=40,
        metavar="N",
        help="timed steps per phase, Kiln and bare alike (default: 40)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads per rank, Kiln and bare alike (OMP_NUM_THREADS; default: 1, so the "
        "two lab nodes' ranks do not oversubscribe this host's two cores, which made runs "
        "differ by 20-150%%; 0: each side's own default)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the lab up at the end (the next run reuses it)"
    )
    args = parser.parse_args()
    for name in ("repeats", "warmup", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.threads < 0:
        parser.error("--threads must be 0 or more")

    lab = Lab(bench_cluster())
    try:
        lab.preflight_host()  # root, Linux, the lab's tools: before anything changes
    except KilnError as exc:
        print(f"bench/models.py: could not run: {exc}", file=sys.stderr)
        return 1
    try:
        run(lab, args)
    except (CouldNotRun, KilnError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        print(f"bench/models.py: could not run: {exc} {detail}".rstrip(), file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            teardown(lab.layout)
    return 0


def bench_cluster():  # noqa: ANN201
    """Two computes on the bench's own lab id and subnet: never the test lab's."""
    return cluster_from_document(
        {
            "config": {
                "kiln:cluster": {
                    "name": "kiln-bench-models",
                    "lab": {"id": "kmd", "subnet": "10.77.80.0/24"},
                    "nodePools": [
                        {
                            "name": "lab",
                            "provider": "lab",
                            "hosts": [{"name": n} for n in NODES],
                        }
                    ],
                }
            }
        },
        "bench",
    )


def bring_up(lab: Lab) -> None:
    """Boot (or reuse) the lab and provision only the validation runtime, plus the bare loop."""
    result = provision_runtime(lab)
    if not result.succeeded:
        raise CouldNotRun(f"provisioning validation_runtime failed: {result.errors}")
    install_script(lab, NODES, BARE_MODULE, BARE)


def bare_spec(workloads: tuple[Workload, ...], warmup: int, steps: int) -> str:
    """What the bare loop trains, straight from the preset Kiln runs."""
    return json.dumps(
        {
            "bucket_mb": BUCKET_MB,
            "warmup": warmup,
            "steps": steps,
            "workloads": [
                {
                    "name": w.name,
                    "family": w.family,
                    "config": w.config,
                    "batch": w.batch,
                    "image_size": w.image_size,
                    "seq_len": w.seq_len,
                    "num_labels": w.num_labels,
                    "vocab_size": w.vocab_size,
                }
                for w in workloads
            ],
        },
        separators=(",", ":"),
    )


def launch(launcher: SshLauncher, module: str, args: list[str], hosts: list[HostSpec]) -> dict:
    result = launcher.launch(module, args, hosts)
    if not result.ok or not result.result:
        raise CouldNotRun(f"{module} on {', '.join(h.name for h in hosts)}:\n{result.summary()}")
    return result.result


def kiln_models(
    launcher: SshLauncher, hosts: list[HostSpec], steps: list[str], buckets: list[str]
) -> tuple[dict[str, ModelRun], dict]:
    """One `validation.models` run of the preset: its runs by workload, and its settings."""
    args = ["--preset", PRESET, "--no-split", "--timeout", str(TIMEOUT_S), *steps, *buckets]
    doc = ModelsResult.from_dict(launch(launcher, "validation.models", args, hosts))
    return {r.model: r for r in doc.metrics.runs}, doc.metrics.settings


def med(values: list[float]) -> tuple[float, float]:
    """Median and spread ((max - min) / median) of one measurement's repeats."""
    middle = statistics.median(values)
    return middle, (max(values) - min(values)) / middle if middle else float("nan")


def run(lab: Lab, args: argparse.Namespace) -> None:
    bring_up(lab)
    env = {"GLOO_SOCKET_IFNAME": "eth0"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    hosts = [HostSpec(h.name, str(h.address), env=dict(env)) for h in lab.hosts]
    launcher = SshLauncher(
        ssh_config=lab.layout.ssh_config,
        wall_timeout_s=600,
        after_failure_s=TIMEOUT_S + 30,
        **validation_runtime(),
    )
    workloads = PRESETS[PRESET]
    names = [w.name for w in workloads]
    steps = ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    spec = bare_spec(workloads, args.warmup, args.steps)
    sweep = ["--bucket-sweep", ",".join(map(str, SWEEP_MB))]

    kiln: dict[int, dict[str, list[ModelRun]]] = {1: {}, 2: {}}
    bare: dict[str, list[float]] = {}
    swept: dict[str, dict[float, list[float]]] = {}
    threads: dict[str, set] = {"kiln": set(), "bare": set()}
    batches: dict[str, set] = {}
    paired: dict[str, list[float]] = {}  # kiln / bare of the same round, side by side

    def run_kiln(n: int) -> dict[str, ModelRun]:
        runs, settings = kiln_models(launcher, hosts[:n], steps, ["--bucket-mb", f"{BUCKET_MB:g}"])
        threads["kiln"].add(settings.get("torch_threads"))
        for name in names:
            kiln[n].setdefault(name, []).append(runs[name])
        return runs

    def run_bare() -> dict:
        doc = launch(launcher, BARE_MODULE, [spec], hosts)
        threads["bare"].add(doc.get("torch_threads"))
        for name in names:
            bare.setdefault(name, []).append(doc["runs"][name]["samples_per_s"])
        return doc

    for i in range(args.repeats):
        print(f"round {i + 1} of {args.repeats} ...", file=sys.stderr, flush=True)
        run_kiln(1)
        # Kiln's 2-node run and the bare loop side by side, the order swapped every
        # round (kiln, bare; bare, kiln; ...): drift over the run and whatever the
        # first of two runs pays cancel out of the per-round ratio.
        if i % 2 == 0:
            runs, doc = run_kiln(2), run_bare()
        else:
            doc = run_bare()
            runs = run_kiln(2)
        for name in names:
            paired.setdefault(name, []).append(
                runs[name].samples_per_s / doc["runs"][name]["samples_per_s"]
            )
            batches.setdefault(name, set()).update(
                {doc["runs"][name]["batch"], runs[name].batch_per_rank}
            )
        runs, _ = kiln_models(launcher, hosts, steps, sweep)
        for name in names:
            for b in runs[name].buckets:
                swept.setdefault(name, {}).setdefault(b.bucket_mb, []).append(b.samples_per_s)

    print(
        f"lab {lab.settings.id}: nodes {', '.join(h.name for h in hosts)} (1 rank each, gloo "
        f"over eth0, sharing this host's CPUs); preset {PRESET}; synthetic data; "
        f"{args.warmup} warm-up + {args.steps} timed steps; median of {args.repeats} "
        f"(spread = (max - min) / median)"
    )
    print(
        f"torch threads per rank: kiln {sorted(threads['kiln'], key=str)}, "
        f"bare {sorted(threads['bare'], key=str)}; per-rank batch "
        + ", ".join(f"{name} {sorted(batches[name])}" for name in names)
    )

    print(f"\nscaling, bucket {BUCKET_MB:g} MB (no target on the lab)")
    print(f"{'workload':<12} {'N':>4} {'samples/s':>10} {'per rank':>9} {'spread':>7}")
    for name in names:
        t = {}
        for n in (1, 2):
            total, spread = med([r.samples_per_s for r in kiln[n][name]])
            per_rank, _ = med([r.samples_per_s_per_rank for r in kiln[n][name]])
            t[n] = total
            print(f"{name:<12} {n:>4} {total:>10.1f} {per_rank:>9.1f} {spread:>6.0%}")
        e2 = next(r.efficiency for r in efficiencies(Ladder.from_points(t)) if r.n == 2)
        print(f"{name:<12} {'E(2)':>4} {e2:>10.3f}")

    print("\nbucket sweep on 2 nodes, samples/s (spread)")
    print(f"{'workload':<12} " + " ".join(f"{f'{mb:g} MB':>14}" for mb in SWEEP_MB) + "  best")
    for name in names:
        cells, best = [], (0.0, 0.0)
        for mb in SWEEP_MB:
            value, spread = med(swept[name][float(mb)])
            cells.append(f"{value:>8.1f} ({spread:>3.0%})")
            best = max(best, (value, mb))
        print(f"{name:<12} " + " ".join(f"{c:>14}" for c in cells) + f"  {best[1]:g} MB")

    print(
        f"\nharness overhead on 2 nodes, bucket {BUCKET_MB:g} MB: kiln / bare samples/s "
        "(the median of the rounds' side-by-side ratios; the medians of each side beside it)"
    )
    print(
        f"{'workload':<12} {'kiln':>9} {'spread':>7} {'bare':>9} {'spread':>7} "
        f"{'kiln/bare':>10} {'spread':>7} {'target':>7}"
    )
    for name in names:
        k, k_spread = med([r.samples_per_s for r in kiln[2][name]])
        b, b_spread = med(bare[name])
        ratio, r_spread = med(paired[name])
        verdict = "PASS" if ratio >= TARGET else "BELOW"
        print(
            f"{name:<12} {k:>9.1f} {k_spread:>6.0%} {b:>9.1f} {b_spread:>6.0%} "
            f"{ratio:>10.3f} {r_spread:>6.0%} {f'>= {TARGET:g}':>7} {verdict}"
        )
        print(f"{'':<12} per round: " + " ".join(f"{r:.2f}" for r in paired[name]))


if __name__ == "__main__":
    sys.exit(main())
