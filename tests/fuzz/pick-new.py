#!/usr/bin/env python3
"""Chooses a few inputs found by run-fuzzers.sh for the committed corpus.

  tests/fuzz/pick-new.py [-b BUILD_DIR] [-n MAX] HARNESS...

For each harness: libFuzzer's -merge=1 minimises the committed corpus plus
BUILD_DIR/fuzz-out/HARNESS/corpus into a fresh directory and records every
input's coverage features in a control file; this script then picks, greedily,
at most MAX (default 30) of the new inputs that add the most features over the
committed corpus. Each pick is replayed with the strict replay runner (no
SP_FUZZ_KNOWN), and one that fails goes to fuzz-out/HARNESS/rejected/
instead: the committed corpus must keep the `fuzz` suite green. Picks are
copied to tests/fuzz/corpus/HARNESS/ under their SHA-1, as libFuzzer names
them.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def read_control(path):
    """Returns (files, n_first, features per file index)."""
    with open(path) as f:
        lines = f.read().splitlines()
    n = int(lines[0])
    n_first = int(lines[1])
    files = lines[2:2 + n]
    feats = {}
    for line in lines[2 + n:]:
        parts = line.split()
        if parts and parts[0] == "FT":
            feats[int(parts[1])] = set(int(x) for x in parts[2:])
    return files, n_first, feats


def pick(harness, build, max_new):
    fuzzer = os.path.join(build, "tests", "fuzz", harness + "-libfuzzer")
    replay = os.path.join(build, "tests", "fuzz", harness)
    committed = os.path.join(HERE, "corpus", harness)
    found = os.path.join(build, "fuzz-out", harness, "corpus")
    rejected = os.path.join(build, "fuzz-out", harness, "rejected")
    env = dict(os.environ, LSAN_OPTIONS="suppressions=" + os.path.join(HERE, "lsan.supp"))
    env.pop("SP_FUZZ_KNOWN", None)

    with tempfile.TemporaryDirectory() as tmp:
        fresh = os.path.join(tmp, "fresh")
        os.mkdir(fresh)
        control = os.path.join(tmp, "control")
        # The committed corpus is listed first, so its features count as known.
        subprocess.run([fuzzer, "-merge=1", "-merge_control_file=" + control, fresh,
                        committed, found], env=dict(env, SP_FUZZ_KNOWN=os.environ.get(
                            "SP_FUZZ_KNOWN", "")),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        files, _, feats = read_control(control)
        known = set()
        candidates = []
        for i, path in enumerate(files):
            if os.path.dirname(os.path.abspath(path)) == os.path.abspath(committed):
                known |= feats.get(i, set())
            else:
                candidates.append((path, feats.get(i, set())))
        minimised = set(os.listdir(fresh))

    chosen = []
    candidates = [c for c in candidates if hashlib.sha1(
        open(c[0], "rb").read()).hexdigest() in minimised]
    while len(chosen) < max_new and candidates:
        best = max(candidates, key=lambda c: (len(c[1] - known), -os.path.getsize(c[0])))
        gain = len(best[1] - known)
        if gain == 0:
            break
        candidates.remove(best)
        ok = subprocess.run([replay, best[0]], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode == 0
        if not ok:
            os.makedirs(rejected, exist_ok=True)
            shutil.copy(best[0], rejected)
            print("  %s: fails the strict replay: %s" % (harness, os.path.join(
                rejected, os.path.basename(best[0]))))
            continue
        known |= best[1]
        chosen.append((best[0], gain))

    for path, gain in chosen:
        data = open(path, "rb").read()
        name = hashlib.sha1(data).hexdigest()
        shutil.copy(path, os.path.join(committed, name))
    print("%s: %d new inputs added (%d minimised candidates), features gained: %s" % (
        harness, len(chosen), len(minimised), [g for _, g in chosen]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-b", "--build", default=os.path.join(ROOT, "build-fuzz"))
    ap.add_argument("-n", "--max", type=int, default=30)
    ap.add_argument("harness", nargs="+")
    args = ap.parse_args()
    for h in args.harness:
        pick(h, args.build, args.max)
    return 0


if __name__ == "__main__":
    sys.exit(main())
