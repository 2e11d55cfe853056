"""Procedural stimuli: RGB scenes with the semantic content visual cortex has areas for.

Each image shows one category — ``face``, ``body``, ``place``, ``word`` (letter strings), ``food`` or
``object`` (plain shapes) — with a colour, position, size and count drawn at random, and a caption
built from exactly those parameters. Images are drawn with PIL at 4x and downsampled (anti-aliased),
at any size (default 64 px). Every image comes from its own generator seeded by ``(seed, index)``,
so image ``i`` is the same whatever ``n`` is and whichever process draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from neurodecode.validation import check_option

CATEGORIES: tuple[str, ...] = ("face", "body", "place", "word", "food", "object")

#: name -> RGB; the object colour of every scene is one of these (captions use the name).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (235, 140, 30),
    "yellow": (235, 215, 40),
    "green": (50, 170, 60),
    "blue": (45, 80, 215),
    "purple": (140, 60, 190),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}

_NOUNS = {
    "face": ("face", "faces"),
    "body": ("person", "people"),
    "place": ("house", "houses"),
    "word": ("word", "words"),
    "food": ("apple", "apples"),
    "object": ("block", "blocks"),
}
_COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
_LETTERS = "ABCDEFGHIJKLMNOPRSTUVWXYZ"


@dataclass
class StimulusSet:
    """A set of generated images with the parameters that made them.

    Attributes
    ----------
    images : ndarray, shape (n, size, size, 3), uint8
        RGB images.
    captions : list of str, length n
        One caption per image, built from its parameters.
    category : ndarray of str, shape (n,)
        One of :data:`CATEGORIES`.
    colour : ndarray of str, shape (n,)
        Object colour name, a key of :data:`COLOURS`.
    count : ndarray of int, shape (n,)
        Number of objects (1-3).
    scale : ndarray of float, shape (n,)
        Object size as a fraction of the image side (about 0.15-0.4).
    position : ndarray of float, shape (n, 2)
        Centre of the object group, (x, y) in [0, 1] image coordinates (y down).
    text : ndarray of str, shape (n,)
        The letter string for ``word`` images, empty otherwise.
    """

    images: np.ndarray
    captions: list[str]
    category: np.ndarray
    colour: np.ndarray
    count: np.ndarray
    scale: np.ndarray
    position: np.ndarray
    text: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def category_index(self) -> np.ndarray:
        """Integer category labels, shape (n,), indexing :data:`CATEGORIES`."""
        lookup = {c: i for i, c in enumerate(CATEGORIES)}
        return np.array([lookup[c] for c in self.category], dtype=np.int64)


def _position_phrase(x: float, y: float) -> str:
    horizontal = "on the left" if x < 0.4 else "on the right" if x > 0.6 else ""
    vertical = "at the top" if y < 0.4 else "at the bottom" if y > 0.6 else ""
    if not horizontal and not vertical:
        return "in the centre"
    return " ".join(p for p in (vertical, horizontal) if p)


def make_caption(
    category: str, colour: str, count: int, scale: float, x: float, y: float, text: str = ""
) -> str:
    """Build the caption of a scene from its parameters (the same words every time)."""
    size = "small" if scale < 0.24 else "large" if scale > 0.32 else ""
    noun = _NOUNS[category][0 if count == 1 else 1]
    where = _position_phrase(x, y)
    if category == "word":
        words = " ".join(text.split())
        return f'the letters "{words}" in {colour} {where}'
    if category == "place":
        return (
            f"{_COUNT_WORDS[count]} {size + ' ' if size else ''}{colour} {noun} in a field {where}"
        )
    article = _COUNT_WORDS[count]
    if count == 1 and (size or colour)[0] in "aeiou":
        article = "an"
    return f"{article} {size + ' ' if size else ''}{colour} {noun} {where}".replace("  ", " ")


# ----------------------------------------------------------------------------- drawing


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in rgb)


def _draw_face(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rgb, rng) -> None:
    d.ellipse(
        [cx - 0.8 * r, cy - r, cx + 0.8 * r, cy + r],
        fill=rgb,
        outline=_shade(rgb, 0.5),
        width=max(1, int(r * 0.06)),
    )
    eye = 0.13 * r
    for sx in (-0.33, 0.33):
        ex, ey = cx + sx * r, cy - 0.22 * r
        d.ellipse(
            [ex - eye, ey - eye, ex + eye, ey + eye],
            fill=(235, 235, 235) if sum(rgb) < 150 else (20, 20, 20),
        )
    d.arc(
        [cx - 0.4 * r, cy + 0.05 * r, cx + 0.4 * r, cy + 0.55 * r],
        20,
        160,
        fill=(60, 10, 10),
        width=max(1, int(r * 0.08)),
    )
    d.line([cx, cy - 0.1 * r, cx, cy + 0.2 * r], fill=_shade(rgb, 0.6), width=max(1, int(r * 0.06)))


def _draw_body(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rgb, rng) -> None:
    w = max(2, int(r * 0.16))
    head = 0.22 * r
    d.ellipse([cx - head, cy - r, cx + head, cy - r + 2 * head], fill=_shade(rgb, 0.8))
    neck, hip = cy - r + 2 * head, cy + 0.25 * r
    d.line([cx, neck, cx, hip], fill=rgb, width=int(w * 1.8))
    arm_y = neck + 0.15 * r
    swing = rng.uniform(-0.3, 0.3) * r
    d.line([cx, arm_y, cx - 0.55 * r, arm_y + 0.35 * r + swing], fill=rgb, width=w)
    d.line([cx, arm_y, cx + 0.55 * r, arm_y + 0.35 * r - swing], fill=rgb, width=w)
    d.line([cx, hip, cx - 0.35 * r, cy + r], fill=rgb, width=w)
    d.line([cx, hip, cx + 0.35 * r, cy + r], fill=rgb, width=w)


def _draw_house(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rgb, rng) -> None:
    d.rectangle(
        [cx - 0.7 * r, cy - 0.2 * r, cx + 0.7 * r, cy + 0.8 * r], fill=rgb, outline=_shade(rgb, 0.5)
    )
    d.polygon(
        [(cx - 0.9 * r, cy - 0.2 * r), (cx + 0.9 * r, cy - 0.2 * r), (cx, cy - 0.9 * r)],
        fill=(150, 50, 40),
    )
    d.rectangle([cx - 0.15 * r, cy + 0.3 * r, cx + 0.15 * r, cy + 0.8 * r], fill=(80, 50, 30))
    d.rectangle([cx + 0.3 * r, cy + 0.0 * r, cx + 0.55 * r, cy + 0.25 * r], fill=(200, 230, 250))


def _draw_food(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rgb, rng) -> None:
    d.ellipse([cx - r, cy - 0.85 * r, cx + r, cy + 0.95 * r], fill=rgb, outline=_shade(rgb, 0.6))
    d.ellipse([cx - 0.55 * r, cy - 0.55 * r, cx - 0.2 * r, cy - 0.2 * r], fill=_shade(rgb, 1.35))
    d.line(
        [cx, cy - 0.8 * r, cx + 0.1 * r, cy - 1.2 * r],
        fill=(90, 60, 20),
        width=max(1, int(r * 0.12)),
    )
    d.ellipse([cx + 0.1 * r, cy - 1.25 * r, cx + 0.6 * r, cy - 0.95 * r], fill=(40, 150, 40))


def _draw_object(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rgb, rng) -> None:
    shape = rng.integers(3)
    if shape == 0:  # a cube in oblique projection
        s, o = 0.75 * r, 0.3 * r
        d.polygon(
            [
                (cx - s, cy - s + o),
                (cx - s + o, cy - s),
                (cx + s + o, cy - s),
                (cx + s, cy - s + o),
            ],
            fill=_shade(rgb, 1.3),
        )
        d.polygon(
            [
                (cx + s, cy - s + o),
                (cx + s + o, cy - s),
                (cx + s + o, cy + s - o),
                (cx + s, cy + s),
            ],
            fill=_shade(rgb, 0.6),
        )
        d.rectangle([cx - s, cy - s + o, cx + s, cy + s], fill=rgb)
    elif shape == 1:  # a pyramid
        d.polygon(
            [(cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r), (cx, cy - r)],
            fill=rgb,
            outline=_shade(rgb, 0.5),
        )
        d.polygon(
            [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx + 0.3 * r, cy + 0.8 * r)],
            fill=_shade(rgb, 0.7),
        )
    else:  # a cylinder
        d.rectangle([cx - 0.6 * r, cy - 0.7 * r, cx + 0.6 * r, cy + 0.7 * r], fill=rgb)
        d.ellipse([cx - 0.6 * r, cy + 0.5 * r, cx + 0.6 * r, cy + 0.9 * r], fill=rgb)
        d.ellipse([cx - 0.6 * r, cy - 0.9 * r, cx + 0.6 * r, cy - 0.5 * r], fill=_shade(rgb, 1.3))


_DRAWERS = {
    "face": _draw_face,
    "body": _draw_body,
    "place": _draw_house,
    "food": _draw_food,
    "object": _draw_object,
}


def _object_centres(
    count: int, x: float, y: float, r: float, side: float
) -> list[tuple[float, float]]:
    """Centres of ``count`` objects in a row around (x, y), in pixels of a ``side``-px canvas."""
    gap = 2.1 * r
    xs = [x * side + (i - (count - 1) / 2) * gap for i in range(count)]
    return [(min(max(px, r), side - r), y * side) for px in xs]


def render_scene(
    category: str,
    colour: str,
    count: int,
    scale: float,
    x: float,
    y: float,
    text: str,
    background: tuple[int, int, int],
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw one scene; returns an array of shape (size, size, 3), uint8."""
    check_option("category", category, CATEGORIES)
    side = 4 * size
    image = Image.new("RGB", (side, side), background)
    d = ImageDraw.Draw(image)
    rgb = COLOURS[colour]
    if category == "place":  # sky is the background; add a horizon and ground
        horizon = side * (0.45 + 0.2 * rng.random())
        d.rectangle([0, horizon, side, side], fill=(90, 140, 60))
        d.line([side * 0.5, horizon, side * 0.1, side], fill=(170, 160, 140), width=side // 40)
    r = scale * side / 2
    if category == "word":
        words = text.split()
        font = ImageFont.load_default(size=max(8, int(scale * side * 0.8)))
        line_h = scale * side * 0.9
        top = y * side - line_h * len(words) / 2
        for k, word in enumerate(words):
            box = d.textbbox((0, 0), word, font=font)
            w = box[2] - box[0]
            px = float(np.clip(x * side - w / 2, 0, max(0, side - w)))
            d.text((px, top + k * line_h), word, fill=rgb, font=font)
    else:
        for cx, cy in _object_centres(count, x, y, r, side):
            _DRAWERS[category](d, cx, cy, r, rgb, rng)
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def _draw_parameters(rng: np.random.Generator, category: str) -> dict:
    count = int(rng.integers(1, 4)) if category != "word" else int(rng.integers(1, 3))
    scale = float(rng.uniform(0.16, 0.4)) / (1 + 0.25 * (count - 1))
    x, y = (float(v) for v in rng.uniform(0.25, 0.75, size=2))
    colours = list(COLOURS)
    colour = colours[int(rng.integers(len(colours)))]
    background = tuple(int(v) for v in rng.integers(60, 200, size=3))
    if category == "place":
        background = (int(rng.integers(120, 180)), int(rng.integers(170, 220)), 240)
    if colour in ("white", "black"):  # keep the object visible against any background
        background = tuple(int(v) for v in rng.integers(90, 170, size=3))
    text = ""
    if category == "word":
        text = " ".join(
            "".join(rng.choice(list(_LETTERS), size=int(rng.integers(3, 5)))) for _ in range(count)
        )
    return dict(
        category=category,
        colour=colour,
        count=count,
        scale=scale,
        x=x,
        y=y,
        text=text,
        background=background,
    )


def generate_stimuli(
    n: int, size: int = 64, seed: int = 0, start: int = 0, categories: tuple[str, ...] = CATEGORIES
) -> StimulusSet:
    """Generate ``n`` scenes, images ``start .. start + n - 1`` of the stream for ``seed``.

    Categories cycle through ``categories`` in a seeded random order so that every category is
    equally common. Image ``i`` depends only on ``(seed, i, size)``.

    Returns
    -------
    StimulusSet
        Images (n, size, size, 3) uint8 and their parameters and captions.
    """
    if n < 0 or size < 8:
        raise ValueError(f"n must be >= 0 and size >= 8; got n={n}, size={size}.")
    for c in categories:
        check_option("categories", c, CATEGORIES)
    rows = []
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for k in range(n):
        i = start + k
        rng = np.random.default_rng([seed, i])
        category = categories[
            (i + int(np.random.default_rng([seed, i // len(categories)]).integers(len(categories))))
            % len(categories)
        ]
        p = _draw_parameters(rng, category)
        images[k] = render_scene(
            p["category"],
            p["colour"],
            p["count"],
            p["scale"],
            p["x"],
            p["y"],
            p["text"],
            p["background"],
            size,
            rng,
        )
        rows.append(p)
    return StimulusSet(
        images=images,
        captions=[
            make_caption(
                p["category"], p["colour"], p["count"], p["scale"], p["x"], p["y"], p["text"]
            )
            for p in rows
        ],
        category=np.array([p["category"] for p in rows], dtype="<U8"),
        colour=np.array([p["colour"] for p in rows], dtype="<U8"),
        count=np.array([p["count"] for p in rows], dtype=np.int64),
        scale=np.array([p["scale"] for p in rows], dtype=np.float64),
        position=np.array([[p["x"], p["y"]] for p in rows], dtype=np.float64).reshape(n, 2),
        text=np.array([p["text"] for p in rows], dtype="<U16"),
    )
