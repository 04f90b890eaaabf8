"""Step 0 of reproduction v2: apply the pre-registered cubical parameter rule on the seed-0 digits VGG.

    python docs/studies/repro_rule.py        # scores (or reuses) the two networks on the digits training split, writes
                                             # docs/repro-results/cubical_rule.json

Run before any network of seeds 1-5 is scored: its threshold is then used for every cubical verdict.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prereg
import repro_claims as RC
import repro_data as D

RESULTS = D.ROOT / "docs" / "repro-results"


def main() -> dict:
    rules = prereg.load()
    pre = json.loads((D.ROOT / "models/digits_vgg/converged/card.json").read_text())["preprocessing"]
    recs = {}
    for role in ("converged", "random"):
        out = RESULTS / "s0" / f"digits_vgg__{role}__train__cubical.npz"
        D.score_record(
            D.ROOT / f"models/digits_vgg/{role}/model.onnx", D.ROOT / "models/data/digits/train", "cubical", pre, out
        )
        recs[role] = D.load_record(out)
    res = RC.cubical_rule(recs["converged"], recs["random"], rules)
    (RESULTS / "cubical_rule.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
