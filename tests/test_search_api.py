"""policysearch.search from Python: every model form, the settings as keywords, resume, one-line errors before
Ray, and real searches through a local Ray (a callable model on two workers; the same seed through the API
and through the command line gives the same policy).

The data-side cases are in test_user_data.py. Searches here are tiny (100 digits, 2 splits, 2 trials,
1 epoch, 2 selection folds) and one trial runs at a time where a result is compared, so that it repeats.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import policysearch
from policysearch.augment.policy import Policy
from policysearch.training.pretrained import architecture, callable_name
from policysearch.search import command, rundir
from policysearch.search.api import search as api_search
from policysearch.search.config import SearchConfig, given_values
from policysearch.search.children import train_child
from policysearch.search.prepare import Inputs, prepare
from policysearch.training.user_data import read_data

REPO = Path(__file__).resolve().parents[1]
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
           "RAY_AIR_NEW_OUTPUT": "0"}
TIMM_REASON = "timm is the optional extra policysearch[timm] (`make test` installs it)"
# A search of about a minute on 2 cores; meaningless as a recipe, enough to run every phase.
TINY = dict(train_size=100, splits=2, trials=2, epochs=1, top_n=1, num_views=1, min_steps=8, selection_folds=2,
            selection_keep=0.1, strengths=(1.0,), seed=5, max_concurrent=1)


def _digits(count: int = 300) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images[:count] * (255 / 16)).round().astype(np.uint8), bunch.target[:count].astype(np.int64)


def tiny_net(num_classes: int, in_channels: int) -> nn.Module:
    """A model callable defined at module level: Ray's workers cannot import this test module."""
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))


class TinyNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.body = tiny_net(num_classes, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the search would start (or join) Ray."""
    from policysearch.search import tuning

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started although the search should have stopped before")

    monkeypatch.setattr(tuning, "start_ray", refuse)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray with 2 CPUs for this module (or the one the session already runs, left running)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    saved = dict(os.environ)
    os.environ.update(RAY_ENV)
    paths = [str(REPO), *filter(None, saved.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


# ------------------------------------------------------------------------------------------- the API


def test_policysearch_search_is_the_api_function_however_imported():
    import policysearch.search as package
    from policysearch import search

    assert search is package is policysearch.search and callable(package)
    import inspect  # the called module names the function's arguments (it said (*args, **kwargs))

    assert inspect.signature(package) == inspect.signature(api_search)
    assert policysearch.SearchResult is package.SearchResult and policysearch.SearchConfig is SearchConfig
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'epoch'; did you mean epochs"):
        policysearch.search("digits", epoch=3)
    with pytest.raises(TypeError, match="give the data as the first argument"):
        api_search(dataset="digits")
    with pytest.raises(TypeError, match=r"'bogus'; besides data, model, out, resume, image_column, label_column and "
                                        r"stream it takes the fields of policysearch.SearchConfig \(help"):
        api_search("digits", bogus=1)  # it said "did you mean a field of SearchConfig?"
    with pytest.raises(ValueError, match="resume=True continues the run in out=RUN_DIR; give out="):
        api_search("digits", resume=True)


def test_resume_and_stream_of_the_wrong_kind_are_refused_before_anything(tmp_path, no_ray):
    """Regression: resume='runs/r1' (the command line's form) counted as True, for the run in out=; stream=5
    failed deep inside with an AttributeError."""
    with pytest.raises(TypeError, match=r"^resume= takes True or False, got a str; for the run in 'runs/r1': "
                                        r"out='runs/r1', resume=True$"):
        api_search("digits", out=tmp_path / "run", resume="runs/r1")
    with pytest.raises(TypeError, match=r"^resume= takes True or False, got an int$"):
        api_search("digits", out=tmp_path / "run", resume=1)
    with pytest.raises(TypeError, match=r"^stream= takes a text stream with write\(\) and flush\(\) .*, got an int$"):
        api_search("digits", out=tmp_path / "run", stream=5)
    with pytest.raises(TypeError, match=r"^out= takes a run directory \(a str or a path\), got an int$"):
        api_search("digits", out=123)  # Regression: os.fspath's own TypeError, naming no argument

    class WriteOnly:
        def write(self, text):
            return len(text)

    with pytest.raises(TypeError, match=r"^stream= takes a text stream with write\(\) and flush\(\)"):
        api_search("digits", out=tmp_path / "run", stream=WriteOnly())
    assert not (tmp_path / "run").exists()
    # numpy's booleans are booleans: the resume goes as far as finding no run there
    with pytest.raises(ValueError, match=r"out=.*run.*, resume=True: no such folder"):
        api_search("digits", out=tmp_path / "run", resume=np.True_)


def test_every_setting_is_a_keyword_and_checked_before_anything(tmp_path, no_ray):
    """The checks name the keyword arguments (the command line's name its flags)."""
    with pytest.raises(ValueError, match=r"^batch_size= must be >= 2") as caught:
        policysearch.search(_digits(), out=tmp_path / "run", batch_size=1)
    assert "\n" not in str(caught.value) and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"^trials= must be at least 1, got 0; epochs= must be >= 1, got 0$"):
        policysearch.search(_digits(), out=tmp_path / "run", trials=0, epochs=0)
    with pytest.raises(ValueError, match=r"^model= must be one of .*got 'resnet19' \(did you mean resnet18\?\)$"):
        policysearch.search(_digits(), model="resnet19", out=tmp_path / "run")
    with pytest.raises(ValueError, match=r"^--batch-size must be >= 2"):
        SearchConfig(batch_size=1)
    assert not (tmp_path / "run").exists()


def test_cluster_and_resource_errors_name_keyword_arguments(tmp_path, monkeypatch):
    """A Python user never reads a flag: a setting that needs another, a machine without the GPUs or CPUs
    asked for, an address that is not HOST:PORT, more images than the data has and a missing weights file
    name the keyword arguments, and the command line's flags."""
    from policysearch.search import tuning

    monkeypatch.setattr(tuning, "local_gpus", lambda: 0)  # the same on a machine with a GPU
    monkeypatch.setattr(tuning.ray, "init", lambda *a, **k: pytest.fail("Ray was started"))
    monkeypatch.setattr(tuning.ray, "is_initialized", lambda: False)  # another test's Ray would be joined as it is
    cases = [
        ({"address": "10.0.0.1:6379"}, r"^address= needs storage=: a path or URI that every node",
         r"^--address needs --storage: "),
        ({"freeze_backbone": True}, r"^freeze_backbone= needs weights=: ", r"^--freeze-backbone needs --weights: "),
        ({"gpus_per_trial": 0.25}, r"^gpus_per_trial=0.25, but this machine has no GPU \(Ray sees none\); use "
         r"gpus_per_trial=0 or", r"^--gpus-per-trial 0.25, but this machine has no GPU \(Ray sees none\); use "
         r"--gpus-per-trial 0 or"),
        ({"cpus_per_trial": 4096.0}, r"^one trial needs 4096 CPUs and 0 GPUs \(cpus_per_trial=, gpus_per_trial=\), "
         r"but the largest node of this machine has", r"\(--cpus-per-trial, --gpus-per-trial\)"),
        ({"address": "headnode", "storage": str(tmp_path / "shared")},
         r"^address='headnode': not HOST:PORT \(e.g. 10.0.0.1:6379\) or auto$",
         r"^--address headnode: not HOST:PORT"),
        # with the fix (a trial: no hint of it), in each one's words
        ({"train_size": 5000}, r"^train_size=5000 is larger than the 300 images of .*; give at most 300$",
         r"^--train-size 5000 is larger than the 1078 images of digits/train; give at most 1078$"),
        # regression: worded again for Python after its except block had ended, the message raised NameError
        ({"train_size": 15}, r"; these counts are of the train_size=15 subset of the 300 images: a larger "
                             r"train_size= gives more$",
         r"; these counts are of the --train-size 15 subset of the 1078 images: a larger --train-size gives more$"),
        ({"weights": str(tmp_path / "missing.pt")}, r"^weights='.*missing\.pt': no such file$",
         r"^--weights .*missing\.pt: no such file$"),
    ]
    for settings, from_python, from_cli in cases:
        with pytest.raises(ValueError, match=from_python) as caught:
            policysearch.search(_digits(), out=tmp_path / "run", **settings)
        assert "--" not in str(caught.value) and "\n" not in str(caught.value)
        argv = [f"--{name.replace('_', '-')}" if value is True else f"--{name.replace('_', '-')}={value}"
                for name, value in settings.items()]
        with pytest.raises(ValueError, match=from_cli):
            command.run(_cli_args([*argv, "--out", str(tmp_path / "cli")]))


def test_a_worded_error_pickles_as_worded(tmp_path):
    """An error raised in another process (a ProcessPoolExecutor running a search) comes back as it was worded."""
    import pickle

    from policysearch.training.data import DataError

    with pytest.raises(DataError) as caught:
        policysearch.search(_digits(), out=tmp_path / "run", train_size=5000)
    back = pickle.loads(pickle.dumps(caught.value))
    assert type(back) is DataError and str(back) == str(caught.value) and str(back).startswith("train_size=5000 ")


def _cli_args(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_paths_and_numpy_numbers_are_settings_of_their_plain_types(tmp_path):
    """weights=Path(...) and numbers from numpy are what a Python user passes: kept as str, int, float and
    bool, so config.json and the benchmark's search key can be written as JSON."""
    import dataclasses
    import json

    import numpy as np

    config = SearchConfig(weights=tmp_path / "w.pt", data_root=tmp_path, trials=np.int64(4), lr=np.float32(0.5),
                          strengths=(np.float64(0.5), 1), dashboard=np.bool_(True), seed=np.int32(2))
    assert (config.weights, config.data_root) == (str(tmp_path / "w.pt"), str(tmp_path))
    assert [type(v) for v in (config.trials, config.lr, config.dashboard, config.seed)] == [int, float, bool, int]
    assert config.strengths == (0.5, 1) and json.loads(json.dumps(dataclasses.asdict(config)))["trials"] == 4
    with pytest.raises(ValueError, match="seed must be an integer, got float64"):
        SearchConfig(seed=np.float64(1.5))


@pytest.mark.parametrize("settings, problem", [
    ({"trials": "4"}, "trials= must be an integer, got str '4'"),
    ({"strengths": 0.5}, "strengths= must be a list of numbers, got float 0.5"),
    # regression (review): a list was named as the tuple it is kept as
    ({"strengths": [0.5, "x"]}, "strengths= must be a list of numbers, got [0.5, 'x']"),
    ({"confidence": None}, "confidence= must be a number, got NoneType None"),
    ({"lr": "0.1"}, "lr= must be a number, got str '0.1'"),
    ({"train_size": "200"}, "train_size= must be an integer or None, got str '200'"),
    ({"seed": 1.5}, "seed= must be an integer, got float 1.5"),
    ({"seed": -1}, "seed= must be a whole number from 0 to 4294967295, got -1"),
    # regression (trial): a seed beyond numpy's 32 bits failed in phase 2 ("Seed must be between 0 and 2**32 - 1")
    ({"seed": 2**32}, "seed= must be a whole number from 0 to 4294967295, got 4294967296"),
    ({"image_size": 100000}, "image_size= must be a number of pixels from 1 to 4096, got 100000"),
    # Regression: 4 px was taken for small_cnn (built for 8 and up), its 4 px pad-and-crop the whole image
    ({"image_size": 4}, "image_size= must be at least 8 for small_cnn, the smallest side it is built for, got 4"),
    ({"image_size": 4, "model": "resnet8"}, "image_size= must be at least 8 for resnet8, the smallest side it is "
                                            "built for, got 4"),
    # regression (a trial): a state dict was shown whole, its tensors' values in the message, and no way on
    ({"weights": {"weight": torch.zeros(2), "bias": torch.zeros(2)}},
     "weights= must be a string or None, got a dict of 2 entries; a state dict goes in as a file: "
     "torch.save(model.state_dict(), 'weights.pt'), then weights='weights.pt'"),
])
def test_a_setting_of_the_wrong_type_or_range_is_one_line_naming_it(tmp_path, no_ray, settings, problem):
    """Python takes any value: a string for a number must be named, not fail in a comparison or in Ray."""
    with pytest.raises(ValueError) as caught:
        policysearch.search(_digits(), out=tmp_path / "run", **settings)
    assert str(caught.value) == problem and not (tmp_path / "run").exists()
    assert SearchConfig(strengths=(0.5, 1), lr=1, train_size=None).lr == 1  # an int is a number


def test_the_least_image_size_binds_our_models_in_new_runs_only(tmp_path, monkeypatch):
    """A callable keeps its images' size (the check on one batch judges it), a torchvision network may be asked
    for less than the 32 px it is resized up to, and a stored run keeps the size it was started with."""
    import importlib

    module = importlib.import_module("policysearch.search.prepare")  # the package's prepare is the function

    config = SearchConfig(**TINY, image_size=4)
    with pytest.raises(ValueError, match="--image-size must be at least 8 for small_cnn"):
        module.prepare(config)
    monkeypatch.setattr(module, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("loading")))
    for allowed in (dataclasses.replace(config, model="callable:mine.net"),
                    dataclasses.replace(config, model="torchvision:resnet18", image_size=16)):
        with pytest.raises(RuntimeError, match="loading"):  # past the size check, on to the data
            module.prepare(allowed, module.Inputs(builder=tiny_net) if "callable" in allowed.model else None)
    with pytest.raises(RuntimeError, match="loading"):
        module.prepare(config, new_run=False)  # a stored run of 4 px continues at 4 px


def test_the_result_gives_the_recipe_ready_to_train_with(tmp_path):
    from policysearch import BatchPolicyTransform, PolicyTransform
    from policysearch.search.outcome import SearchResult
    from policysearch.search.selection import decide
    from policysearch.augment.standard import load_policy

    recipe = load_policy("randaugment:n=1,m=5")
    decision = decide({"trivialaugment, crop 1": [1.0, 2.0]}, "trivialaugment, crop 1", test_fraction=0.5)
    result = SearchResult(tmp_path, "run-1", tmp_path / "policy.json", recipe, {}, [], decision)
    assert result.reason == decision.reason and result.run_dir == tmp_path
    batch = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    assert isinstance(result.batch_transform(), BatchPolicyTransform)
    assert result.batch_transform()(batch, torch.Generator().manual_seed(0)).shape == batch.shape
    assert isinstance(result.transform(), PolicyTransform) and result.transform().policy == recipe
    # Regression: the dataclass's repr printed every field, 13,000 characters for a small search
    assert repr(result) == (f"SearchResult(run_id='run-1', recipe='14 sub-policies', policy_path="
                            f"{str(tmp_path / 'policy.json')!r}, 0 top candidates, 0 failed trials)")


def _stored_python_run(run_dir: Path, data) -> SearchConfig:
    config = SearchConfig(**TINY, dataset=read_data(data).name, model="callable:mine.net")
    rundir.write_config(rundir.open_run(config, run_dir, resume=False), config)
    return config


def test_a_model_stored_from_the_script_that_ran_says_where_to_continue(tmp_path, no_ray):
    """Regression: a model defined in the search's own script is stored as callable:__main__.NAME; the same
    function imported by another script is refused as another model, with no word of why."""
    images, labels = _digits()
    config = SearchConfig(**TINY, dataset=read_data((images, labels)).name, model="callable:__main__.net")
    rundir.write_config(rundir.open_run(config, tmp_path / "run", resume=False), config)
    with pytest.raises(rundir.RunError) as caught:
        policysearch.search((images, labels), model=tiny_net, out=tmp_path / "run", resume=True)
    assert str(caught.value).endswith("another out=; the run's model was defined in the script that started it "
                                      "(stored as __main__): continue from that script, or define models in a "
                                      "module the script imports")


def _net_of_width(num_classes: int, in_channels: int, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))


def test_resume_refuses_a_model_of_the_same_name_that_builds_another_network(tmp_path, no_ray):
    """Regression (review): a model callable is recorded by its name, so a resume with another build of that name
    (another width) went on and mixed two networks: phase 1's children of one, phase 3's models of the other."""
    import functools

    images, labels = _digits()
    data = read_data((images, labels))
    narrow, wide = functools.partial(_net_of_width, width=8), functools.partial(_net_of_width, width=16)
    assert callable_name(narrow) == callable_name(wide)
    config = SearchConfig(**TINY, dataset=data.name, model=callable_name(narrow))
    built = prepare(config, Inputs(data, narrow)).architecture
    assert built and built != prepare(config, Inputs(data, wide)).architecture

    class Versioned(nn.Sequential):  # regression (review): a model keeping extra state (not a tensor) crashed it
        def get_extra_state(self):
            return {"version": 2}

        def set_extra_state(self, state):
            pass

    assert architecture(Versioned(nn.Linear(2, 3))) != architecture(nn.Sequential(nn.Linear(2, 3)))
    # nor a lazy layer the check's forward pass did not reach (its shape is not known yet)
    assert architecture(nn.ModuleDict({"used": nn.Linear(2, 3), "aux": nn.LazyLinear(4)})).startswith("a1-")
    rundir.write_config(rundir.open_run(config, tmp_path / "run", resume=False), config, architecture=built)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["architecture"] == built
    with pytest.raises(rundir.RunError) as caught:
        policysearch.search((images, labels), model=wide, out=tmp_path / "run", resume=True)
    assert str(caught.value).startswith(f"out='{tmp_path / 'run'}', resume=True: model=test_search_api."
                                        "_net_of_width builds another network than the one the run started with")
    assert str(caught.value).endswith("give the run's own model to continue it, or start a new run with another out=")
    with pytest.raises(AssertionError, match="Ray was started"):  # the same build goes on, to Ray
        policysearch.search((images, labels), model=narrow, out=tmp_path / "run", resume=True)


def test_a_resume_on_a_folder_that_changed_names_the_images_not_the_model(tmp_path, no_ray):
    """Regression (review): the images build the model's first and last layers, so a class added to a folder was
    refused as "--model small_cnn builds another network ...; give the run's own model", which it was."""
    from policysearch.search import run_search
    from PIL import Image

    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(30):
            Image.new("L", (12, 12), 8 * i + (100 if label == "b" else 0)).save(folder / label / f"{i}.png")
    config = SearchConfig(**{**TINY, "train_size": None}, dataset=f"imagefolder:{folder}")
    prepared = prepare(config)
    rundir.write_config(rundir.open_run(config, tmp_path / "run", resume=False), config,
                        read_data_fingerprint(prepared), prepared.space.to_dict(), prepared.architecture)
    (folder / "c").mkdir()
    for i in range(30):
        Image.new("L", (12, 12), 255 - 4 * i).save(folder / "c" / f"{i}.png")
    assert prepare(config).architecture != prepared.architecture  # ten logits became three
    with pytest.raises(rundir.RunError, match=r"the training images differ from those the run started on"):
        run_search(config, tmp_path / "run", resume=True)
    # a named model that the installed library builds otherwise: the remedy is its versions, not another model
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**stored, "data_fingerprint": None,
                                                              "architecture": "a1-0123456789abcdef"}))
    with pytest.raises(rundir.RunError) as caught:
        run_search(config, tmp_path / "run", resume=True)
    assert ("--model small_cnn builds another network than the one the run started with" in str(caught.value)
            and "the installed library builds it otherwise than the one that ran it did (config.json's software "
                "names those versions): install them to continue it, or start a new run" in str(caught.value))


def read_data_fingerprint(prepared) -> str:
    from policysearch.training.user_data import fingerprint

    return fingerprint(prepared.data)


def test_a_timm_models_run_records_the_timm_that_built_it(tmp_path):
    """Regression (review): a named model's fingerprint check sends the user to config.json's software versions,
    which named no timm for a timm model."""
    import importlib.metadata

    from policysearch.training.pretrained import same_formula

    pytest.importorskip("timm", reason=TIMM_REASON)
    for model, run in (("timm:resnet10t", "a"), ("small_cnn", "b")):
        config = SearchConfig(**TINY, model=model)
        rundir.write_config(rundir.open_run(config, tmp_path / run, resume=False), config)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["software"]["timm"] == \
        importlib.metadata.version("timm")
    assert "timm" not in json.loads((tmp_path / "b" / "config.json").read_text())["software"]
    # the benchmark's record too, which a rerun compares to keep its runs (regression, review)
    from policysearch.training.pretrained import library_versions

    assert library_versions("timm:resnet10t") == {"timm": importlib.metadata.version("timm")}
    assert library_versions("small_cnn") == {} == library_versions("torchvision:resnet18")
    assert not same_formula(5, "a1-0123") and same_formula("a1-4567", "a1-0123")  # an edited config.json: no crash


def test_resume_refuses_other_data_and_keeps_the_stored_settings(tmp_path, no_ray):
    images, labels = _digits()
    run_dir = tmp_path / "run"
    stored = _stored_python_run(run_dir, (images, labels))
    other = (images[::-1].copy(), labels[::-1].copy())
    with pytest.raises(rundir.RunError, match=rf"^out='{run_dir}', resume=True: data python:arrays#\w+ \(stored: "
                                              r"python:arrays#\w+\)") as caught:
        policysearch.search(other, model=tiny_net, out=run_dir, resume=True)
    assert "trials" not in str(caught.value)  # not given: the stored value is used, not the default
    assert "--" not in str(caught.value) and str(caught.value).endswith("another out=")  # the API's own words
    assert "give the run's own data and model to continue it" in str(caught.value)
    with pytest.raises(rundir.RunError, match=r"trials=7 \(stored: 2\)"):
        policysearch.search((images, labels), model=tiny_net, out=run_dir, resume=True, trials=7)
    # Regression: another callable was to be "dropped", which the next message refused (a callable must be given)
    with pytest.raises(rundir.RunError) as caught:
        policysearch.search((images, labels), model=tiny_net, out=run_dir, resume=True)
    assert str(caught.value).endswith(
        "(stored: callable:mine.net) contradicts the stored run; give the run's own model to continue it, or start a "
        "new run with another out=")
    assert read_data((images, labels)).name == stored.dataset  # the same data: the same name, no contradiction
    # the command line cannot continue a run whose model was a callable: one line, before Ray
    with pytest.raises(ValueError, match=r"model=mine\.net: the run's model is a Python callable, which only "
                                         r"policysearch.search\(model=\.\.\.\) can take"):
        command.run(_args(["--resume", str(run_dir)]))
    # from Python without the data and the model: what to give again, both named (regression: the model alone,
    # and "the command line cannot" said to a Python caller)
    with pytest.raises(policysearch.ModelError) as caught:
        policysearch.search(out=run_dir, resume=True)
    assert str(caught.value) == ("model=mine.net: the run's data and model were given as Python objects; give the "
                                 "same again: policysearch.search(DATA, model=net, out=..., resume=True)")
    # nor without its data, even when the model agrees
    agreeing = SearchConfig(**TINY, dataset=stored.dataset, model=f"callable:{tiny_net.__module__}.tiny_net")
    rundir.write_config(rundir.open_run(agreeing, tmp_path / "run2", resume=False), agreeing)
    with pytest.raises(ValueError, match="names data that was given as Python objects"):
        policysearch.search(model=tiny_net, out=tmp_path / "run2", resume=True)


def _args(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------- model forms


MODELS = {
    "ours": ("small_cnn", None),
    "torchvision": ("torchvision:resnet18", None),
    "timm": ("timm:test_resnet", None),
    "callable function": (None, tiny_net),
    "callable class": (None, TinyNet),
    "lambda": (None, lambda num_classes, in_channels: TinyNet(num_classes, in_channels)),
}


@pytest.mark.parametrize("form", list(MODELS))
def test_every_model_form_is_checked_and_trains_a_child(form, tmp_path):
    if form == "timm":
        pytest.importorskip("timm", reason=TIMM_REASON)
    name, builder = MODELS[form]
    data = read_data(_digits(100))
    model = name or callable_name(builder)
    config = SearchConfig(dataset=data.name, model=model, splits=2, epochs=1, min_steps=2, batch_size=16)
    prepared = prepare(config, Inputs(data, builder))  # built and run on one batch here
    size = 32 if form in ("torchvision", "timm") else 8  # ImageNet stems get at least 32 x 32
    assert prepared.data.images.shape[-1] == size
    reports: list[dict] = []
    train_child(prepared, 0, tmp_path, reports.append)
    assert reports[-1]["split"] == 0 and 0 <= reports[-1]["da_accuracy"] <= 1
    if builder is not None:
        assert model.startswith("callable:") and model.endswith(getattr(builder, "__qualname__", ""))


def test_timm_builds_without_pretrained_weights_and_takes_them_from_a_file(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm", reason=TIMM_REASON)
    from policysearch.training.pretrained import create_model

    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    source = real("test_resnet", pretrained=False, num_classes=7, in_chans=3)  # a 3-channel checkpoint
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = create_model("timm:test_resnet", 10, 1, weights=str(tmp_path / "w.pt"))  # grey data
    assert calls and all(k["pretrained"] is False for k in calls)
    stem = source.conv1[0].weight if isinstance(source.conv1, nn.Sequential) else source.conv1.weight
    got = dict(model.named_modules())
    first = next(m for m in got.values() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1 and torch.allclose(first.weight, stem.sum(dim=1, keepdim=True))
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)  # the head is new, for 10 classes


def test_the_command_line_takes_timm_models():
    pytest.importorskip("timm", reason=TIMM_REASON)
    assert SearchConfig(**given_values(_args(["--model", "timm:test_resnet"]))).model == "timm:test_resnet"
    with pytest.raises(ValueError, match="--model names no timm model: 'no_such_net'; for example timm:resnet18"):
        SearchConfig(**given_values(_args(["--model", "timm:no_such_net"])))
    with pytest.raises(ValueError, match=r"'vit-tiny-patch16-224'; did you mean timm:vit_tiny_patch16_224\?"):
        SearchConfig(**given_values(_args(["--model", "timm:vit-tiny-patch16-224"])))


def _wrong_output(num_classes, in_channels):
    return tiny_net(num_classes + 1, in_channels)


def _wrong_channels(num_classes, in_channels):
    return tiny_net(num_classes, 3)


def _raises(num_classes, in_channels):
    raise KeyError("depth")


def _not_a_module(num_classes, in_channels):
    return "resnet"


def _too_small(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 9), nn.Flatten(), nn.Linear(4, num_classes))


def _lazy(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))


class _Views(nn.Module):
    """Flattens with .view, which fails on the channels_last batches training uses, and runs on contiguous ones."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(in_channels, 4, 3, padding=1), nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.head(x.view(x.size(0), -1))


class _Constant(nn.Module):
    """Logits of the right shape from no parameter at all: nothing to train."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        return torch.zeros(len(x), self.num_classes)


def _no_parameters(num_classes, in_channels):
    return _Constant(num_classes)


def _frozen(num_classes, in_channels):
    return tiny_net(num_classes, in_channels).requires_grad_(False)


_LOCK = threading.Lock()


def _unpicklable():
    def build(num_classes, in_channels):
        with _LOCK:  # cloudpickle sends a local function by value, with the globals it uses: a lock cannot go
            return tiny_net(num_classes, in_channels)

    return build


def _keyword_only(*, num_classes, in_channels):
    return tiny_net(num_classes, in_channels)


def _downloads(num_classes, in_channels):
    raise ConnectionError("no internet")


HERE = r"^model=test_search_api\."  # a callable is named by its module and name
BAD_MODELS = {
    "wrong output size": (_wrong_output, HERE + r"_wrong_output returns \[2, 11\] for a batch of 2 images, not "
                                                r"logits \[2, 10\]; it is called with num_classes=10"),
    "wrong input channels": (_wrong_channels, HERE + r"_wrong_channels takes 3-channel images \(its first "
                                                     r"convolution\), but the data has 1 channel; it is called with "
                                                     r"in_channels=1"),
    "callable that raises": (_raises, HERE + r"_raises raised KeyError when called as \(10, 1\), positionally "
                                             r"\(num_classes, in_channels\): 'depth'"),
    # regression: "called as (num_classes=10, in_channels=1)" read as a call by keyword, which it is not
    "keyword-only callable": (_keyword_only, HERE + r"_keyword_only raised TypeError when called as \(10, 1\), "
                                                    r"positionally \(num_classes, in_channels\): "),
    "not a module": (_not_a_module, HERE + r"_not_a_module returned a str, not a torch.nn.Module"),
    "input it cannot take": (_too_small, HERE + r"_too_small cannot run on 1x8x8 images \(RuntimeError: "),
    # a trial's find: both passed the check, then every trial failed in its worker (the layout; moving to it)
    "view on channels_last": (_Views, HERE + r"_Views fails on batches in the channels_last memory layout, which "
                                             r"training uses \(RuntimeError: view size is not compatible.*\), and runs "
                                             r"on contiguous ones; if it flattens with x.view\(\.\.\.\), use "
                                             r"torch.flatten\(x, 1\)"),
    "lazy layers": (_lazy, HERE + r"_lazy has lazy layers \(LazyLinear\), whose sizes are known only after a first "
                                  r"batch; build it with sized layers"),
    "a model instead of a callable": (TinyNet(10, 1), r"^model= takes a callable that builds a fresh model, not a "
                                                      r"TinyNet instance .*in_channels: TinyNet\(\.\.\.\), "
                                                      r"building it for num_classes outputs"),
    "not a callable": (42, r"^model= takes a model name or a callable (.*) -> nn.Module, got an int$"),
    "no trainable parameters": (_no_parameters, HERE + r"_no_parameters has no trainable parameters, so there is "
                                                       r"nothing to train: none is registered; its layers must be"),
    "every parameter frozen": (_frozen, HERE + r"_frozen has no trainable parameters, so there is nothing to train: "
                                               r"all \d+ of its parameters are frozen \(requires_grad=False\)$"),
    "cannot be pickled": (_unpicklable(), HERE + r"_unpicklable.<locals>.build cannot be sent to Ray's workers: "
                                                 r"cloudpickle cannot pickle it \(TypeError: cannot pickle "
                                                 r"'_thread.lock'"),
    "unknown timm model": ("timm:no_such_net", r"^model= names no timm model: 'no_such_net'"),
    # timm's ViT asserts its input size: an AssertionError from a named model was a 16-frame traceback
    "timm model of another input size": ("timm:vit_tiny_patch16_224", r"^model='timm:vit_tiny_patch16_224' cannot run "
                                         r"on 1x32x32 images \(AssertionError: Input height \(32\) doesn't match "
                                         r"model \(224\)\.\); if the size is the cause, choose another image_size=$"),
    "callable that downloads": (_downloads, HERE + r"_downloads raised ConnectionError when called as .*: no "
                                            r"internet; if it downloads weights, build it without them"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_models_are_one_line_before_ray(case, tmp_path, no_ray):
    model, message = BAD_MODELS[case]
    if case.startswith(("unknown timm model", "timm model")):
        pytest.importorskip("timm", reason=TIMM_REASON)
    with pytest.raises(ValueError, match=message) as caught:
        policysearch.search(_digits(), model=model, out=tmp_path / "run", epochs=1)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()
    # of the type the README names (regression: plain ValueErrors, and an error type not exported)
    expected = policysearch.SettingsError if case == "unknown timm model" else policysearch.ModelError
    assert type(caught.value) is expected


class _BrokenForward(nn.Module):
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 3)

    def forward(self, x):
        return self.conv(x).view(len(x), 7, -1)  # the user's bug: the line a Python caller needs to see


@pytest.mark.parametrize("model", [_BrokenForward, _raises])
def test_a_bug_in_the_users_model_keeps_its_traceback_under_the_one_line(model, tmp_path, no_ray):
    """Regression: the one-line message was raised ``from None``, so a Python caller whose own forward (or
    builder) failed saw no traceback of it; the model's exception is now the cause, with its frames."""
    import traceback

    with pytest.raises(ValueError) as caught:
        policysearch.search(_digits(), model=model, out=tmp_path / "run", epochs=1)
    assert "\n" not in str(caught.value)
    cause = caught.value.__cause__
    assert isinstance(cause, RuntimeError if model is _BrokenForward else KeyError)
    frames = [frame.name for frame in traceback.extract_tb(cause.__traceback__)]
    assert ("forward" if model is _BrokenForward else "_raises") in frames


def test_timm_models_without_timm_say_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ValueError, match=r"--model timm:NAME needs timm, an optional extra: pip install "
                                         r"'policysearch\[timm\]'"):
        SearchConfig(model="timm:resnet18")


def test_the_command_line_refuses_a_callable_model_name_in_one_line(tmp_path, capsys, no_ray):
    from policysearch import cli

    assert cli.main(["search", "--model", "callable:mine.net", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # a new run: pass the callable (regression: the resume's words, for a run that does not exist)
    assert err == ["policysearch: error: model=mine.net: a model given by name as a Python callable; only "
                   "policysearch.search(model=...) takes one, as the callable itself: model=net"]
    with pytest.raises(policysearch.ModelError, match=r"^model=mine.net: a model given by name as a Python callable"):
        policysearch.search(_digits(), model="callable:mine.net", out=tmp_path / "run")


# ----------------------------------------------------------------------------------- through Ray


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_callable_model_is_sent_to_two_ray_workers(ray_session, tmp_path):
    built = tmp_path / "built"
    built.mkdir()

    def build(num_classes: int, in_channels: int) -> nn.Module:  # a closure: cloudpickle sends it by value
        (built / str(os.getpid())).touch()
        return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    log = io.StringIO()
    result = policysearch.search(_digits(), model=build, out=tmp_path / "run", stream=log,
                                 **{**TINY, "max_concurrent": 2})
    workers = {int(p.name) for p in built.iterdir()} - {os.getpid()}
    assert len(workers) >= 2, "the two phase-1 trials should have built the model in two worker processes"
    assert "2 concurrent trial(s)" in log.getvalue()
    assert Policy.load(result.policy_path).sub_policies == result.policy.sub_policies
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["search"]
    assert stored["model"].startswith("callable:") and stored["model"].endswith("build")
    assert stored["dataset"].startswith("python:arrays#")
    assert {r["status"] for r in _read_csv(tmp_path / "run" / "trials.csv")} == {"ok"}


@pytest.mark.slow
def test_a_callable_the_workers_cannot_import_is_one_line_before_any_trial(ray_session, tmp_path):
    # tiny_net lives in this test module, which the driver imported from tests/ but Ray's workers cannot
    with pytest.raises(ValueError, match=r"^model=test_search_api\.tiny_net cannot be loaded by Ray's workers "
                                         r"\(node [^:]+: ModuleNotFoundError: No module named "
                                         r"'test_search_api'\)") as caught:
        policysearch.search(_digits(), model=tiny_net, out=tmp_path / "run", stream=io.StringIO(), **TINY)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run" / "config.json").exists()


def _flags(settings: dict) -> list[str]:
    argv = []
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", *(map(str, value) if isinstance(value, tuple) else [str(value)])]
    return argv


@pytest.mark.slow
def test_the_same_seed_gives_the_same_policy_through_the_api_and_the_command_line(ray_session, tmp_path, capsys):
    from policysearch import cli

    printed = io.StringIO()
    from_api = policysearch.search("digits", model="small_cnn", out=tmp_path / "api", stream=printed, **TINY)
    assert f"policy: {tmp_path / 'api' / 'policy.json'}" in printed.getvalue()  # the summary, as the command's
    assert cli.main(["search", "--dataset", "digits", "--model", "small_cnn", *_flags(TINY),
                     "--out", str(tmp_path / "cli")]) == 0
    assert f"policy: {tmp_path / 'cli' / 'policy.json'}" in capsys.readouterr().out
    from_cli = Policy.load(tmp_path / "cli" / "policy.json")
    assert from_cli.sub_policies == from_api.policy.sub_policies and from_cli.baseline == from_api.policy.baseline
    api_rows, cli_rows = _read_csv(tmp_path / "api" / "trials.csv"), _read_csv(tmp_path / "cli" / "trials.csv")
    varying = ("trial_id", "seconds", "load_seconds", "data_seconds", "child_cached", "node_id")
    assert [{k: v for k, v in r.items() if k not in varying} for r in api_rows] == \
           [{k: v for k, v in r.items() if k not in varying} for r in cli_rows]
    api_config = json.loads((tmp_path / "api" / "config.json").read_text())["search"]
    assert api_config == json.loads((tmp_path / "cli" / "config.json").read_text())["search"]


def test_an_unknown_space_is_named_as_the_keyword(tmp_path, no_ray):
    from policysearch.search.spaces import SpaceError

    with pytest.raises(SpaceError, match=r"^space='nope': no shipped search space of that name; shipped: "):
        policysearch.search(_digits(), out=tmp_path / "run", space="nope")
    assert not (tmp_path / "run").exists()


def test_a_search_leaves_the_callers_seeded_generators_as_they_were(tmp_path):
    """Regression: a user who seeds, searches, then trains did not get the training they seeded."""
    import random

    from policysearch.search.api import search

    data = _digits(60)
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="not a policysearch run"):  # refused after its model was built and run
        search(data, model="small_cnn", out=tmp_path / "run")
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]


def test_a_search_leaves_the_callers_environment_as_it_was(tmp_path, monkeypatch):
    """Regression: after a search, Ray's PYTHONBREAKPOINT (its own debugger, which swallowed the caller's next
    breakpoint()) and a dozen RAY_ variables stayed set in the caller's process."""
    from policysearch.search import SearchConfig, kept_environment, run_search

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("KEPT", "1")
    data = _digits(60)  # importing scikit-learn sets two variables of its own, for good
    before = dict(os.environ)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="not a policysearch run"):  # refused after the search set RAY_AUTH_MODE
        api_search(data, model="small_cnn", out=tmp_path / "run")
    assert dict(os.environ) == before
    with pytest.raises(ValueError, match="not a policysearch run"):  # the library function the benchmark calls
        run_search(SearchConfig(), tmp_path / "run", stream=io.StringIO())
    assert dict(os.environ) == before
    hook = sys.excepthook
    with kept_environment():  # as ray.init sets them
        os.environ["PYTHONBREAKPOINT"] = "ray.util.rpdb._driver_set_trace"
        os.environ["KEPT"] = "changed"
        sys.excepthook = lambda *exc: None
    assert dict(os.environ) == before and sys.excepthook is hook


def test_two_searches_started_in_the_same_second_get_their_own_folders():
    """Regression: the default folder named the second only, so two searches shared it and one's policy.json
    held the other's result."""
    from policysearch.search.api import default_run_dir

    first, second = default_run_dir(), default_run_dir()
    assert first != second and first.parent == second.parent == Path("runs")
    assert first.name.startswith("search-") and len(first.name.split("-")) == 4


def test_a_long_path_is_named_whole_in_python():
    """Regression: values named in Python's wording were shortened to 60 characters, paths too, which cut the
    middle out of the file a message was about."""
    from policysearch.wording import keyword_mention

    path = "/tmp/" + "a-rather-long-folder-name/" * 4 + "resnet18-imagenet.pt"
    assert keyword_mention("weights", path) == f"weights={path!r}"
    assert keyword_mention("weights", Path(path)) == f"weights={path}"
    assert len(keyword_mention("weights", {"w": list(range(1000))})) < 100  # anything else stays short
