"""Pictures of a run: image grids and the ELBO curves drawn with Pillow, the latent scatter with
matplotlib's object API (no pyplot state, no display needed).

The pictures ``fit`` draws (samples, reconstructions, ELBO curves) need only Pillow, which draws them in
milliseconds; importing matplotlib took 0.4-0.5 s of every ``fit`` (``python -X importtime -c "from
matplotlib.figure import Figure"``), so it is imported only for the latent scatter.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .data import CIFAR10_CLASSES
from .io import atomic_write
from .model import VAE
from .runs import best_epoch

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image, ImageFont

# Pillow's drawing colours: matplotlib's first three default colours, one a curve of metrics.csv's.
CURVE_COLOURS = {"train bound": (31, 119, 180), "validation": (44, 160, 44), "test": (255, 127, 14)}
CURVE_COLUMNS = {"train bound": "train_elbo", "validation": "valid_elbo", "test": "test_elbo"}
GRID_GREY, BEST_COLOUR = (225, 225, 225), (214, 39, 40)  # not a grey: text is drawn in greys


def image_grid(images: torch.Tensor, image_shape: tuple[int, ...], ncols: int) -> torch.Tensor:
    """Tile (N, D) images in [0, 1] into one picture, one white pixel apart: (rows * H, ncols * W) for
    grey images, (rows * H, ncols * W, C) for colour ones (``image_shape`` (C, H, W), RGB for C = 3)."""
    c, h, w = (1, *image_shape) if len(image_shape) == 2 else image_shape
    n = len(images)
    nrows = math.ceil(n / ncols)
    grid = torch.ones(nrows * (h + 1) - 1, ncols * (w + 1) - 1, c)
    tiles = images.detach().float().cpu().reshape(n, c, h, w).permute(0, 2, 3, 1)  # (N, H, W, C)
    for i, img in enumerate(tiles):
        r, col = divmod(i, ncols)
        grid[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = img
    return grid[..., 0] if len(image_shape) == 2 else grid


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _save(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's own TrueType font (Pillow >= 10.1, FreeType)
    except (TypeError, ImportError, OSError):  # an older Pillow: its bitmap font
        return ImageFont.load_default()


def _pixels(grid: torch.Tensor) -> Image.Image:
    """A grid in [0, 1], (H, W) grey or (H, W, 3) RGB, as an 8-bit image."""
    from PIL import Image

    values = (grid.clamp(0, 1) * 255).round().to(torch.uint8)  # image_grid's grids: float, on the CPU
    return Image.fromarray(values.numpy(), mode="L" if values.dim() == 2 else "RGB")


def _save_panels(panels: list[tuple[torch.Tensor, str]], path: Path, tile: int) -> None:
    """Grids side by side on white, each under its title, written as one PNG; each pixel drawn as a
    square of side ``max(1, 64 // tile)`` (``tile``: an image's height), so 28 x 28 images show at twice
    their size."""
    from PIL import Image, ImageDraw

    scale = max(1, 64 // tile)
    font, pad, title_height = _font(14), 12, 26
    images = [_pixels(grid) for grid, _ in panels]
    images = [im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST) for im in images]
    widths = [max(im.width, math.ceil(font.getlength(t))) for im, (_, t) in zip(images, panels, strict=True)]
    size = (sum(widths) + pad * (len(images) + 1), max(im.height for im in images) + title_height + 2 * pad)
    canvas = Image.new("RGB", size, "white")
    draw, x = ImageDraw.Draw(canvas), pad
    for im, (_, title), width in zip(images, panels, widths, strict=True):
        draw.text((x + (width - font.getlength(title)) / 2, pad), title, fill="black", font=font)
        canvas.paste(im.convert("RGB"), (x + (width - im.width) // 2, pad + title_height))
        x += width + pad
    atomic_write(path, lambda f: canvas.save(f, format="PNG"))


def save_samples(vae: VAE, path: Path, num_samples: int = 64) -> None:
    """For the same draws ``z ~ p(z)``: the pixel means ``E[x | z]``, and a draw ``x ~ p(x | z)``."""
    z = vae.model.prior().sample((num_samples,))
    with torch.no_grad():
        likelihood = vae.model.decode(z)
        mean, draw = likelihood.mean, likelihood.sample()
    ncols = math.ceil(math.sqrt(num_samples))
    shape = vae.config.image_shape
    panels = [
        (image_grid(mean, shape, ncols), "E[x | z],  z ~ p(z)"),
        (image_grid(draw, shape, ncols), "x ~ p(x | z), same z"),
    ]
    _save_panels(panels, path, shape[-2])


def save_reconstructions(vae: VAE, x: torch.Tensor, path: Path, rows: int = 3, cols: int = 12) -> None:
    """Rows of test images, each followed by a row of their pixel means at the posterior mean."""
    x = x[: rows * cols]
    rows = math.ceil(len(x) / cols)
    padded = torch.ones(rows * cols, x.shape[-1], device=x.device)
    images = torch.stack(
        [padded.index_copy(0, torch.arange(len(x), device=x.device), t) for t in (x, vae.reconstruct(x))]
    )  # (2, rows * cols, D)
    images = images.reshape(2, rows, cols, -1).transpose(0, 1).flatten(0, 2)  # input row, its recons
    grid = image_grid(images, vae.config.image_shape, cols)
    title = "test images (odd rows) and E[x | z = E_q[z | x]] (even rows)"
    _save_panels([(grid, title)], path, vae.config.image_shape[-2])


def nice_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """At most ``most`` round values (1, 2 or 5 times a power of ten apart) spanning [low, high]."""
    if high <= low:
        low, high = low - 0.5, high + 0.5
    for step in (
        m * 10.0**e for e in range(math.floor(math.log10((high - low) / most)), 400) for m in (1, 2, 5)
    ):
        first, last = math.floor(low / step), math.ceil(high / step)
        if last - first + 1 <= most:
            return [i * step for i in range(first, last + 1)]
    raise AssertionError("unreachable: some power of ten spans any finite range")


def _tick_label(value: float, step: float) -> str:
    return f"{value:.{max(0, -math.floor(math.log10(step)))}f}" if step < 1 else f"{value:.0f}"


def elbo_range(metrics: list[dict[str, float]]) -> list[float]:
    """The y ticks of a run's curves, fitted to its epochs after the first :func:`early_epochs`.

    A long run's first epochs sit tens of nats below where it ends (epoch 1 near -270, the last near -85
    on MNIST): a range that held them would press the part worth reading, the gap between training and
    validation and the plateau, into a few pixels. Runs of more than 20 epochs leave their first 5% out
    of the range. A spike would do the same from later on (a diverging step can put one epoch's training
    bound 50,000 nats down, and the next epochs recover): of 20 values or more, those farther outside
    the middle 90% than its own width are left out of the range too. What leaves the frame is cut at it,
    and the title names its epochs."""
    return _value_ticks([v for m in metrics[early_epochs(metrics) :] for v in _curve_values(m)])


def early_epochs(metrics: list[dict[str, float]]) -> int:
    """How many of a run's first epochs the range leaves out: 5% of a run of more than 20."""
    return len(metrics) // 20 if len(metrics) > 20 else 0


def _value_ticks(values: list[float]) -> list[float]:
    """Round ticks spanning ``values``, less those farther outside their middle 90% than its width."""
    values = sorted(values)
    if len(values) >= 20:
        low, high = values[len(values) // 20], values[-1 - len(values) // 20]
        values = [v for v in values if low - (high - low) <= v <= high + (high - low)]
    return nice_ticks(values[0], values[-1])


def _spans(epochs: list[int], most: int = 3) -> str:
    """``[1, 2, 3, 9, 12, 13]`` as "epochs 1-3, 9, 12-13": the first ``most`` runs of consecutive epochs."""
    runs: list[list[int]] = []
    for epoch in epochs:
        if runs and epoch == runs[-1][-1] + 1:
            runs[-1].append(epoch)
        else:
            runs.append([epoch])
    words = [f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs[:most]]
    more = f" and {sum(len(r) for r in runs[most:])} more" if len(runs) > most else ""
    return ("epoch " if len(epochs) == 1 else "epochs ") + ", ".join(words) + more


def _curve_values(row: dict[str, float]) -> list[float]:
    return [row[c] for c in CURVE_COLUMNS.values() if row.get(c) is not None]


def save_elbo_curves(metrics: list[dict[str, float]], path: Path) -> None:
    """The training bound, validation and test ELBO per epoch, on round ticks, the epoch of the best
    validation ELBO marked (the checkpoint the other pictures and ``evaluate`` use): a 640 x 440 PNG."""
    curves = {
        name: [(m["epoch"], m[column]) for m in metrics if m.get(column) is not None]
        for name, column in CURVE_COLUMNS.items()
    }
    curves = {name: points for name, points in curves.items() if points}  # no validation split: no curve
    ys = elbo_range(metrics)
    best = best_epoch(metrics)
    title = []
    if best is not None:
        row = next(m for m in metrics if m["epoch"] == best)
        title.append(f"best validation ELBO {row['valid_elbo']:.2f} at epoch {best} (dashed)")
    out = [int(m["epoch"]) for m in metrics if any(not ys[0] <= v <= ys[-1] for v in _curve_values(m))]
    if out:
        title.append(f"{_spans(out)} outside the frame")
    colours = {name: CURVE_COLOURS[name] for name in curves}
    _save_curves(curves, colours, ys, "; ".join(title), path, best_line=best)


# One colour a run when several are compared: matplotlib's ten default colours.
RUN_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip
COLUMN_NAMES = {"train_elbo": "training bound", "valid_elbo": "validation ELBO", "test_elbo": "test ELBO"}


def save_compared_curves(runs: dict[str, list[dict[str, float]]], column: str, path: Path) -> None:
    """One column of ``metrics.csv`` (``valid_elbo``, ``test_elbo`` or ``train_elbo``) for several runs,
    one colour each, each run's epoch of best validation ELBO (the checkpoint ``evaluate`` scores; never
    the best of the test column) a dot: a 640 x 440 PNG. The range leaves out each run's first 5% of
    epochs and the spikes, as one run's picture does."""
    if not 1 <= len(runs) <= len(RUN_COLOURS):
        raise ValueError(f"between 1 and {len(RUN_COLOURS)} runs are compared, got {len(runs)}")
    curves = {name: [(m["epoch"], m[column]) for m in rows] for name, rows in runs.items()}
    ys = _value_ticks([v for rows in runs.values() for m in rows[early_epochs(rows) :] for v in [m[column]]])
    bests = {name: best_epoch(rows) for name, rows in runs.items()}
    best = {
        name: next((m["epoch"], m[column]) for m in runs[name] if m["epoch"] == epoch)
        for name, epoch in bests.items()
        if epoch is not None
    }
    title = f"{COLUMN_NAMES[column]} per epoch" + ("; best validation epochs as dots" if best else "")
    out = sum(not ys[0] <= v <= ys[-1] for points in curves.values() for _, v in points)
    if out:
        title += f"; {out} epoch{'s' if out > 1 else ''} outside the frame"
    colours = dict(zip(curves, RUN_COLOURS, strict=False))
    _save_curves(curves, colours, ys, title, path, best_points=best)


def _save_curves(
    curves: dict[str, list[tuple[float, float]]],
    colours: dict[str, tuple[int, int, int]],
    ys: list[float],
    title: str,
    path: Path,
    best_line: float | None = None,
    best_points: dict[str, tuple[float, float]] | None = None,
) -> None:
    """Curves of (epoch, nats) on round ticks (``ys`` on the y axis; what leaves it is cut at the frame),
    a legend at the bottom right, and a best epoch as a dashed line or each curve's best as a dot."""
    from PIL import Image, ImageDraw

    epochs = [e for points in curves.values() for e, _ in points]
    xs = [x for x in nice_ticks(min(epochs), max(epochs)) if x == int(x)] or [min(epochs)]  # whole epochs
    width, height, left, right, top, bottom = 640, 440, 78, 20, 36, 56
    x0, x1, y0, y1 = min(xs[0], min(epochs)), max(xs[-1], max(epochs)), ys[0], ys[-1]  # y1 > y0 always
    x1 = x1 if x1 > x0 else x0 + 1  # a single epoch
    plot_width, plot_height = width - left - right, height - top - bottom

    def at(epoch: float, value: float) -> tuple[float, float]:
        """Pixel coordinates in the plot area (the frame's inside), where the curves are drawn."""
        return (epoch - x0) / (x1 - x0) * (plot_width - 1), (y1 - value) / (y1 - y0) * (plot_height - 1)

    canvas = Image.new("RGB", (width, height), "white")
    area = Image.new("RGB", (plot_width, plot_height), "white")  # what leaves it is cut at the frame
    draw, inside, font = ImageDraw.Draw(canvas), ImageDraw.Draw(area), _font(13)
    for value in ys:  # nice_ticks gives at least two
        _, y = at(x0, value)
        inside.line([(0, y), (plot_width, y)], fill=GRID_GREY)
        tick = _tick_label(value, ys[1] - ys[0])
        draw.text((left - 6, top + y), tick, fill="black", font=font, anchor="rm")
    for epoch in xs:
        x, _ = at(epoch, y0)
        inside.line([(x, 0), (x, plot_height)], fill=GRID_GREY)
        draw.text((left + x, height - bottom + 6), f"{epoch:.0f}", fill="black", font=font, anchor="ma")
    if best_line is not None:
        x, _ = at(best_line, y0)
        for y in range(0, plot_height, 8):  # dashed
            inside.line([(x, y), (x, min(y + 4, plot_height))], fill=BEST_COLOUR)
    for name, points in curves.items():
        pixels = [at(e, v) for e, v in points]
        colour = colours[name]
        if len(pixels) > 1:
            inside.line(pixels, fill=colour, width=2)
        if len(pixels) <= 60:  # markers while they stay apart
            for x, y in pixels:
                inside.ellipse([(x - 3, y - 3), (x + 3, y + 3)], fill=colour)
    for name, point in (best_points or {}).items():
        x, y = at(*point)
        inside.ellipse([(x - 5, y - 5), (x + 5, y + 5)], fill=colours[name], outline="black")
    legend_left = plot_width - max(100, 34 + max(font.getlength(name) for name in curves))  # names fit
    legend_top = plot_height - 14 - 18 * len(curves)
    inside.rectangle([(legend_left - 10, legend_top), (plot_width - 1, plot_height - 1)], fill="white")
    for i, name in enumerate(curves):  # the legend, bottom right
        y = legend_top + 12 + 18 * i
        inside.line([(legend_left, y), (legend_left + 24, y)], fill=colours[name], width=2)
        inside.text((legend_left + 30, y), name, fill="black", font=font, anchor="lm")
    canvas.paste(area, (left, top))
    draw.rectangle([(left - 1, top - 1), (width - right, height - bottom)], outline="black")
    draw.text(((left + width - right) / 2, 10), title, fill="black", font=font, anchor="ma")
    draw.text(((left + width - right) / 2, height - 22), "epoch", fill="black", font=font, anchor="ma")
    label = Image.new("RGB", (220, 18), "white")
    ImageDraw.Draw(label).text((110, 9), "ELBO (nats per image)", fill="black", font=font, anchor="mm")
    canvas.paste(label.rotate(90, expand=True), (4, (top + height - bottom) // 2 - 110))
    atomic_write(path, lambda f: canvas.save(f, format="PNG"))


def draw_run(vae: VAE, x_test: torch.Tensor, metrics: list[dict[str, float]], run_dir: Path) -> None:
    """``samples.png``, ``reconstructions.png`` and ``elbo.png`` of a finished run."""
    save_samples(vae, run_dir / "samples.png")
    save_reconstructions(vae, x_test, run_dir / "reconstructions.png")
    save_elbo_curves(metrics, run_dir / "elbo.png")


CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "cifar10": list(CIFAR10_CLASSES),
    "fashionmnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


@torch.no_grad()
def latent_coordinates(vae: VAE, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, str]:
    """Posterior means ``E_q[z | x]`` in two dimensions: themselves for a 2-D latent, else their first
    two principal components (torch's SVD). Returns (N, 2) and a word for the axes."""
    z = torch.cat([vae.guide.location(rows) for rows in x.split(batch_size)])  # (N, z_dim)
    if z.shape[1] == 2:
        return z, "z"
    centred = z - z.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T, "principal component"


def save_latent(
    vae: VAE,
    x: torch.Tensor,
    labels: torch.Tensor,
    dataset: str,
    path: Path,
    classes: tuple[str, ...] = (),
) -> None:
    """The test set's posterior means, coloured by class (named by ``classes``, else by the data set)."""
    coords, axis = latent_coordinates(vae, x)
    coords, labels = coords.cpu(), labels.cpu()
    names = list(classes) or CLASS_NAMES.get(dataset, [str(c) for c in range(int(labels.max()) + 1)])
    fig = _figure((7.5, 6))
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    for c in labels.unique().tolist():
        points = coords[labels == c]
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color=cmap(c % 10), label=names[c])
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(f"E_q[z | x] of {len(x)} test images" + ("" if axis == "z" else " (PCA)"))
    ax.legend(markerscale=5, fontsize=8, loc="best")
    _save(fig, path)


@torch.no_grad()
def manifold(vae: VAE, steps: int = 20, num_prior_draws: int = 100_000) -> torch.Tensor:
    """Pixel means decoded on a ``steps`` x ``steps`` grid over the 2-D prior's quantiles, 5% to 95%,
    per dimension (taken from prior draws, so any prior will do): (steps * steps, D), row-major,
    the second latent dimension decreasing down the rows."""
    if vae.config.z_dim != 2:
        raise ValueError(f"the manifold needs a 2-D latent; this model has z_dim = {vae.config.z_dim}")
    draws = vae.model.prior().sample((num_prior_draws,))  # (M, 2)
    q = torch.linspace(0.05, 0.95, steps, device=draws.device)
    z1, z2 = torch.quantile(draws[:, 0], q), torch.quantile(draws[:, 1], q).flip(0)
    z = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
    return vae.model.decode(z).mean


def save_manifold(vae: VAE, path: Path, steps: int = 20) -> None:
    grid = image_grid(manifold(vae, steps), vae.config.image_shape, steps)
    title = "E[x | z] over the prior's 5%-95% quantiles of z"
    _save_panels([(grid, title)], path, vae.config.image_shape[-2])


@torch.no_grad()
def interpolation(vae: VAE, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Pixel means decoded along the line from ``E_q[z | x_a]`` to ``E_q[z | x_b]``: (steps, D)."""
    z_a, z_b = vae.guide.location(x_a[None])[0], vae.guide.location(x_b[None])[0]
    t = torch.linspace(0, 1, steps, device=z_a.device)[:, None]
    return vae.model.decode((1 - t) * z_a + t * z_b).mean


def save_interpolations(vae: VAE, x: torch.Tensor, path: Path, pairs: int = 6, steps: int = 10) -> None:
    """Rows of interpolations between consecutive test images, each row framed by its two inputs."""
    rows = []
    for i in range(pairs):
        x_a, x_b = x[2 * i], x[2 * i + 1]
        rows.append(torch.cat([x_a[None], interpolation(vae, x_a, x_b, steps), x_b[None]]))
    grid = image_grid(torch.cat(rows), vae.config.image_shape, steps + 2)
    title = "test image | E[x | z] along z_a -> z_b | test image"
    _save_panels([(grid, title)], path, vae.config.image_shape[-2])
