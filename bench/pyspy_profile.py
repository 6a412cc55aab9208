"""Sample running processes with py-spy and summarise where their time goes.

    python bench/pyspy_profile.py --pid 1234 [--pid 1235] [--seconds 20] [--out profile.txt]

``record`` runs ``py-spy record --format raw --nonblocking`` on every pid at once (py-spy is a
profiling tool, not a StreamRank dependency: ``pip install py-spy``) and ``summary`` turns the
collapsed stacks into two tables: the functions with the largest share of samples anywhere on the
stack (inclusive) and at the top of it (self), idle frames (threads waiting on a socket, a lock or
a sleep) counted apart. bench/recommend.py --profile calls both during a load run.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# a sample whose leaf is one of these is a thread waiting, not working
IDLE_LEAVES = ("select", "poll", "wait", "_wait_for_tstate_lock", "accept", "recv_into", "sleep", "acquire",
               "readinto", "epoll", "run_forever", "_worker", "get")


def py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return exe


def record(pids, seconds: float, out_dir: Path, rate: int = 100) -> list[Path]:
    """Sample every pid for ``seconds`` (in parallel); returns the raw collapsed-stack files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    procs, files = [], []
    for pid in pids:
        f = out_dir / f"pyspy-{pid}.txt"
        files.append(f)
        procs.append(subprocess.Popen([py_spy(), "record", "--format", "raw", "--nonblocking", "--rate", str(rate),
                                       "--duration", str(int(seconds)), "--output", str(f), "--pid", str(pid)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=seconds + 60)
        if p.returncode:
            print(f"py-spy failed: {err.decode(errors='replace')[-300:]}", file=sys.stderr)
    return [f for f in files if f.exists()]


def _label(frame: str, root: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", root.rstrip("/") + "/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['fn']} ({path})"


def summary(files, top: int = 20, root: str = str(Path(__file__).resolve().parents[1])) -> dict:
    """{"samples", "busy", "inclusive": [(label, share of busy samples)], "self": [...]}."""
    incl, leaf = Counter(), Counter()
    total = busy = 0
    for f in files:
        for line in Path(f).read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            n = int(n)
            total += n
            frames = [_label(x, root) for x in stack.split(";") if x]
            if not frames:
                continue
            leaf_fn = frames[-1].split(" (")[0]
            if leaf_fn in IDLE_LEAVES:
                continue
            busy += n
            leaf[frames[-1]] += n
            for lab in set(frames):
                incl[lab] += n
    share = (lambda c: c / busy) if busy else (lambda c: 0.0)
    return {"samples": total, "busy": busy,
            "inclusive": [(k, share(v)) for k, v in incl.most_common(top)],
            "self": [(k, share(v)) for k, v in leaf.most_common(top)]}


def print_summary(s: dict, top: int = 20) -> None:
    print(f"py-spy: {s['samples']} samples, {s['busy']} busy (threads not waiting)")
    for title, key in (("inclusive (on the stack)", "inclusive"), ("self (top of the stack)", "self")):
        print(f"  {title}, share of busy samples:")
        for lab, sh in s[key][:top]:
            print(f"    {100 * sh:5.1f} %  {lab[:110]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=int, action="append", required=True)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--out", type=Path, default=Path("var/bench/pyspy"))
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    print_summary(summary(record(args.pid, args.seconds, args.out), top=args.top), top=args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
