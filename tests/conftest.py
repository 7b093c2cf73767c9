import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core import synth  # noqa: E402
from core.config import TrainConfig  # noqa: E402

# A model small and fast enough to train for an epoch in a couple of seconds.
TINY_ARCH = ["--arch", "digitnet_fpn", "--min-size", "64", "--max-size", "160"]


def tiny_config(data: str, out: str, **overrides) -> TrainConfig:
    values = dict(data=data, out=out, arch="digitnet_fpn", min_size=64, max_size=160, epochs=1,
                  subset_fraction=1.0, batch_size=4, lr=1e-3, device="cpu", seed=0)
    values.update(overrides)
    return TrainConfig(**values).validate()


def assert_same_detections(expected, found, score_tol: float, box_tol: float) -> None:
    """Each found detection matches one expected detection, one to one, in any order: random weights score many
    boxes alike, and which of two equal scores comes first can differ between CPUs. Detections are
    ``(score, box, *rest)`` tuples; ``rest`` (a label) must be equal, score and box coordinates within the tolerances."""
    left = [(score, list(box), tuple(rest)) for score, box, *rest in expected]
    assert len(found) == len(left)
    for score, box, *rest in found:
        match = next((k for k, (s, b, r) in enumerate(left) if r == tuple(rest) and abs(s - score) <= score_tol
                      and max(abs(x - y) for x, y in zip(box, b)) <= box_tol), None)
        assert match is not None, (score, box, rest)
        left.pop(match)


def tag_rotated(path, orientation: int = 6) -> None:
    """Re-save the image at ``path`` with an EXIF orientation tag, its pixels as they were (a phone photo's
    stored frame)."""
    from PIL import ExifTags, Image

    with Image.open(path) as image:
        image.load()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    image.save(path, exif=exif.tobytes())


@pytest.fixture(scope="session")
def fonts():
    return synth.usable_fonts()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, fonts):
    """A small synthetic dataset in the course layout (train 16, valid 8, test 8)."""
    root = tmp_path_factory.mktemp("tiny_data")
    synth.generate_dataset(root, {"train": 16, "valid": 8, "test": 8}, seed=3, fonts=fonts)
    return str(root)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data):
    """A finished one-epoch run of the tiny model: config, log, history, best.pt, last.pt."""
    from core.train import run

    out = str(tmp_path_factory.mktemp("tiny_run") / "run")
    code = run(tiny_config(tiny_data, out), stream=None)
    assert code == 0
    return out


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by Playwright (never `playwright install`)."""
    if os.environ.get("DIGIT_STUDIO_SKIP_BROWSER"):
        pytest.skip("DIGIT_STUDIO_SKIP_BROWSER is set")
    from playwright.sync_api import sync_playwright

    from apphelpers import CHROMIUM, FLAGS

    assert os.path.exists(CHROMIUM), "install Debian chromium (scripts/test.sh does) or set DIGIT_STUDIO_SKIP_BROWSER=1"
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield instance
        instance.close()
