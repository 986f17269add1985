"""Workflow benchmark: the small ELPV pipeline, its cached re-run, a kill + resume, and Ray parallelism.

Arms (each through the real CLI, each in a fresh MODELFAB_HOME under bench/.home-pipeline):
  first   `modelfab run bench/pipelines/elpv-small.yaml`: wall time per step, screening saving, test metrics;
  cached  the same command again: every cacheable step from the cache (ratio of wall times);
  resume  the pipeline with a checkpointed tune (partial fine-tuning) killed by SIGKILL during tune, then
          `modelfab runs resume`: which steps ran twice, the epoch tune continued from;
  ray     four small pipelines (bench/pipelines/elpv-tiny.yaml on disjoint subsets) one after another with
          the local executor, then all four at once with `--executor ray --address auto` on a local Ray
          head (2 CPUs): wall times and their ratio.
  example-demo / example-full
          examples/solar-cell-inspection at demo size (what `make demo` runs) or full size (all of ELPV:
          1,800 labeled reference + 824 pool images, 200 adaptation steps): wall time per step, the
          screening saving, test metrics before and after the feedback re-tune, a cached re-run, and the
          same pipeline with the L2s tuned from the L0 instead of the L1 (the shared steps come from the
          cache), so L1 vs L0 is compared within one run.

    .venv/bin/python bench/pipeline.py [--arms first,cached,resume,ray] [--image-size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.append(str(Path(__file__).parent))
from common import ResultFile

ROOT = Path(__file__).resolve().parent.parent
HOMES = Path(os.environ.get("MODELFAB_BENCH_PIPELINE_HOME", Path(__file__).parent / ".home-pipeline")).resolve()
OUT = Path(__file__).parent / "results" / "pipeline.json"
SMALL = ROOT / "bench" / "pipelines" / "elpv-small.yaml"
EXAMPLE = ROOT / "examples" / "solar-cell-inspection" / "pipeline.yaml"
EXAMPLE_SIZES = {"demo": [], "full": ["--set", "reference=1800", "--set", "pool=824", "--set", "adapt_steps=200"]}
TINY = ROOT / "bench" / "pipelines" / "elpv-tiny.yaml"
CLI = [sys.executable, "-m", "modelfab.cli.main"]
console = Console()


def fresh_home(name: str, image_size: int) -> dict[str, str]:
    home = HOMES / name
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "MODELFAB_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("MODELFAB_DB", None)
    subprocess.run([*CLI, "models", "add-foundation", "efficientnet-lite0", "--as", "lite0", "--image-size",
                    str(image_size)], env=env, check=True, capture_output=True)  # fmt: skip
    return env


def run_cli(args: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    res = subprocess.run([*CLI, *args, "--json"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode not in ok:
        raise SystemExit(f"{' '.join(args)} exited {res.returncode}: {res.stderr.strip()[-800:]}")
    return json.loads(res.stdout), wall


def split_hash_of(ref: str, env: dict[str, str]) -> str:
    shown, _ = run_cli(["data", "show", ref], env)
    return str(shown.get("split_info", {}).get("hash", "?"))


def step_seconds(out: dict[str, Any]) -> dict[str, float]:
    return {s["name"]: round(s["seconds"] or 0.0, 2) for s in out["steps"]}


def arm_first_and_cached(results: ResultFile, image_size: int, arms: set[str]) -> None:
    env = fresh_home("small", image_size) if "first" in arms or not results.done("first") else None
    if env is None:
        return
    out, wall = run_cli(["run", str(SMALL)], env)
    steps = {s["name"]: s for s in out["steps"]}
    metrics = steps["evaluate"]["outputs"]["metrics"]["test"]
    screened = steps["screen"]["outputs"]
    results.put("first", {
        "status": out["status"], "wall_s": round(wall, 1), "steps_s": step_seconds(out),
        "filtered_fraction": screened["filtered_fraction"], "to_label": steps["label"]["outputs"]["labeled"],
        "test": {k: metrics[k] for k in ("auroc", "ap", "accuracy") if k in metrics},
        "parity": steps["export"]["outputs"]["parity"]["status"], "run": out["run"],
        "split_hashes": {ref: split_hash_of(ref, env) for ref in (steps["reference"]["outputs"]["dataset"],
                                                                  steps["pool"]["outputs"]["dataset"])},
    })
    out2, wall2 = run_cli(["run", str(SMALL)], env)
    statuses = {s["name"]: s["status"] for s in out2["steps"]}
    step_sum_first = sum(step_seconds(out).values())
    step_sum_cached = sum(step_seconds(out2).values())
    results.put("cached", {
        "wall_s": round(wall2, 1), "statuses": statuses, "steps_s": step_seconds(out2),
        "wall_ratio": round(wall / wall2, 1), "step_time_ratio": round(step_sum_first / max(step_sum_cached, 1e-3), 1),
    })


def arm_resume(results: ResultFile, image_size: int) -> None:
    env = fresh_home("resume", image_size)
    sets = ["--set", "steps.tune.with.method=partial", "--set", "steps.tune.with.config.epochs=6",
            "--set", "steps.tune.with.config.patience=6", "--set", "steps.tune.with.config.image_size=160"]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, "run", str(SMALL), *sets], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    pipelines = Path(env["MODELFAB_HOME"]) / "runs" / "pipelines"
    while not list(pipelines.glob("*/tune/checkpoints/ckpt-*.json")):
        if proc.poll() is not None:
            raise SystemExit("resume arm: the pipeline ended before tune wrote a checkpoint")
        time.sleep(0.5)
    killed_after = time.perf_counter() - t0
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = next(pipelines.iterdir()).name
    out, wall = run_cli(["runs", "resume", run_id], env)
    steps = {s["name"]: s for s in out["steps"]}
    results.put("resume", {
        "status": out["status"], "killed_after_s": round(killed_after, 1), "resume_wall_s": round(wall, 1),
        "attempts": {n: s["meta"].get("attempts", 0) for n, s in steps.items()},
        "repeated": sorted(n for n, s in steps.items() if s["meta"].get("attempts", 0) > 1 and n != "tune"),
        "tune_resumed_from_epoch": steps["tune"]["meta"].get("record", {}).get("resumed_from_epoch"),
    })


def arm_ray(results: ResultFile, image_size: int, n: int = 4, size: int = 200) -> None:
    specs = [["--set", f"size={size}", "--set", f"skip={i * size}", "--set", f"tag={chr(97 + i)}"] for i in range(n)]
    env = fresh_home("sequential", image_size)
    t0 = time.perf_counter()
    for s in specs:
        run_cli(["run", str(TINY), *s], env)
    sequential = time.perf_counter() - t0
    env = fresh_home("ray", image_size)
    ray = Path(sys.executable).parent / "ray"
    temp = tempfile.mkdtemp(prefix="mfray-", dir="/tmp")
    subprocess.run([str(ray), "start", "--head", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True)  # fmt: skip
    try:
        t0 = time.perf_counter()
        procs = [subprocess.Popen([*CLI, "run", str(TINY), *s, "--executor", "ray", "--address", "auto", "--json"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in specs]
        outs = [p.communicate() for p in procs]
        parallel = time.perf_counter() - t0
    finally:
        subprocess.run([str(ray), "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)
    failed = [o[1][-400:] for p, o in zip(procs, outs, strict=True) if p.returncode != 0]
    if failed:
        raise SystemExit(f"ray arm: {failed[0]}")
    results.put("ray", {"pipelines": n, "subset": size, "sequential_local_s": round(sequential, 1),
                        "parallel_ray_s": round(parallel, 1), "ratio": round(sequential / parallel, 2)})


def _test(out: dict[str, Any], step: str) -> dict[str, float]:
    metrics = {s["name"]: s for s in out["steps"]}[step]["outputs"]["metrics"]["test"]
    return {k: round(float(metrics[k]), 4) for k in ("auroc", "ap", "accuracy") if k in metrics}


def arm_example(results: ResultFile, image_size: int, size: str) -> None:
    env = fresh_home(f"example-{size}", image_size)
    sets = EXAMPLE_SIZES[size]
    out, wall = run_cli(["run", str(EXAMPLE), *sets], env)
    steps = {s["name"]: s for s in out["steps"]}
    again, wall2 = run_cli(["run", str(EXAMPLE), *sets], env)
    l0 = ["--set", "steps.tune.with.base=lite0", "--set", "steps.retune.with.base=lite0",
          "--set", "steps.tune.with.name=solar-cell-defect-l0", "--set", "steps.retune.with.name=solar-cell-defect-l0"]
    from_l0, wall3 = run_cli(["run", str(EXAMPLE), *sets, *l0], env)
    results.put(f"example-{size}", {
        "wall_s": round(wall, 1), "steps_s": step_seconds(out),
        "filtered_fraction": steps["screen"]["outputs"]["filtered_fraction"],
        "to_label": steps["label"]["outputs"]["labeled"],
        "test_first": _test(out, "evaluate"), "test_after_feedback": _test(out, "compare"),
        "field": {k: steps["field"]["outputs"][k] for k in ("requests", "accuracy", "corrections")},
        "compress": steps["compress"]["outputs"]["parity"].get("reason"),
        "cached_wall_s": round(wall2, 1), "cached_statuses": {s["name"]: s["status"] for s in again["steps"]},
        "from_l0": {"wall_s": round(wall3, 1), "test_first": _test(from_l0, "evaluate"),
                    "test_after_feedback": _test(from_l0, "compare"),
                    "rerun": sorted(s["name"] for s in from_l0["steps"] if s["status"] != "cached")},
    })


def table(cells: dict[str, Any]) -> None:
    t = Table(title="pipeline benchmark (bench/pipeline.py)")
    t.add_column("arm")
    t.add_column("wall (s)", justify="right")
    t.add_column("details", overflow="fold")
    if "first" in cells:
        c = cells["first"]
        t.add_row("first run", f"{c['wall_s']}", f"steps {c['steps_s']}; {c['filtered_fraction']:.1%} of the pool "
                  f"filtered, {c['to_label']} to label; test {c['test']}")
    if "cached" in cells:
        c = cells["cached"]
        t.add_row("cached re-run", f"{c['wall_s']}", f"{c['wall_ratio']}x faster wall, {c['step_time_ratio']}x in "
                  f"step time; {sorted(set(c['statuses'].values()))}")
    if "resume" in cells:
        c = cells["resume"]
        t.add_row("kill + resume", f"{c['resume_wall_s']}", f"killed after {c['killed_after_s']} s; repeated "
                  f"{c['repeated'] or 'nothing'}; tune resumed from epoch {c['tune_resumed_from_epoch']}")
    for size in EXAMPLE_SIZES:
        if f"example-{size}" in cells:
            c = cells[f"example-{size}"]
            t.add_row(f"example ({size})", f"{c['wall_s']}", f"steps {c['steps_s']}; {c['filtered_fraction']:.1%} "
                      f"filtered; test L1 {c['test_first']} -> after feedback {c['test_after_feedback']}; from L0 "
                      f"{c['from_l0']['test_first']} -> {c['from_l0']['test_after_feedback']}; cached re-run "
                      f"{c['cached_wall_s']} s")
    if "ray" in cells:
        c = cells["ray"]
        t.add_row(f"{c['pipelines']} pipelines", f"{c['sequential_local_s']} / {c['parallel_ray_s']}",
                  f"one after another (local) / at once (Ray): {c['ratio']}x")
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arms", default="first,cached,resume,ray,example-demo",
                    help="first,cached,resume,ray,example-demo,example-full")
    ap.add_argument("--image-size", type=int, default=224)
    args = ap.parse_args()
    arms = set(args.arms.split(","))
    header = {"bench": "pipeline", "image_size": args.image_size, "spec": SMALL.name,
              "split": "ELPV official seed/ratios/strata on each subset (hash-ordered windows, see data/elpv.py)",
              "seeds": [0]}
    results = ResultFile(OUT, header)
    if arms & {"first", "cached"}:
        arm_first_and_cached(results, args.image_size, arms)
    if "resume" in arms:
        arm_resume(results, args.image_size)
    if "ray" in arms:
        arm_ray(results, args.image_size)
    for size in EXAMPLE_SIZES:
        if f"example-{size}" in arms:
            arm_example(results, args.image_size, size)
    table(results.data["cells"])
    console.print(f"results: {OUT}")


if __name__ == "__main__":
    main()
