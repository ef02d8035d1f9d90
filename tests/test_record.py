"""gptrl record: a few frames of a shipped bundle rendered offscreen (MUJOCO_GL=egl) to MP4 and GIF."""

from pathlib import Path

import imageio.v3 as iio
import pytest

HOPPER = Path(__file__).parent.parent / "bundles" / "hopper-v5"


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_records_a_short_episode(tmp_path, suffix):
    from gptrl.record import record_episode

    rec = record_episode(HOPPER, tmp_path / f"ep{suffix}", max_steps=6, every=2, width=64, height=48,
                         progress=False)
    assert rec.frames == 4 and rec.length == 6  # steps 0, 2, 4 and the final state
    frames = iio.imread(rec.path, index=None)
    assert frames.shape[0] == 4 and frames.shape[1:3] == (48, 64)
    assert frames.std() > 1.0  # a rendered scene, not a blank image
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ep{suffix}"]  # written atomically


def test_cli_record_refuses_other_formats(tmp_path):
    from gptrl.cli import main

    assert main(["record", str(HOPPER), "-o", str(tmp_path / "ep.avi"), "--max-steps", "2"]) == 2
    assert not list(tmp_path.iterdir())
