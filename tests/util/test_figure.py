"""The Pillow bar-chart renderer: valid PNG, deterministic bytes, bars where the values say."""

import io

from PIL import Image

from lcdata.util import figure as F


def _spec(values_by_panel, series=("corpus",)):
    labels = ["0-1K", "1K-2K", ">=2K"]
    return {"title": "t", "series": list(series),
            "panels": [{"source": f"s{i}", "labels": labels, "values": v} for i, v in enumerate(values_by_panel)]}


def _rgb(hexcolor):
    return tuple(int(hexcolor[i:i + 2], 16) for i in (1, 3, 5))


def test_png_layout_and_determinism():
    spec = _spec([[[0.5, 0.25, 0.25]]] * 5)
    png = F.draw(spec)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert F.draw(spec) == png  # same spec, same bytes
    im = Image.open(io.BytesIO(png))
    assert im.size == (4 * F.PANEL_W, F.TITLE_H + 2 * F.PANEL_H)  # 5 panels: 4 columns, 2 rows


def test_bar_heights_follow_values():
    spec = _spec([[[1.0, 0.0, 0.5], [0.25, 2.0, -1.0]]], series=("a", "b"))  # out-of-range values are clipped
    im = Image.open(io.BytesIO(F.draw(spec))).convert("RGB")
    x0, y0 = F.PLOT_L, F.TITLE_H + F.PLOT_T
    x1, y1 = F.PANEL_W - F.PLOT_R, F.TITLE_H + F.PANEL_H - F.PLOT_B
    slot, width = (x1 - x0) / 3, 0.8 * (x1 - x0) / 3 / 2
    a, b = _rgb(F.COLORS[0]), _rgb(F.COLORS[1])

    def column(j, s):  # heights (px) of series s's colour in slot j, measured at the bar's centre
        x = int(x0 + slot * (j + 0.1) + s * width + width / 2)
        color = (a, b)[s]
        return sum(im.getpixel((x, y)) == color for y in range(y0, y1 + 1))

    h = y1 - y0
    assert abs(column(0, 0) - h) <= 2 and column(1, 0) == 0 and abs(column(2, 0) - h / 2) <= 2
    assert abs(column(0, 1) - h / 4) <= 2 and abs(column(1, 1) - h) <= 2 and column(2, 1) == 0


def test_labels():
    assert F.label(0, 1024) == "0-1K"
    assert F.label(131072, None) == ">=128K"
    assert F.label(1000, 2000) == "1000-2000"
