"""Report figures: what they say (titles, labels, legends), what they measure, how they are saved."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from benchmark.figures import save_figure

SIDE = 16  # the smallest images both families take: tests stay fast


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four blobs on black, in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIDE), torch.linspace(-1, 1, SIDE), indexing="ij")
    centres = [(0, 0), (0.4, -0.3), (-0.3, 0.4), (0.2, 0.2)]
    return torch.stack([torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 0.1) for x, y in centres])[:, None]


def test_pdfs_embed_truetype_fonts_not_type3(tmp_path):
    before = plt.rcParams["pdf.fonttype"]
    fig, ax = plt.subplots()
    ax.set(title="μ and β in a title", xlabel="observed pixels")
    pdf = save_figure(fig, tmp_path / "fonts")[1]
    data = pdf.read_bytes()
    assert b"/Subtype /Type3" not in data and b"/FontFile2" in data  # FontFile2: embedded TrueType
    assert plt.rcParams["pdf.fonttype"] == before  # only the saving changed it
