"""#13 item 8: a recipe names its synthetic data; every entry point makes that same set."""

from __future__ import annotations

from pathlib import Path

import pytest

from deconvnet.cli import main
from deconvnet.config import load_config
from deconvnet.data.synthetic import ensure_synthetic, synth_command
from deconvnet.errors import DataError

REPO = Path(__file__).resolve().parents[2]
SMALL = ["data.synthetic.images=4", "data.synthetic.size=48", "data.synthetic.seed=3"]


def test_the_demo_names_the_set_make_demo_made():
    cfg = load_config(REPO / "experiments/demo/eval.yaml")
    assert synth_command(cfg) == "deconvnet synth --root data/synthetic --images 240 --size 160 --seed 0"


def test_opening_a_split_makes_the_recipes_set_when_missing(tmp_path):
    from deconvnet.data.datamodules import open_split

    made = tmp_path / "made"
    cfg = load_config(REPO / "experiments/demo/stage1.yaml", [f"data.root={made}", *SMALL])
    reader = open_split(cfg, "train")  # what `deconvnet train` and `deconvnet eval` go through
    assert len(reader) >= 1
    # the same set as the command the recipe names, run by hand elsewhere
    by_hand = tmp_path / "by_hand"
    command = synth_command(load_config(REPO / "experiments/demo/stage1.yaml", [f"data.root={by_hand}", *SMALL]))
    assert main(command.split()[1:]) == 0
    # the synthetic tree, without the decoded store that opening the split also built
    files = sorted(p.relative_to(made) for p in (made / "VOCdevkit").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(by_hand) for p in by_hand.rglob("*") if p.is_file())
    assert all((made / f).read_bytes() == (by_hand / f).read_bytes() for f in files)


def test_another_set_in_its_place_is_refused_naming_the_command(tmp_path):
    root = tmp_path / "data"
    assert main(["synth", "--root", str(root), "--images", "4", "--size", "48"]) == 0  # seed 0
    cfg = load_config(REPO / "experiments/demo/stage1.yaml", [f"data.root={root}", *SMALL])
    with pytest.raises(DataError, match=f"made by `deconvnet synth --root {root} --images 4 --size 48 --seed 3`"):
        ensure_synthetic(cfg)


def test_real_data_recipes_make_nothing(tmp_path):
    cfg = load_config(REPO / "experiments/table1/stage1.yaml", [f"data.root={tmp_path}"])
    assert ensure_synthetic(cfg) is None and not any(tmp_path.iterdir())


def test_training_makes_the_recipes_set_before_it_reads_the_data(tmp_path, monkeypatch):
    # `deconvnet train` fingerprints the split lists before it builds the DataModule: the set
    # must exist by then (it once stopped with "VOC 2012 not found" on a fresh clone)
    from deconvnet.training import run

    class Reached(Exception):
        pass

    def stop(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(run, "RunFolder", stop)  # what train() does right after the record
    made = tmp_path / "made"
    cfg = load_config(REPO / "experiments/demo/stage1.yaml",
                      [f"data.root={made}", f"output_dir={tmp_path / 'out'}", *SMALL])
    with pytest.raises(Reached):
        run.train(cfg)
    assert (made / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").is_file()
