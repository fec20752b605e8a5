"""`python -m benchmarks.stamp`: write `.provenance.json` (the commit and whether the tree
differs from it) beside the package, for a copy of the source tree on a machine without git.

Run it just before the tree is copied (the device calls carry the git-ignored file); every
summary and benchmark result there then records this commit (fastcifar.records.provenance).
"""

from __future__ import annotations

import json

from fastcifar.records.provenance import PROVENANCE_FILE, source_commit


def main() -> None:
    found = source_commit()
    if found["from"] != "git":
        raise SystemExit("benchmarks.stamp: git cannot tell the commit here")
    stamp = {"commit": found["commit"], "dirty": found["dirty"]}
    PROVENANCE_FILE.write_text(json.dumps(stamp) + "\n")
    print(f"wrote {PROVENANCE_FILE}: {stamp}")


if __name__ == "__main__":
    main()
