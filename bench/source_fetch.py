"""Time from a git ref to a packed release bundle: what preflight fetches vs a full clone.

    .venv/bin/python bench/source_fetch.py [--commits 5000] [--mb 50] [--runs 5]

Makes (once, cached under /tmp) a repository of realistic size: COMMITS commits whose history
holds MB megabytes of incompressible files under src/, and demo-web's AMI project under
deploy/ami (ami-release.yaml, cookbooks, Terraform module), tagged v1.0.0 at the tip. Serves it
over file:// with uploadpack.allowFilter on, as a git host does.

Then, alternately RUNS times each, from nothing to the packed bundle (the S3 put that follows
is the same for both and not timed):
  ours   AppSourceHook.resolve + export (ls-remote, depth 1, blob filter, sparse folder)
         + stage + pack
  full   git clone of the whole repository + checkout of the commit + the same stage + pack
and prints the median wall time and the bytes each put on disk, and ours/full.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from amirelease import bundle, catalog  # noqa: E402
from amirelease.hooks.git_source import AppSourceHook  # noqa: E402
from sandbox.gitsource import PROJECT_PATH, make_project_repo  # noqa: E402


def make_big_repo(path: Path, commits: int, megabytes: int) -> str:
    """The repository (bare, at `path`) and the central entry's folder beside it."""
    if (path / "HEAD").exists():
        return f"file://{path}"
    work = path.with_suffix(".work")
    shutil.rmtree(work, ignore_errors=True)
    apps = path.parent / "apps"
    project = make_project_repo(path.parent / "seed", REPO / "include", "demo-web", apps)
    shutil.copytree(project.path, work, ignore=shutil.ignore_patterns(".git"))
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(work)], check=True)
    per_commit = max(1, megabytes * 1024 * 1024 // commits)
    stream = [b"reset refs/heads/main"]
    for i in range(commits):
        data = os.urandom(per_commit)  # incompressible: the history really is that big
        stream.append(f"commit refs/heads/main\nmark :{i + 1}\ncommitter bench <b@e> {1700000000 + i} +0000".encode())
        stream.append(f"data {len(f'change {i}')}\nchange {i}".encode())
        if i:
            stream.append(f"from :{i}".encode())
        stream.append(f"M 644 inline src/part-{i % 500:03d}.bin\ndata {len(data)}".encode())
        stream.append(data)
    payload = b"\n".join(stream) + b"\n"
    subprocess.run(["git", "-C", str(work), "fast-import", "--quiet"], input=payload, check=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@e"}
    env.update(GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@e")
    subprocess.run(["git", "-C", str(work), "checkout", "-q", "main", "--", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "add", "-A", PROJECT_PATH], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", "AMI project"], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "tag", "v1.0.0"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "config", "uploadpack.allowFilter", "true"], check=True)
    subprocess.run(["git", "-C", str(path), "config", "uploadpack.allowAnySHA1InWant", "true"], check=True)
    shutil.rmtree(work)
    return f"file://{path}"


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def ours(entry: catalog.Entry, url: str, tmp: Path) -> tuple[str, int]:
    hook = AppSourceHook(url)
    commit = hook.resolve("v1.0.0").commit
    hook.export(commit, PROJECT_PATH, tmp / "project")
    fetched = du(tmp / "project")
    return _pack(entry, tmp, commit, url), fetched


def full(entry: catalog.Entry, url: str, tmp: Path) -> tuple[str, int]:
    subprocess.run(["git", "clone", "-q", url, str(tmp / "clone")], check=True)
    commit = subprocess.run(
        ["git", "-C", str(tmp / "clone"), "rev-parse", "v1.0.0^{commit}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "-C", str(tmp / "clone"), "checkout", "-q", commit], check=True)
    fetched = du(tmp / "clone")
    shutil.copytree(tmp / "clone" / PROJECT_PATH, tmp / "project")
    return _pack(entry, tmp, commit, url), fetched


def _pack(entry: catalog.Entry, tmp: Path, commit: str, url: str) -> str:
    source = {"repository": url, "path": PROJECT_PATH, "ref": "v1.0.0", "ref_kind": "tag", "commit": commit}
    (tmp / "stage").mkdir()
    app, entry_file = bundle.stage_git_project(entry, tmp / "project", tmp / "stage", source)
    return bundle.pack(bundle.members(app, tmp / "stage", entry_file)).sha256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=5000)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.gettempdir()) / f"amirelease-bench-source-{args.commits}-{args.mb}"
    root.mkdir(exist_ok=True)
    t0 = time.monotonic()
    url = make_big_repo(root / "demo-web.git", args.commits, args.mb)
    print(f"repository {url}: {du(root / 'demo-web.git') / 1e6:.1f} MB on disk ({time.monotonic() - t0:.0f} s to make)")
    os.environ["AMI_RELEASE_APPS_DIR"] = str(root / "apps")
    entry = catalog.known_app("demo-web")
    entry = catalog.Entry(**{**entry.__dict__, "source": catalog.Source(url, PROJECT_PATH, None)})
    times: dict[str, list[float]] = {"ours": [], "full": []}
    sizes: dict[str, int] = {}
    digests = set()
    for _ in range(args.runs):
        for name, fn in (("ours", ours), ("full", full)):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.monotonic()
                digest, sizes[name] = fn(entry, url, Path(tmp))
                times[name].append(time.monotonic() - start)
                digests.add(digest)
    assert len(digests) == 1, "both ways must give the same bundle"
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in ("ours", "full"):
        spread = f"min {min(times[name]):.2f} max {max(times[name]):.2f}"
        print(f"{name:5} median {med[name]:6.2f} s ({spread}), {sizes[name] / 1e6:8.2f} MB on disk")
    print(f"ours/full wall time: {med['ours'] / med['full']:.3f}; same bundle sha256 {digests.pop()[:16]}…")


if __name__ == "__main__":
    main()
