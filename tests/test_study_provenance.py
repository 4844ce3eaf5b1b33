"""Provenance of synthetic sources: leak flags, refusing held-out data, in-study generators that resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from oncosynth.data import load_dataset, sample_fraction
from oncosynth.data.phantom import PhantomConfig, write_phantom
from oncosynth.errors import ConfigError
from oncosynth.study import in_study, provenance
from oncosynth.study.provenance import LeakError


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("phantom") / "data",
                         PhantomConfig(n=80, size=32, difficulty="easy", seed=0))


@pytest.fixture(scope="module")
def dataset(phantom):
    return load_dataset(phantom)


def _manifest(folder: Path, block: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write = folder / "manifest.json"
    write.write_text(json.dumps({"kind": "samples/x", "generator_manifest": {"training_data": block}}))
    return folder


def test_a_planted_leak_is_flagged_with_the_patient_count(dataset, tmp_path):
    train = dataset.split("train").records
    cell = sample_fraction(dataset, 0.25, seed=0).records
    # a generator trained on the whole training split, used by a cell holding a quarter of it
    folder = _manifest(tmp_path / "all", provenance.describe_records(train))
    data = provenance.source_training_data(folder, None, None)
    provenance.check_held_out(data, dataset.records, {"val": dataset.split("val").records,
                                                      "test": dataset.split("test").records}, "arm 'peer'")
    found = provenance.cell_provenance(data, cell, train, dataset.records, 0.25)
    outside = len({r.patient for r in train} - {r.patient for r in cell})
    assert found.kind == "manifest" and found.outside_cell == outside > 0
    assert found.flag == f"saw {outside} patients outside this cell's 25%"
    # the same generator is fair to the full-data cell, and one trained on the cell is fair to it
    assert provenance.cell_provenance(data, train, train, dataset.records, 1.0).flag == ""
    own = provenance.parse_training_data(provenance.describe_records(cell), "x")
    assert provenance.cell_provenance(own, cell, train, dataset.records, 0.25).outside_cell == 0
    # a manifest that declares the training split instead of listing it resolves to the same patients
    declared = provenance.parse_training_data({"splits": ["train"]}, "peer manifest")
    assert provenance.cell_provenance(declared, cell, train, dataset.records, 0.25).outside_cell == outside


def test_a_generator_that_saw_test_images_is_refused(dataset, tmp_path):
    seen = dataset.split("train").records + dataset.split("test").records[:1]
    folder = _manifest(tmp_path / "leaky", {"images": provenance.describe_records(seen)["images"]})
    data = provenance.source_training_data(folder, None, None)
    held_out = {"val": dataset.split("val").records, "test": dataset.split("test").records}
    with pytest.raises(LeakError, match="1 image\\(s\\) of the held-out 'test' set"):
        provenance.check_held_out(data, dataset.records, held_out, "arm 'leaky'")
    by_patient = provenance.parse_training_data({"patients": [dataset.split("val").records[0].patient]}, "m")
    with pytest.raises(LeakError, match="'val'"):
        provenance.check_held_out(by_patient, dataset.records, held_out, "arm 'leaky'")
    # an external set is matched by file name only (its patient ids may collide with ours)
    provenance.check_held_out(by_patient, dataset.records, {"external": dataset.split("val").records[:0]}, "a")


def test_a_folder_without_a_manifest_is_provenance_unknown(dataset, tmp_path):
    (tmp_path / "bare").mkdir()
    data = provenance.source_training_data(tmp_path / "bare", None, None)
    assert data is None
    found = provenance.cell_provenance(data, [], [], dataset.records, 0.1)
    assert (found.kind, found.flag, found.describe()) == ("unknown", "provenance unknown", "provenance unknown")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not a valid JSON manifest"):
        provenance.source_training_data(None, tmp_path / "bad.json", None)
    with pytest.raises(ConfigError, match="names no patients"):
        provenance.parse_training_data({"description": "x"}, "m")




def test_a_killed_in_study_generator_resumes(dataset, tmp_path, monkeypatch):
    from oncosynth.generators.cdcgan import ConditionalDCGAN

    cell = sample_fraction(dataset, 0.5, seed=0)
    records = cell.records
    options = {"width": 4, "size": 32, "batch_size": 8}
    key = in_study.generator_key(records, "mcgan", 4, options, 32, 1, seed=0)
    assert key != in_study.generator_key(records[1:], "mcgan", 4, options, 32, 1, seed=0)
    assert key != in_study.generator_key(records, "mcgan", 4, options, 32, 1, seed=1)
    folder = in_study.generator_folder(tmp_path, key)
    original, calls = ConditionalDCGAN.train_step, []

    class Killed(Exception):
        pass

    def dies_at_step_three(self, reals, labels):
        calls.append(self.step)
        if len(calls) == 3:
            raise Killed
        return original(self, reals, labels)

    monkeypatch.setattr(ConditionalDCGAN, "train_step", dies_at_step_three)
    with pytest.raises(Killed):
        in_study.train_in_study(folder, "mcgan", 4, options, cell, seed=0,
                                fit_options={"checkpoint_every": 2})
    assert not in_study.is_trained(folder)
    saved = json.loads((folder / provenance.TRAINING_DATA_FILE).read_text())["training_data"]
    assert saved["n_images"] == len(records)  # what it saw is on disk before it finished
    monkeypatch.setattr(ConditionalDCGAN, "train_step", lambda self, r, l: (calls.append(self.step),
                                                                            original(self, r, l))[1])
    done = in_study.train_in_study(folder, "mcgan", 4, options, cell, seed=0,
                                   fit_options={"checkpoint_every": 2})
    assert done["resumed"] and calls[3:] == [2, 3]  # steps 0-1 were checkpointed and not redone
    generator = in_study.load_in_study(folder)
    assert generator.step == 4 and generator.sample(2, "malignant").shape == (2, 1, 32, 32)
    # finished: a second call trains nothing
    assert in_study.train_in_study(folder, "mcgan", 4, options, cell, seed=0) == done
    assert len(calls) == 5
    found = provenance.source_training_data(folder, None, None)
    assert provenance.cell_provenance(found, records, dataset.split("train").records, dataset.records,
                                      0.5).outside_cell == 0
    # the generator's own manifest names the same records
    assert provenance.read_training_data(generator.manifest, "m").patients == {r.patient for r in records}


def test_a_generator_trained_on_a_dataset_names_its_training_data_in_exported_samples(dataset, tmp_path):
    from oncosynth.generators import create_generator, generate_images

    gen = create_generator("mcgan", width=4, size=32, batch_size=8)
    gen.fit(dataset, tmp_path / "run", steps=1, seed=0, progress=False)
    generate_images(tmp_path / "run", tmp_path / "samples", 2, ["benign"])
    seen = provenance.source_training_data(tmp_path / "samples", None, None)
    train = dataset.split("train").records
    assert seen.patients == {r.patient for r in train} and len(seen.images) == len(train)
    cell = sample_fraction(dataset, 0.5, seed=0).records
    found = provenance.cell_provenance(seen, cell, train, dataset.records, 0.5)
    assert found.outside_cell == len({r.patient for r in train} - {r.patient for r in cell})
    # and the loaded generator carries it too (a 'generator:' source in a study)
    from oncosynth.generators import load_generator

    assert provenance.source_training_data(None, None, load_generator(tmp_path / "run").manifest).patients == seen.patients
