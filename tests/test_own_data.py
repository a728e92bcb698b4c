"""Your own data: `--dataset npz` / `--dataset csv` read real files into the same splits and training loop
as the built-in datasets; a custom backbone arrives through SSL_RAY_PLUGINS (docs/ADDING_A_METHOD.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssl_ray.data import DataSpec, load_splits
from ssl_ray.errors import DataError

PLUGINS = str(Path(__file__).parent / "plugins")


def _blobs(n=600, seed=0):
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=n, centers=3, n_features=4, cluster_std=1.0, random_state=seed)
    return x.astype(np.float32), np.array(["setosa", "versicolor", "virginica"])[y]


def test_npz_features_with_string_labels_train_like_a_builtin_dataset(tmp_path):
    from ssl_ray.engine.loop import RunSpec, Trainer

    x, y = _blobs()
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    spec = DataSpec("npz", labels=12, val_size=60, options={"path": str(tmp_path / "mine.npz")})
    s = load_splits(spec, 0)
    assert s.info.kind == "points" and s.info.input_shape == (4,) and s.info.num_classes == 3
    assert s.info.class_names == ("setosa", "versicolor", "virginica")
    assert len(s.raw.x_test) == 120 and len(s.raw.x_train) == 480  # the default test_fraction 0.2
    assert s.num_labels == 12 and len(s.val_idx) == 60
    out = Trainer(RunSpec("supervised", spec, epochs=3, config={"steps_per_epoch": 20}), progress=False).fit()
    assert out["test_error"] < 20.0  # three well separated blobs: chance is 67%


def test_npz_images_with_a_test_split_and_other_key_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 12, 12, 1), dtype=np.uint8)   # N, H, W, C
    y = np.arange(200) % 4
    np.savez(tmp_path / "img.npz", images=x, labels=y, images_test=x[:40], labels_test=y[:40])
    raw = load_splits(DataSpec("npz", labels=8, val_size=20, options={"path": str(tmp_path / "img.npz"), "x": "images",
                                                                       "y": "labels"}), 0).raw
    assert raw.info.kind == "image" and raw.info.input_shape == (1, 12, 12)
    assert raw.x_train.dtype == np.uint8 and len(raw.x_test) == 40
    np.testing.assert_array_equal(raw.x_test[:, 0], x[:40, :, :, 0])


def test_csv_features_and_label_column(tmp_path):
    import pandas as pd

    x, y = _blobs(300)
    df = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    df["species"] = y
    df.to_csv(tmp_path / "t.csv", index=False)
    s = load_splits(DataSpec("csv", labels=9, val_size=30, options={"path": str(tmp_path / "t.csv"),
                                                                    "label": "species"}), 0)
    assert s.info.input_shape == (4,) and s.info.class_names == ("setosa", "versicolor", "virginica")
    all_x = np.concatenate([s.raw.x_train, s.raw.x_test])
    np.testing.assert_allclose(np.sort(all_x[:, 0]), np.sort(x[:, 0]), rtol=1e-6)


def test_own_data_errors_name_the_problem(tmp_path):
    import pandas as pd

    with pytest.raises(DataError, match="needs --data-opt path=FILE"):
        load_splits(DataSpec("npz", labels=10), 0)
    np.savez(tmp_path / "a.npz", feats=np.zeros((10, 2)), y=np.arange(10) % 2)
    with pytest.raises(DataError, match=r"has no array 'x'; it holds \['feats', 'y'\]"):
        load_splits(DataSpec("npz", labels=2, val_size=2, options={"path": str(tmp_path / "a.npz")}), 0)
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "label": [0, 1]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match="feature columns must be numeric; not so: b"):
        load_splits(DataSpec("csv", labels=2, options={"path": str(tmp_path / "b.csv")}), 0)
    np.savez(tmp_path / "c.npz", x=np.full((10, 4, 4), 3.0), y=np.arange(10) % 2)
    with pytest.raises(DataError, match=r"float images must lie in \[0, 1\]"):
        load_splits(DataSpec("npz", labels=2, val_size=2, options={"path": str(tmp_path / "c.npz")}), 0)


def test_cli_makes_the_data_path_absolute(tmp_path, monkeypatch):
    """Trials run in their own folders: a relative --data-opt path must reach them as an absolute one."""
    from click.testing import CliRunner

    from ssl_ray.cli import main

    x, y = _blobs(300)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["tune", "supervised", "--dataset", "npz", "--data-opt", "path=mine.npz",
                                  "--labels", "9", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["data_options"]["path"] == str(tmp_path / "mine.npz")


def test_custom_backbone_plugin_trains_through_the_cli(tmp_path):
    """docs/ADDING_A_METHOD.md's example: a plugin module with your own network, used by name."""
    env = {**os.environ, "SSL_RAY_PLUGINS": "my_backbone", "SSL_RAY_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "methods", "--json", "my_supervised"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    names = [h["name"] for h in json.loads(r.stdout)[0]["hyperparameters"]]
    assert "hidden" in names and "lr" in names
    sys.path.insert(0, PLUGINS)
    try:
        import my_backbone  # noqa: F401  (registers my_supervised)
        from ssl_ray.engine.loop import RunSpec, Trainer

        t = Trainer(RunSpec("my_supervised", DataSpec("digits", labels=50), epochs=2,
                            config={"hidden": 48, "steps_per_epoch": 10}), progress=False)
        assert isinstance(t.method.net, my_backbone.MyBackbone) and t.method.net.body[1].out_features == 48
        out = t.fit()
        assert 0 <= out["val_error"] < 90  # it learns (chance: 90%)
        from ssl_ray.export import classifier_module

        assert classifier_module(t.method) is t.method.net  # and exports like a built-in method
    finally:
        sys.path.remove(PLUGINS)
