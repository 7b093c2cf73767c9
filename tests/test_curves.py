import os
import time

from core.curves import Run, best_epochs, default_selection


def _run(tmp_path, name, scheduler, age_s, epochs=1):
    path = tmp_path / name
    path.mkdir()
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return Run(name, "runs", str(path), {"scheduler": scheduler}, [{"epoch": e + 1} for e in range(epochs)])


def test_default_selection_pairs_the_newest_run_of_each_scheduler(tmp_path):
    shipped = Run("cosine", "shipped", str(tmp_path), {"scheduler": "cosine"}, [{"epoch": 1}])
    runs = [shipped, _run(tmp_path, "step-old", "step", 300), _run(tmp_path, "cos-a", "cosine", 20),
            _run(tmp_path, "cos-b", "cosine", 10), _run(tmp_path, "fresh", "cosine", 0, epochs=0)]
    assert default_selection(runs) == ["cosine (shipped)", "cos-b", "step-old"], \
        "the newest cosine run beside the newest step run, not the two newest cosine runs"
    assert default_selection(runs, newest=3) == ["cosine (shipped)", "cos-b", "step-old", "cos-a"]


def test_default_selection_with_one_scheduler_takes_the_newest_runs(tmp_path):
    runs = [_run(tmp_path, name, "step", age) for name, age in (("a", 30), ("b", 20), ("c", 10))]
    assert default_selection(runs) == ["c", "b"]


def test_best_epoch_is_the_highest_map_and_none_for_a_run_that_never_scored():
    history = [{"epoch": 1, "mAP": 0.2}, {"epoch": 2, "mAP": 0.5}, {"epoch": 3, "mAP": 0.5}, {"epoch": 4}]
    learnt = Run("learnt", "runs", "x", {}, history)
    stuck = Run("stuck", "runs", "y", {}, [{"epoch": 1, "mAP": 0.0}, {"epoch": 2, "mAP": 0.0}])
    unscored = Run("unscored", "runs", "z", {}, [{"epoch": 1}])
    assert best_epochs([learnt, stuck, unscored]) == {"learnt": 2}
