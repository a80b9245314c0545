"""A small synthetic multi-domain ReID dataset, drawn procedurally (no downloads).

Every domain is a set of cameras watching its own people. A person (identity) is a fixed set
of appearance attributes: top and bottom colours, a top pattern (stripes, checks, a logo),
sleeve length, trousers / shorts / skirt, shoes, skin, hair colour and length, a backpack or
shoulder bag, and body proportions (height, shoulder width, leg length, head size). Each image
renders that person with per-image nuisances (position, size, walking pose, front / back /
side view with the details each view shows or hides, lighting jitter, noise).

On top of that, each domain and each camera applies its own systematic style, so a domain gap
and camera sub-domains exist as between real datasets:

- domain: a colour cast, brightness, contrast and saturation, a background scene type (panels,
  tiles, foliage blotches, a gradient) with its colours, blur, resolution loss, sensor noise;
- camera: an illumination gain and a smaller cast, its own background tint and horizon,
  a preferred viewpoint, the person's size (distance) and horizontal offset, extra blur.

Presets (``preset=``) decide which cues carry identity in each domain:

- ``"default"``: every attribute belongs to the identity in every domain (the generator of
  dcsd 0.1; earlier numbers stay reproducible with it);
- ``"conflict"``: a domain conflict after the paper's account of domain shift (section I,
  Fig. 2): in a "summer" domain people are told apart by the colours of their clothes while
  the details (a pattern and its colour, a bag and its colour, sleeves, hair, trousers / shorts /
  skirt) are redrawn for every image; in a "winter" domain everybody wears dark coats whose
  colours are redrawn for every image and only the details identify people; in a "dusk" domain
  both cues belong to the identity
  but every camera rotates the hues strongly (up to 150 degrees), so colour misleads across
  cameras. A cue one domain needs is noise in another.
- ``"conflict_mild"``: ``"conflict"`` with a milder dusk, whose cameras rotate the hues by up
  to 57 degrees (1 radian): colour still shifts across cameras, but less than it identifies.

Domains are written as Market-1501-style folders (``bounding_box_train/``, ``query/``,
``bounding_box_test/``, files ``<pid:04d>_c<camera>_<index:06d>.png``) in a cache folder
keyed by the configuration, once; later calls read them back. The same arguments give
byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .base import MARKET_STYLE_FOLDERS, ReIDDataset, parse_image_folder, relabel

# Bump when the drawing changes, so that caches of older drawings are not reused.
GENERATOR_VERSION = 1

SYNTHETIC_PATTERN = re.compile(r"^(\d+)_c(\d+)_")

# Images per identity and camera, and cameras per identity (inclusive ranges).
IMAGES_PER_CAMERA = (2, 4)
CAMERAS_PER_IDENTITY = (2, 3)

CLOTH = np.array(
    [
        (0.80, 0.10, 0.10),  # red
        (0.95, 0.55, 0.10),  # orange
        (0.95, 0.88, 0.20),  # yellow
        (0.15, 0.60, 0.20),  # green
        (0.10, 0.60, 0.60),  # teal
        (0.15, 0.30, 0.85),  # blue
        (0.08, 0.10, 0.35),  # navy
        (0.50, 0.20, 0.65),  # purple
        (0.95, 0.55, 0.70),  # pink
        (0.92, 0.92, 0.92),  # white
        (0.08, 0.08, 0.08),  # black
        (0.50, 0.50, 0.50),  # grey
        (0.45, 0.28, 0.12),  # brown
        (0.70, 0.65, 0.45),  # khaki
    ]
)
SKIN = np.array([(0.96, 0.80, 0.69), (0.87, 0.67, 0.52), (0.68, 0.48, 0.33), (0.45, 0.30, 0.20)])
HAIR = np.array(
    [
        (0.05, 0.05, 0.05),
        (0.35, 0.20, 0.10),
        (0.85, 0.70, 0.35),
        (0.62, 0.62, 0.62),
        (0.6, 0.2, 0.1),
    ]
)
SHOES = np.array([(0.06, 0.06, 0.06), (0.90, 0.90, 0.90), (0.40, 0.25, 0.12), (0.25, 0.30, 0.45)])

# Navy, black, grey and brown: the coats of the conflict preset's winter domain.
WINTER_COATS = (6, 10, 11, 12)

FRONT, BACK, SIDE = 0, 1, 2


@dataclass(frozen=True)
class _Person:
    top: int
    top2: int
    pattern: int  # 0 solid, 1 horizontal stripes, 2 vertical stripes, 3 checks, 4 front logo
    long_sleeves: bool
    bottom: int
    bottom_kind: int  # 0 trousers, 1 shorts, 2 skirt
    shoes: int
    skin: int
    hair: int
    long_hair: bool
    bag: int  # 0 none, 1 backpack, 2 shoulder bag
    bag_colour: int
    height: float  # fraction of the image height
    width: float  # shoulder width, fraction of the image width
    legs: float  # leg length, fraction of the person's height
    head: float  # head height, fraction of the person's height


@dataclass(frozen=True)
class _DomainStyle:
    cast: np.ndarray  # (3,) channel gains
    brightness: float
    contrast: float
    saturation: float
    wall: np.ndarray  # (3,)
    floor: np.ndarray  # (3,)
    texture: int  # 0 panels, 1 tiles, 2 blotches, 3 gradient
    horizon: float
    blur: float
    resolution: float
    noise: float


@dataclass(frozen=True)
class _CameraStyle:
    gain: float
    cast: np.ndarray  # (3,)
    tint: np.ndarray  # (3,) added to the domain's wall and floor
    horizon: float  # shift of the domain's horizon
    view: int  # preferred viewpoint
    size: float  # person size factor (distance)
    offset: float  # horizontal offset, fraction of the width
    blur: float
    hue: float = 0.0  # hue rotation, radians


@dataclass(frozen=True)
class DomainRegime:
    """Which appearance cues belong to an identity in one synthetic domain.

    Attributes:
        name: a short label ("summer", "winter", ...), shown in summaries and figures.
        colour_identity: the colours of the clothes (top, bottom) belong to the identity;
            otherwise they are redrawn for every image (from ``noise_colours``).
        shape_identity: the details belong to the identity: top pattern and its colour, bag and
            its colour, sleeves, trousers / shorts / skirt, hair colour and length; otherwise
            they are redrawn for every image. At least one of the two must hold.
        camera_hue: each camera rotates all hues by an angle drawn from
            ``[-camera_hue, camera_hue]`` radians (0: no rotation).
        capture: 0 sharp, 1 blurred at low resolution, 2 noisy; None cycles with the domain
            index (domain % 3).
        noise_colours: indices into ``CLOTH`` that redrawn clothing colours come from (None:
            all of them), e.g. the dark coats of a winter domain.
    """

    name: str
    colour_identity: bool = True
    shape_identity: bool = True
    camera_hue: float = 0.0
    capture: int | None = None
    noise_colours: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SyntheticPreset:
    """A named generator configuration: the domains' regimes (cycled over the domains) and the
    default identity counts per domain."""

    regimes: tuple[DomainRegime, ...]
    train_ids_per_domain: int
    test_ids_per_domain: int


# The conflict presets' summer and winter domains (their dusk domains differ).
_SUMMER = DomainRegime("summer", colour_identity=True, shape_identity=False, capture=0)
_WINTER = DomainRegime(
    "winter", colour_identity=False, shape_identity=True, capture=0, noise_colours=WINTER_COATS
)

PRESETS: dict[str, SyntheticPreset] = {
    "default": SyntheticPreset((DomainRegime("plain"),), 28, 16),
    "conflict": SyntheticPreset(
        (_SUMMER, _WINTER, DomainRegime("dusk", camera_hue=2.6, capture=2)), 32, 32
    ),
    "conflict_mild": SyntheticPreset(
        (_SUMMER, _WINTER, DomainRegime("dusk", camera_hue=1.0, capture=2)), 32, 32
    ),
}


def default_synthetic_root() -> Path:
    """``$XDG_CACHE_HOME/dcsd/synthetic`` (``~/.cache/dcsd/synthetic`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "dcsd" / "synthetic"


def make_synthetic_domains(
    root: str | Path | None = None,
    num_domains: int = 3,
    cameras_per_domain: Sequence[int] | None = None,
    train_ids_per_domain: int | None = None,
    test_ids_per_domain: int | None = None,
    image_size: Sequence[int] = (64, 32),
    scale: float = 1.0,
    seed: int = 0,
    preset: str = "default",
) -> list[ReIDDataset]:
    """One :class:`ReIDDataset` per synthetic domain, named ``synth0``, ``synth1``, ...

    The defaults give 3 domains with 3, 4 and 5 cameras (12 global cameras), 28 train and 16
    test identities per domain: about 630 train images, 96 queries and 290 gallery images of
    64x32, drawn in a few seconds. Each identity appears in 2-3 cameras with 2-4 images
    each; a test identity gives one query in each of two cameras, the rest is gallery, so
    every query has a gallery match in another camera. Train and test identities are
    disjoint; identity numbers are 1.. per domain (train first), train relabelled 0..P-1.

    Args:
        root: cache folder; the data lives in ``root/<config hash>/synth<d>/``. Default
            :func:`default_synthetic_root`.
        num_domains: number of domains.
        cameras_per_domain: cameras of each domain; default 3, 4, 5, 3, 4, 5, ...
        train_ids_per_domain: train identities per domain at ``scale`` 1 (default: the
            preset's, 28 for ``"default"``, 32 for ``"conflict"``).
        test_ids_per_domain: test identities per domain at ``scale`` 1 (default: the preset's,
            16 for ``"default"``, 32 for ``"conflict"``).
        image_size: (height, width) of the images.
        scale: multiplies the identity counts, for larger runs.
        seed: the same seed gives byte-identical images.
        preset: a name in :data:`PRESETS`: ``"default"`` (every cue belongs to the identity),
            ``"conflict"`` (summer / winter / dusk domains whose identity cues conflict; see
            the module docstring) or ``"conflict_mild"`` (the same with a milder dusk).
            Domain d follows the preset's regime ``d % len(regimes)``.

    Raises:
        ValueError: a count, size, scale or preset is out of range.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    chosen = PRESETS[preset]
    if train_ids_per_domain is None:
        train_ids_per_domain = chosen.train_ids_per_domain
    if test_ids_per_domain is None:
        test_ids_per_domain = chosen.test_ids_per_domain
    if num_domains < 1:
        raise ValueError(f"num_domains must be >= 1, got {num_domains}")
    if cameras_per_domain is None:
        cameras_per_domain = [3 + d % 3 for d in range(num_domains)]
    cameras = [int(c) for c in cameras_per_domain]
    if len(cameras) != num_domains or min(cameras) < CAMERAS_PER_IDENTITY[0]:
        raise ValueError(
            f"cameras_per_domain needs {num_domains} values >= {CAMERAS_PER_IDENTITY[0]}, "
            f"got {list(cameras_per_domain)}"
        )
    if len(image_size) != 2 or image_size[0] < 16 or image_size[1] < 8:
        raise ValueError(f"image_size must be (height >= 16, width >= 8), got {image_size}")
    if scale <= 0 or seed < 0:
        raise ValueError(f"scale must be > 0 and seed >= 0, got scale={scale}, seed={seed}")
    num_train = max(2, round(train_ids_per_domain * scale))
    num_test = max(2, round(test_ids_per_domain * scale))
    config = {
        "version": GENERATOR_VERSION,
        "cameras_per_domain": cameras,
        "train_ids_per_domain": num_train,
        "test_ids_per_domain": num_test,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "seed": int(seed),
    }
    if preset != "default":
        # The default preset's key is unchanged, so caches and numbers made before presets
        # existed stay valid.
        config["preset"] = preset
        config["regimes"] = [asdict(regime) for regime in chosen.regimes]
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(root).expanduser() if root is not None else default_synthetic_root()
    folder = root / key
    if not (folder / "config.json").is_file():
        _generate(folder, config)
    return [
        _read_domain(folder / f"synth{domain}", f"synth{domain}", num_cameras)
        for domain, num_cameras in enumerate(cameras)
    ]


def _read_domain(folder: Path, name: str, num_cameras: int) -> ReIDDataset:
    train, query, gallery = (
        parse_image_folder(name, folder / sub, SYNTHETIC_PATTERN, num_cameras, (), (".png",))
        for sub in MARKET_STYLE_FOLDERS
    )
    train, original = relabel(train)
    return ReIDDataset(name, folder, train, query, gallery, original)


def _generate(folder: Path, config: dict) -> None:
    """Draw every domain into a temporary folder, then rename it to ``folder`` at once."""
    # A uniquely named sibling, made with the user's umask (mkdtemp would make it private).
    staging = folder.parent / f".{folder.name}-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        cameras = config["cameras_per_domain"]
        height, width = config["image_size"]
        seeds = np.random.SeedSequence(config["seed"]).spawn(len(cameras))
        regimes = PRESETS[config.get("preset", "default")].regimes
        for domain, (num_cameras, domain_seed) in enumerate(zip(cameras, seeds, strict=True)):
            _generate_domain(
                staging / f"synth{domain}",
                np.random.default_rng(domain_seed),
                regimes[domain % len(regimes)],
                domain,
                len(cameras),
                num_cameras,
                config["train_ids_per_domain"],
                config["test_ids_per_domain"],
                height,
                width,
            )
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        try:
            staging.rename(folder)
        except OSError:
            # Another process (e.g. another DDP rank) finished the same folder first.
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _generate_domain(
    out: Path,
    rng: np.random.Generator,
    regime: DomainRegime,
    domain: int,
    num_domains: int,
    num_cameras: int,
    num_train: int,
    num_test: int,
    height: int,
    width: int,
) -> None:
    capture = domain % 3 if regime.capture is None else regime.capture
    style = _domain_style(rng, domain, num_domains, capture)
    cams = [_camera_style(rng, c, domain, regime.camera_hue) for c in range(num_cameras)]
    people = _people(rng, num_train + num_test, regime)
    for sub in MARKET_STYLE_FOLDERS:
        (out / sub).mkdir(parents=True)
    train_dir, query_dir, gallery_dir = MARKET_STYLE_FOLDERS
    counter = 0
    for number, person in enumerate(people, start=1):
        low, high = CAMERAS_PER_IDENTITY
        n_cams = int(rng.integers(low, min(high, num_cameras) + 1))
        for rank, cam in enumerate(rng.permutation(num_cameras)[:n_cams]):
            for shot in range(int(rng.integers(IMAGES_PER_CAMERA[0], IMAGES_PER_CAMERA[1] + 1))):
                image = _draw(
                    rng, _redraw_noise_cues(rng, person, regime), style, cams[cam], height, width
                )
                if number <= num_train:
                    sub = train_dir
                else:
                    # One query in each of the first two cameras; the rest is gallery.
                    sub = query_dir if shot == 0 and rank < 2 else gallery_dir
                counter += 1
                Image.fromarray(image).save(
                    out / sub / f"{number:04d}_c{cam + 1}_{counter:06d}.png"
                )


def _random_person(rng: np.random.Generator) -> _Person:
    n = len(CLOTH)
    top = int(rng.integers(n))
    return _Person(
        top=top,
        top2=int((top + rng.integers(3, n - 2)) % n),
        pattern=int(rng.integers(5)),
        long_sleeves=bool(rng.random() < 0.5),
        bottom=int(rng.integers(n)),
        bottom_kind=int(rng.choice(3, p=[0.6, 0.2, 0.2])),
        shoes=int(rng.integers(len(SHOES))),
        skin=int(rng.integers(len(SKIN))),
        hair=int(rng.integers(len(HAIR))),
        long_hair=bool(rng.random() < 0.35),
        bag=int(rng.choice(3, p=[0.4, 0.3, 0.3])),
        bag_colour=int(rng.integers(n)),
        height=float(rng.uniform(0.80, 0.93)),
        width=float(rng.uniform(0.42, 0.62)),
        legs=float(rng.uniform(0.43, 0.52)),
        head=float(rng.uniform(0.12, 0.15)),
    )


# The attributes each kind of cue covers: the clothes' colours, and the details (a pattern with
# its colour, a bag with its colour, sleeves, trousers / shorts / skirt, hair). Body proportions
# always belong to the identity.
_COLOUR_CUES = ("top", "bottom")
_SHAPE_CUES = (
    "pattern",
    "top2",
    "long_sleeves",
    "bottom_kind",
    "bag",
    "bag_colour",
    "hair",
    "long_hair",
)


def _identity_signature(person: _Person, regime: DomainRegime) -> tuple:
    """The categorical attributes that tell this person apart in ``regime``."""
    colour = tuple(getattr(person, name) for name in _COLOUR_CUES)
    shape = (
        person.top2 if person.pattern else -1,
        person.bag_colour if person.bag else -1,
        person.pattern,
        person.bottom_kind,
        person.bag,
        person.hair,
    )
    if regime.colour_identity and regime.shape_identity:
        return colour + shape
    return colour if regime.colour_identity else shape + (person.long_sleeves, person.long_hair)


def _redraw_noise_cues(rng: np.random.Generator, person: _Person, regime: DomainRegime) -> _Person:
    """``person`` with the cues that do not belong to identities in ``regime`` drawn anew."""
    if regime.colour_identity and regime.shape_identity:
        return person  # no draw: the default preset's images stay byte-identical
    if regime.colour_identity:
        fresh = _random_person(rng)
        return replace(person, **{name: getattr(fresh, name) for name in _SHAPE_CUES})
    palette = regime.noise_colours or tuple(range(len(CLOTH)))
    colours = rng.choice(palette, size=len(_COLOUR_CUES))
    return replace(person, **{name: int(c) for name, c in zip(_COLOUR_CUES, colours, strict=True)})


def _people(rng: np.random.Generator, count: int, regime: DomainRegime) -> list[_Person]:
    """``count`` people whose identity cues in ``regime`` all differ from each other."""
    people: list[_Person] = []
    seen: set[tuple] = set()
    for _ in range(count * 1000):
        if len(people) == count:
            return people
        person = _random_person(rng)
        signature = _identity_signature(person, regime)
        if signature not in seen:
            seen.add(signature)
            people.append(person)
    raise ValueError(f"cannot draw {count} distinct identities; lower scale")


def _domain_style(
    rng: np.random.Generator, domain: int, num_domains: int, kind: int
) -> _DomainStyle:
    # Casts spread evenly around the colour wheel so domains differ; the rest cycles through
    # three kinds of capture (sharp, blurred low-resolution, noisy) with random detail.
    hue = 2 * math.pi * domain / num_domains + rng.uniform(-0.3, 0.3)
    strength = rng.uniform(0.12, 0.22)
    cast = 1 + strength * np.cos(hue - np.array([0, 2 * math.pi / 3, 4 * math.pi / 3]))
    return _DomainStyle(
        cast=cast,
        brightness=float(rng.uniform(0.85, 1.1)),
        contrast=float(rng.uniform(0.75, 1.1)),
        saturation=float(rng.uniform(0.6, 1.1)),
        wall=rng.uniform(0.25, 0.75, size=3),
        floor=rng.uniform(0.15, 0.55, size=3),
        texture=domain % 4,
        horizon=float(rng.uniform(0.55, 0.75)),
        blur=(0.0, 0.7, 0.35)[kind] + float(rng.uniform(0, 0.15)),
        resolution=(1.0, 0.5, 0.75)[kind],
        noise=(0.01, 0.025, 0.045)[kind],
    )


def _camera_style(
    rng: np.random.Generator, camera: int, domain: int, camera_hue: float
) -> _CameraStyle:
    style = _CameraStyle(
        gain=float(rng.uniform(0.75, 1.2)),
        cast=1 + rng.uniform(-0.08, 0.08, size=3),
        tint=rng.uniform(-0.12, 0.12, size=3),
        horizon=float(rng.uniform(-0.08, 0.08)),
        view=(camera + domain) % 3,
        size=float(rng.uniform(0.86, 1.0)),
        offset=float(rng.uniform(-0.05, 0.05)),
        blur=float(rng.choice([0.0, 0.0, 0.4])),
    )
    if camera_hue == 0:
        return style  # no draw: the default preset's images stay byte-identical
    return replace(style, hue=float(rng.uniform(-camera_hue, camera_hue)))


def _rotate_hue(image: np.ndarray, angle: float) -> np.ndarray:
    """Rotate every colour of an (H, W, 3) image about the grey axis by ``angle`` radians."""
    axis = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = (
        math.cos(angle) * np.eye(3)
        + math.sin(angle) * cross
        + (1 - math.cos(angle)) * np.outer(axis, axis)
    )
    return np.clip(image @ rotation.T, 0, 1)


def _draw(
    rng: np.random.Generator,
    person: _Person,
    style: _DomainStyle,
    cam: _CameraStyle,
    height: int,
    width: int,
) -> np.ndarray:
    """One (height, width, 3) uint8 image of ``person`` seen by ``cam`` in domain ``style``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    image = _background(rng, style, cam, ys, xs, height, width)
    views = np.full(3, 0.2)
    views[cam.view] = 0.6
    view = int(rng.choice(3, p=views))
    _person(rng, image, person, cam, view, ys, xs, height, width)
    if view == SIDE and rng.random() < 0.5:
        image = image[:, ::-1]
    if cam.hue:
        image = _rotate_hue(image, cam.hue)

    image = image * (1 + rng.normal(0, 0.04)) * cam.gain * style.cast * cam.cast
    image = (image - 0.5) * style.contrast + 0.5
    image = image * style.brightness
    grey = image.mean(axis=2, keepdims=True)
    image = np.clip(grey + (image - grey) * style.saturation, 0, 1)
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8))
    if style.resolution < 1:
        small = (max(4, round(width * style.resolution)), max(8, round(height * style.resolution)))
        pil = pil.resize(small, Image.Resampling.BOX).resize((width, height), Image.BILINEAR)
    sigma = style.blur + cam.blur
    if sigma > 0.05:
        pil = pil.filter(ImageFilter.GaussianBlur(sigma * height / 64))
    image = np.asarray(pil, dtype=np.float64) / 255 + rng.normal(0, style.noise, (height, width, 3))
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _background(
    rng: np.random.Generator,
    style: _DomainStyle,
    cam: _CameraStyle,
    ys: np.ndarray,
    xs: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    wall = np.clip(style.wall + cam.tint, 0, 1)
    floor = np.clip(style.floor + cam.tint, 0, 1)
    horizon = (style.horizon + cam.horizon) * height
    below = ys >= horizon
    image = np.where(below[..., None], floor, wall)
    phase = rng.uniform(0, 2 * math.pi)
    if style.texture == 0:  # building panels
        shade = 1 + 0.12 * np.sign(np.sin(2 * math.pi * xs / (width / 3) + phase))
        image = image * np.where(below, 1.0, shade)[..., None]
    elif style.texture == 1:  # tiles
        period = height / 10
        lines = (np.mod(ys + phase, period) < 1) | (np.mod(xs + phase, period) < 1)
        image = image * np.where(lines, 0.8, 1.0)[..., None]
    elif style.texture == 2:  # foliage blotches
        for _ in range(4):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            radius = rng.uniform(0.1, 0.25) * height
            blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))
            image = image * (1 + rng.uniform(-0.25, 0.25) * blob)[..., None]
    else:  # sky-to-ground gradient
        image = image * (1.15 - 0.3 * ys / height)[..., None]
    return np.clip(image, 0, 1)


def _person(
    rng: np.random.Generator,
    image: np.ndarray,
    p: _Person,
    cam: _CameraStyle,
    view: int,
    ys: np.ndarray,
    xs: np.ndarray,
    height: int,
    width: int,
) -> None:
    """Paint ``p`` into ``image`` in place (back to front)."""
    tall = p.height * cam.size * height * (1 + rng.normal(0, 0.02))
    feet = height * rng.uniform(0.95, 0.99)
    top = feet - tall
    cx = width * (0.5 + cam.offset + rng.uniform(-0.05, 0.05))
    head_r = p.head * tall / 2
    head_cy = top + head_r
    shoulder = top + 2 * head_r + 0.02 * tall
    hip = feet - p.legs * tall
    half = p.width * width / 2 * (0.62 if view == SIDE else 1.0)
    torso_h = hip - shoulder
    cloth, top2 = CLOTH[p.top], CLOTH[p.top2]
    skin, hair = SKIN[p.skin], HAIR[p.hair]
    bag = CLOTH[p.bag_colour]
    period = max(2.0, 0.06 * tall)

    def box(x0, x1, y0, y1):
        return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)

    # Round bodies are darker towards their edges.
    shade = 1 - 0.18 * np.clip((xs - cx) / half, -1, 1) ** 2

    def paint(mask, colour):
        image[mask] = shade[mask][:, None] * colour

    if p.long_hair and view == BACK:
        paint(box(cx - 0.8 * half, cx + 0.8 * half, head_cy, shoulder + 0.25 * torso_h), hair)
    if p.bag == 1 and view == SIDE:
        paint(box(cx - 1.6 * half, cx - 0.9 * half, shoulder + 0.1 * torso_h, hip), bag)

    # Legs, walking: wider stride seen from the side.
    stride = rng.uniform(0.1, 0.45) * half if view == SIDE else 0.45 * half
    leg_w = 0.42 * half if view != SIDE else 0.6 * half
    shoe_h = 0.035 * tall
    for leg_x in (cx - stride, cx + stride):
        leg = box(leg_x - leg_w / 2, leg_x + leg_w / 2, hip, feet - shoe_h)
        paint(leg, skin if p.bottom_kind else CLOTH[p.bottom])
        if p.bottom_kind == 1:  # shorts
            paint(leg & (ys < hip + 0.4 * (feet - hip)), CLOTH[p.bottom])
        paint(box(leg_x - 0.6 * leg_w, leg_x + 0.6 * leg_w, feet - shoe_h, feet), SHOES[p.shoes])
    if p.bottom_kind == 2:  # skirt, widening downwards
        flare = half * (1 + 0.3 * (ys - hip) / (0.55 * (feet - hip)))
        paint(
            (ys >= hip) & (ys < hip + 0.55 * (feet - hip)) & (np.abs(xs - cx) < flare),
            CLOTH[p.bottom],
        )

    # Torso, narrowing to the waist, with the top's pattern.
    waist = half * (1 - 0.15 * np.clip((ys - shoulder) / torso_h, 0, 1))
    torso = (ys >= shoulder) & (ys < hip + 0.02 * tall) & (np.abs(xs - cx) <= waist)
    band_y = np.floor((ys - shoulder) / period) % 2 == 1
    band_x = np.floor((xs - cx + 100 * period) / period) % 2 == 1
    second = {
        0: np.zeros_like(torso),
        1: band_y,
        2: band_x,
        3: band_x ^ band_y,
        4: box(
            cx - 0.45 * half, cx + 0.45 * half, shoulder + 0.2 * torso_h, shoulder + 0.6 * torso_h
        )
        if view == FRONT
        else np.zeros_like(torso),
    }[p.pattern]
    paint(torso & ~second, cloth)
    paint(torso & second, top2)

    # Bags over the torso.
    if p.bag == 1 and view == BACK:
        paint(
            box(
                cx - 0.6 * half, cx + 0.6 * half, shoulder + 0.1 * torso_h, shoulder + 0.8 * torso_h
            ),
            bag,
        )
    if p.bag == 1 and view == FRONT:
        strap = max(1.0, 0.12 * half)
        for sx in (cx - 0.45 * half, cx + 0.45 * half):
            paint(box(sx - strap / 2, sx + strap / 2, shoulder, shoulder + 0.6 * torso_h), bag)
    if p.bag == 2:
        side = 1 if view != BACK else -1
        x0 = cx + side * 0.95 * half
        paint(
            box(
                min(x0, x0 + side * 0.55 * half),
                max(x0, x0 + side * 0.55 * half),
                hip - 0.12 * tall,
                hip + 0.05 * tall,
            ),
            bag,
        )
        if view != SIDE:
            line = np.abs((xs - cx) - side * (ys - shoulder - 0.5 * torso_h) * half / torso_h) < 0.7
            paint(torso & line, bag)

    # Arms: sleeves in the top's colour, skin below short sleeves.
    arm_w = 0.28 * half if view != SIDE else 0.4 * half
    arm_xs = (
        (cx - half - arm_w / 2, cx + half + arm_w / 2)
        if view != SIDE
        else (cx + rng.uniform(-0.3, 0.3) * half,)
    )
    for ax in arm_xs:
        arm = box(ax - arm_w / 2, ax + arm_w / 2, shoulder + 0.02 * tall, hip + 0.08 * tall)
        paint(arm, cloth if p.long_sleeves else skin)
        if not p.long_sleeves:
            paint(arm & (ys < shoulder + 0.35 * torso_h), cloth)

    # Head: face or the back of the head, hair on top.
    head = ((xs - cx) / (0.8 * head_r)) ** 2 + ((ys - head_cy) / head_r) ** 2 <= 1
    paint(head, skin)
    if view == BACK:
        paint(head, hair)
    elif view == SIDE:
        paint(head & ((ys < head_cy - 0.1 * head_r) | (xs < cx - 0.2 * head_r)), hair)
    else:
        paint(head & (ys < head_cy - 0.3 * head_r), hair)
        if p.long_hair:
            for hx in (cx - 0.85 * head_r, cx + 0.85 * head_r):
                paint(
                    box(
                        hx - 0.25 * head_r,
                        hx + 0.25 * head_r,
                        head_cy - 0.3 * head_r,
                        shoulder + 0.1 * torso_h,
                    ),
                    hair,
                )
