"""Run every benchmark and drill, then write one markdown report with a table of figures and PNG plots.

    .venv/bin/python drills/report.py            # the full run (load 600 s, fuzz >= 1,000 cases)
    .venv/bin/python drills/report.py --quick    # a smoke run of everything (~20 minutes)
    .venv/bin/python drills/report.py --only load fuzz --load-seconds 60

Each step is its own process with a time limit: one that fails, crashes or times out is a FAIL
row in the table (with the tail of its output), and the report is still written. Output:
var/drills/report/REPORT.md, latency_per_lane.png, latency_per_request.png, throughput.png,
memory.png, and each step's full output beside them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from drills.harness import OUT, ROOT, ensure_services

REPORT = OUT / "report"
PY = sys.executable


@dataclass
class Step:
    name: str
    kind: str  # benchmark | drill
    argv: list[str]
    timeout: float
    result_file: str | None = None  # var/drills/<name>.json written by a drill
    proves: str = ""
    status: str = "not run"
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    tail: str = ""


def steps(quick: bool, load_seconds: float, fuzz_examples: int) -> list[Step]:
    d, b = str(ROOT / "drills"), str(ROOT / "bench")
    fault = [f"{d}/faults.py"]
    protect = [f"{d}/protection.py"]
    q = ["--quick"] if quick else []
    return [
        Step("bench_intake", "benchmark", [PY, f"{b}/bench_intake.py", "--seconds", "5" if quick else "10"], 600,
             proves="intake throughput and latency under gunicorn (wrk)"),
        Step("bench_lanes", "benchmark",
             [PY, f"{b}/bench_lanes.py", *(["--fast", "50", "--backlog", "1000"] if quick else [])], 1800,
             proves="fast-lane latency idle vs behind a normal backlog"),
        Step("bench_risk_eval", "benchmark",
             [PY, f"{b}/bench_risk_eval.py", *(["--accounts", "1000", "--runs", "3"] if quick else [])], 1800,
             proves="risk evaluation cycle time"),
        Step("bench_risk_latency", "benchmark",
             [PY, f"{b}/bench_risk_latency.py",
              *(["--accounts", "200", "--trials", "10", "--backlog", "300"] if quick else [])], 1800,
             proves="detection → confirmed close, and price move → detection, with many monitored accounts"),
        Step("fuzz", "drill", [PY, f"{d}/fuzz.py", "--max-examples", str(fuzz_examples)], 3600, "fuzz",
             "no 5xx, every response as the schema says, as each tenant"),
        Step("kill_web", "drill", [PY, *fault, "kill_web", *q], 900, "kill_web",
             "kill -9 of the web mid-POST + client retries: no duplicate, nothing lost"),
        Step("lanes_kill", "drill", [PY, *fault, "lanes_kill"], 900, "lanes_kill",
             "kill -9 of the fast-lane worker mid-close: one deal, recovered"),
        Step("pg_restart", "drill", [PY, *fault, "pg_restart", *q], 900, "pg_restart",
             "PostgreSQL restarted under load: recovers, nothing lost or doubled"),
        Step("receiver_down", "drill", [PY, *fault, "receiver_down", *q], 900, "receiver_down",
             "Laravel down for hours (time x1000): every report delivered after"),
        Step("terminal_down", "drill", [PY, *fault, "terminal_down", *q], 900, "terminal_down",
             "MT5 unreachable 30 s: retried within deadlines, health degraded then ok"),
        Step("mt5_outage", "drill", [PY, *protect, "mt5_outage", *q], 1800, "mt5_outage",
             "MT5 cut off 45 s from a breach (8 s quick): flat right after, every report once, in sequence"),
        Step("laravel_400", "drill", [PY, *protect, "laravel_400", *q], 1200, "laravel_400",
             "Laravel answers 400 to one protective report: it alone dead-lettered and alerted, later ones delivered"),
        Step("db_rebuilt", "drill", [PY, *protect, "db_rebuilt", *q], 1800, "db_rebuilt",
             "database dropped and migrated fresh between breaches: no callback identity of a life seen before"),
        Step("load", "drill", [PY, f"{d}/load.py", "--seconds", str(load_seconds)], load_seconds + 1200, "load",
             "mixed traffic: zero errors, nothing lost or doubled, memory flat"),
    ]  # fmt: skip


def run(step: Step) -> None:
    log = REPORT / f"{step.name}.txt"
    if step.result_file:
        (OUT / f"{step.result_file}.json").unlink(missing_ok=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(step.argv, cwd=ROOT, capture_output=True, text=True, timeout=step.timeout, check=False)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMED OUT after {step.timeout:.0f} s"
        output, code = output if isinstance(output, str) else str(output), -1
    except Exception as exc:
        output, code = f"could not run: {type(exc).__name__}: {exc}", -1
    step.seconds = round(time.monotonic() - started, 1)
    log.write_text(output)
    result_path = OUT / f"{step.result_file}.json" if step.result_file else None
    if result_path and result_path.exists():
        data = json.loads(result_path.read_text())
        step.figures = data.get("figures", {})
        step.status = "PASS" if data.get("passed") and code == 0 else "FAIL"
    else:
        step.status = "PASS" if code == 0 else "FAIL"
        lines = [line for line in output.splitlines() if line.strip() and not line.startswith("{")]
        step.figures = {"output": "\n".join(lines[-14:])}
    if step.status != "PASS":
        step.tail = "\n".join(output.strip().splitlines()[-15:])
    print(f"{step.status:4}  {step.name:16} {step.seconds:8.1f} s", flush=True)


def plots() -> list[str]:
    """PNG plots from the load drill's raw series; [] when it has none."""
    path = OUT / "load.json"
    if not path.exists():
        return []
    series = json.loads(path.read_text()).get("series")
    if not series:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    lanes = series.get("lane_ms", {})
    if lanes:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for lane, values in sorted(lanes.items()):
            ax.hist(values, bins=60, alpha=0.6, label=f"{lane} (n {len(values)})", log=True)
        ax.set_xlabel("accepted → finished (ms)")
        ax.set_ylabel("commands (log)")
        ax.set_title("Command latency per lane (load drill)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(REPORT / "latency_per_lane.png", dpi=110)
        plt.close(fig)
        made.append("latency_per_lane.png")
    requests = series.get("requests", [])
    if requests:
        by_kind: dict[str, list[float]] = defaultdict(list)
        for _, kind, _, ms in requests:
            by_kind[kind].append(ms)
        fig, ax = plt.subplots(figsize=(8, 4.5))
        names = sorted(by_kind)
        ax.boxplot([by_kind[n] for n in names], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names)
        ax.set_ylabel("HTTP latency (ms)")
        ax.set_title("Request latency by kind (load drill, whiskers 1.5 IQR)")
        fig.tight_layout()
        fig.savefig(REPORT / "latency_per_request.png", dpi=110)
        plt.close(fig)
        made.append("latency_per_request.png")

        bucket = 5.0
        counts: dict[int, int] = defaultdict(int)
        for t, *_ in requests:
            counts[int(t // bucket)] += 1
        finished: dict[int, int] = defaultdict(int)
        for t in series.get("finished", []):
            finished[int(t // bucket)] += 1
        fig, ax = plt.subplots(figsize=(8, 4.5))
        xs = sorted(counts)
        ax.plot([x * bucket for x in xs], [counts[x] / bucket for x in xs], label="requests/s")
        fx = sorted(finished)
        ax.plot([x * bucket for x in fx], [finished[x] / bucket for x in fx], label="commands finished/s")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("per second (5 s buckets)")
        ax.set_title("Throughput over time (load drill)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(REPORT / "throughput.png", dpi=110)
        plt.close(fig)
        made.append("throughput.png")
    memory = series.get("memory", [])
    if memory:
        per_pid: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
        for sample in memory:
            per_pid[(sample["service"], sample["pid"])].append((sample["t"], sample["rss_mb"]))
        fig, ax = plt.subplots(figsize=(9, 5))
        for (service, pid), points in sorted(per_pid.items()):
            if len(points) > 2:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=f"{service} {pid}", linewidth=1)
        ax.axvline(series.get("warmup", 0), color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("time (s); dashed: end of warm-up")
        ax.set_ylabel("RSS (MB)")
        ax.set_title("Memory of every process over time (load drill)")
        ax.legend(fontsize=6, ncol=3)
        fig.tight_layout()
        fig.savefig(REPORT / "memory.png", dpi=110)
        plt.close(fig)
        made.append("memory.png")
    return made


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|").replace("\n", "<br>")


def write(all_steps: list[Step], images: list[str], quick: bool) -> Path:
    lines = [
        "# Reliability report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {sys.platform}, "
        f"{'quick (smoke) run' if quick else 'full run'}. Command: `.venv/bin/python drills/report.py"
        f"{' --quick' if quick else ''}`.",
        "",
        "| step | kind | result | seconds | proves |",
        "|---|---|---|---|---|",
    ]
    for step in all_steps:
        lines.append(f"| {step.name} | {step.kind} | **{step.status}** | {step.seconds} | {step.proves} |")
    lines.append("")
    for step in all_steps:
        lines += [f"## {step.name} — {step.status}", ""]
        if "output" in step.figures and len(step.figures) == 1:
            lines += ["```", step.figures["output"], "```", ""]
        elif step.figures:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in step.figures.items()]
            lines.append("")
        if step.tail:
            lines += ["Last lines of its output:", "", "```", step.tail, "```", ""]
        lines.append(f"Full output: `{step.name}.txt`.")
        lines.append("")
    if images:
        lines += ["## Plots (load drill)", ""]
        lines += [f"![{image}]({image})" for image in images]
        lines.append("")
    path = REPORT / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes: load 45 s, small fuzz, short outages")
    parser.add_argument("--load-seconds", type=float, default=None, help="load drill duration (default 600; 45 quick)")
    parser.add_argument("--fuzz-examples", type=int, default=None, help="per operation and phase (150; 25 quick)")
    parser.add_argument("--only", nargs="*", help="run only these steps")
    args = parser.parse_args()
    REPORT.mkdir(parents=True, exist_ok=True)
    ensure_services()
    load_seconds = args.load_seconds or (45.0 if args.quick else 600.0)
    fuzz_examples = args.fuzz_examples or (25 if args.quick else 150)
    all_steps = [s for s in steps(args.quick, load_seconds, fuzz_examples) if not args.only or s.name in args.only]
    for step in all_steps:
        run(step)
    try:
        images = plots()
    except Exception as exc:  # a plotting problem must not lose the table
        images = []
        print(f"plots failed: {type(exc).__name__}: {exc}")
    path = write(all_steps, images, args.quick)
    print(f"\nreport: {path}")
    return 0 if all(step.status == "PASS" for step in all_steps) else 1


if __name__ == "__main__":
    sys.exit(main())
