#!/usr/bin/env python3
"""Shrinks a fuzz corpus to at most N files / B bytes, keeping edge coverage.

`cargo fuzz cmin` keeps every input that adds a libFuzzer *feature* (edge hit
counts, stack depth...), which leaves hundreds to thousands of files. This
script goes further, for the committed corpus:

1. a set-cover merge on plain edges (`-set_cover_merge=1 -use_counters=0`);
2. the full edge set of each remaining input, one input at a time;
3. a greedy set cover: repeatedly the input adding the most edges not yet
   covered (ties: the smaller), until the file or byte budget is spent or no
   input adds an edge.

Usage (from fuzz/, after `cargo fuzz build`):

    python3 trim_corpus.py target/x86_64-unknown-linux-gnu/release/T corpus/T

The corpus directory is replaced by the selection (file names: SHA-1 of the
content, as libFuzzer names them). Prints how many edges the selection keeps.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile


def merge(binary, out_dir, in_dirs, control, extra=()):
    # An existing control file would be resumed, not rewritten.
    if os.path.exists(control):
        os.remove(control)
    cmd = [binary, "-merge=1", "-use_value_profile=0", f"-merge_control_file={control}",
           *extra, out_dir, *in_dirs]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def edges_of(binary, path, scratch):
    """The PC-table indices that one input covers."""
    one = os.path.join(scratch, "one")
    out = os.path.join(scratch, "out")
    for d in (one, out):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    shutil.copy(path, one)
    control = os.path.join(scratch, "control")
    merge(binary, out, [one], control)
    edges = set()
    with open(control) as f:
        for line in f:
            if line.startswith("COV "):
                edges.update(int(x) for x in line.split()[2:])
    return edges


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binary")
    parser.add_argument("corpus")
    parser.add_argument("--max-files", type=int, default=50)
    parser.add_argument("--max-bytes", type=int, default=200_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        covered = os.path.join(scratch, "cover")
        os.makedirs(covered)
        merge(args.binary, covered, [args.corpus], os.path.join(scratch, "control0"),
              ["-set_cover_merge=1", "-use_counters=0"])
        candidates = {}
        for name in sorted(os.listdir(covered)):
            path = os.path.join(covered, name)
            with open(path, "rb") as f:
                data = f.read()
            candidates[name] = (data, edges_of(args.binary, path, scratch))

        everything = set().union(*(e for _, e in candidates.values())) if candidates else set()
        chosen, have, size = [], set(), 0
        while len(chosen) < args.max_files:
            fitting = [kv for kv in candidates.items() if size + len(kv[1][0]) <= args.max_bytes]
            if not fitting:
                break
            name, (data, edges) = max(
                fitting, key=lambda kv: (len(kv[1][1] - have), -len(kv[1][0])))
            gain = edges - have
            if not gain:
                break
            chosen.append(data)
            have |= gain
            size += len(data)
            del candidates[name]

        shutil.rmtree(args.corpus)
        os.makedirs(args.corpus)
        for data in chosen:
            with open(os.path.join(args.corpus, hashlib.sha1(data).hexdigest()), "wb") as f:
                f.write(data)
        print(f"{args.corpus}: {len(chosen)} files, {size} bytes, "
              f"{len(have)} of {len(everything)} edges of the set-cover merge")
    return 0


if __name__ == "__main__":
    sys.exit(main())
