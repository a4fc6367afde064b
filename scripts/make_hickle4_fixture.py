"""Write the tiny genuine hickle-4 CLOTHO archive under tests/fixtures/clotho-hickle4/ (issue 8, part 1).

This script must run under the ORIGINAL system's pinned stack (Python 3.7, numpy 1.20.3, h5py 2.10.0,
hickle 4.0.4, dill 0.3.3), so that the files it writes are exactly what the original feature archive holds:

    "$(pyenv root)/versions/3.7.16/bin/python" -m venv /work/py37
    /work/py37/bin/pip install numpy==1.20.3 h5py==2.10.0 hickle==4.0.4 dill==0.3.3
    /work/py37/bin/python scripts/make_hickle4_fixture.py            # from the repository root

It refuses to run on any other stack. The output (committed; rewrite it only on purpose) is

    tests/fixtures/clotho-hickle4/
      PROVENANCE.json                               the stack that wrote the files, clip ids per split
      expected.npz                                  every stored array again, as plain .npy members (neutral format)
      structured-symlinks/                          root_feat (data_dir = tests/fixtures/clotho-hickle4)
        aggregated_audio/vggish-raw.hickle          clip_id -> float32 (T, 128), one clip a float NaN
        aggregated_vggsound/vggsound-raw.hickle     clip_id -> float32 (T, 512), one clip a numpy.float64 NaN
        structured-symlinks/raw-captions.pkl        clip_id -> 5 token lists       (pickle, Python 3.7 default protocol)
        text_embeddings/w2v.pkl                     clip_id -> 5 float32 (n, 300)  (pickle, Python 3.7 default protocol)
        train_list.txt val_list.txt test_list.txt   6 / 3 / 3 clip ids

Clip ids look like CLOTHO's (spaces, an apostrophe, parentheses, a non-ASCII letter) because hickle 4 stores
dict keys as their repr(): the reader must undo exactly that. Frame and token counts cross the fixture config's
max_tokens (configs/clotho-fixture/hickle4-ce.json) so that truncation and padding are exercised; one clip is
stored as float64 to show that dtypes survive. Deterministic (fixed seed).
"""
import json
import os
import pickle
import sys

import numpy as np

REQUIRED = {"python": (3, 7), "numpy": "1.20.3", "h5py": "2.10.0", "hickle": "4.0.4", "dill": "0.3.3"}
SEED = 20210608
SPLITS = {
    "train": ["Santa Motor.wav", "01 A pug struggles to breathe 1_14_2008.wav", "Children's playground.wav",
              "car passing (2).wav", "rain on tin roof.wav", "BirdsMorning.wav"],
    "val": ["Footsteps on snow.wav", "Kitchen, dishes.wav", "door creak 03.wav"],
    "test": ["caf\u00e9 ambience.wav", "Thunder_far.wav", "Wind-in-trees.wav"],
}
MISSING = {"audio": "car passing (2).wav", "vggsound": "Thunder_far.wav"}   # stored as a NaN scalar
FLOAT64_CLIP = ("audio", "BirdsMorning.wav")                                  # stored as float64
FRAMES = {"audio": (2, 5), "vggsound": (1, 3)}                                # T range (inclusive)
DIMS = {"audio": 128, "vggsound": 512}
W2V_DIM = 300
WORDS = ("a dog barks while rain falls on the roof and a car passes by birds sing loudly in the morning "
         "people talk near a busy road wind blows through the trees").split()


def check_stack():
    import dill
    import h5py
    import hickle

    found = {"python": sys.version_info[:2], "numpy": np.__version__, "h5py": h5py.__version__,
             "hickle": hickle.__version__, "dill": dill.__version__}
    bad = [k for k, v in REQUIRED.items() if found[k] != v]
    if bad:
        sys.exit("make_hickle4_fixture.py must run under the original stack; wrong: "
                 + ", ".join("{} {} (need {})".format(k, found[k], REQUIRED[k]) for k in bad))
    found["python"] = sys.version.split()[0]
    return found


def build(rng):
    ids = [cid for split in ("train", "val", "test") for cid in SPLITS[split]]
    experts = {}
    for expert, dim in DIMS.items():
        lo, hi = FRAMES[expert]
        values = {}
        for cid in ids:
            if MISSING[expert] == cid:
                values[cid] = float("nan") if expert == "audio" else np.float64("nan")
                continue
            arr = rng.standard_normal((rng.randint(lo, hi + 1), dim)).astype(np.float32)
            if (expert, cid) == FLOAT64_CLIP:
                arr = arr.astype(np.float64) / 3.0   # not float32-representable: dtype must survive
            values[cid] = arr
        experts[expert] = values
    captions, w2v = {}, {}
    for i, cid in enumerate(ids):
        caps, vecs = [], []
        for k in range(5):
            caps.append([WORDS[j] for j in rng.randint(0, len(WORDS), size=rng.randint(3, 7))])
            n = 4 if (i, k) == (0, 2) else rng.randint(1, 3)   # one caption longer than max_tokens.text
            vecs.append(rng.standard_normal((n, W2V_DIM)).astype(np.float32))
        captions[cid] = caps
        w2v[cid] = vecs
    return ids, experts, captions, w2v


def main():
    import hickle

    stack = check_stack()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(repo, "tests", "fixtures", "clotho-hickle4")
    root = os.path.join(out, "structured-symlinks")
    for sub in ("aggregated_audio", "aggregated_vggsound", "structured-symlinks", "text_embeddings"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)

    ids, experts, captions, w2v = build(np.random.RandomState(SEED))
    hickle.dump(experts["audio"], os.path.join(root, "aggregated_audio", "vggish-raw.hickle"), mode="w")
    hickle.dump(experts["vggsound"], os.path.join(root, "aggregated_vggsound", "vggsound-raw.hickle"), mode="w")
    with open(os.path.join(root, "structured-symlinks", "raw-captions.pkl"), "wb") as fh:
        pickle.dump(captions, fh)            # Python 3.7 default protocol (3), as the original archive
    with open(os.path.join(root, "text_embeddings", "w2v.pkl"), "wb") as fh:
        pickle.dump(w2v, fh)
    for split, split_ids in SPLITS.items():
        with open(os.path.join(root, split + "_list.txt"), "w", encoding="utf-8") as fh:
            fh.write("".join(cid + "\n" for cid in split_ids))

    # the same values in a neutral format; members are indexed by the clip's position in PROVENANCE "ids"
    arrays = {}
    for expert, values in experts.items():
        for i, cid in enumerate(ids):
            arrays["{}_{}".format(expert, i)] = np.asarray(values[cid])
    for i, cid in enumerate(ids):
        for k, vec in enumerate(w2v[cid]):
            arrays["w2v_{}_{}".format(i, k)] = vec
    np.savez_compressed(os.path.join(out, "expected.npz"), **arrays)
    provenance = {
        "written_by": "scripts/make_hickle4_fixture.py",
        "stack": stack,
        "pickle_protocol": pickle.DEFAULT_PROTOCOL,
        "seed": SEED,
        "ids": ids,
        "splits": SPLITS,
        "missing": MISSING,
        "captions": captions,
        "expected_npz": "member <expert>_<i> = value of ids[i] in that expert's hickle (a 0-d array for a NaN "
                        "scalar); w2v_<i>_<k> = caption k of ids[i] in w2v.pkl",
    }
    with open(os.path.join(out, "PROVENANCE.json"), "w", encoding="utf-8") as fh:
        json.dump(provenance, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
