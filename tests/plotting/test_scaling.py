"""The data-scaling figure: one line per decoder in each direction, bad curves refused."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.plotting.scaling import plot_data_scaling
from neurodecode.validation import InvalidInputError


def test_scaling_figure_draws_each_curve_in_both_panels(tmp_path):
    curves = {
        "ours (subj01)": {
            "sessions": [1, 2, 5, 10],
            "brain_to_image_top1": [0.1, 0.2, 0.3, 0.4],
            "image_to_brain_top1": [0.2, 0.3, 0.4, 0.5],
        },
        "ours, new subject (subj02)": {
            "sessions": [1, 2],
            "brain_to_image_top1": [0.05, 0.15],
            "image_to_brain_top1": [0.06, 0.16],
        },
    }
    path = tmp_path / "scaling.png"
    fig = plot_data_scaling(curves, path, chance=1 / 300)
    assert path.stat().st_size > 1000
    left, right = fig.axes
    for ax, key in ((left, "brain_to_image_top1"), (right, "image_to_brain_top1")):
        lines = [line for line in ax.get_lines() if line.get_linestyle() != ":"]
        assert len(lines) == 2
        np.testing.assert_allclose(lines[0].get_ydata(), curves["ours (subj01)"][key])
        assert lines[1].get_linestyle() == "--"  # the new-subject curve is dashed
    with pytest.raises(InvalidInputError, match="same length"):
        plot_data_scaling({"x": {**curves["ours (subj01)"], "sessions": [1, 2]}})
    with pytest.raises(InvalidInputError, match="lacks"):
        plot_data_scaling({"x": {"sessions": [1]}})
