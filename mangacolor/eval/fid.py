"""FID and KID between two sets of pages, with bootstrap intervals and a feature cache (paper §V).

The paper's Tables 1 and 3 are FIDs. `frechet_distance` is the published formula exactly
(docs/architecture.md § FID): ‖μ₁−μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr √(Σ₁Σ₂) in float64, scipy's `sqrtm`, 1e-6·I
added to both covariances when the root is not finite, imaginary diagonal above 1e-3 an error.
Below a few thousand pages FID is biased upwards, so every report also carries KID, the unbiased
squared MMD under the cubic polynomial kernel k(x, y) = (x·y/d + 1)³, averaged over random subsets.

Uncertainty: `bootstrap_ci` resamples *pages* with replacement and reports the 2.5/97.5 percentiles
of the metric over the replicates. By default both sets are resampled, because both are finite
samples of what they stand for (a model's outputs and the real pages); `resample="b"` resamples only
the second (generated) set, which is the right spread when several models are compared against one
fixed reference set. A page drawn twice is one page: KID replicates leave pairs of the same page out
of the U-statistic (duplicates would otherwise add k(x, x) terms and bias KID upwards); FID
replicates weight it twice, as the with-replacement bootstrap does. FID itself is biased upwards by
roughly 1/n and a replicate only holds about 63% distinct pages, so FID intervals sit above the point
estimate for small sets; they show spread, not a bias correction. FID replicates use an exact,
faster form of Tr √(Σ₁Σ₂) (the nuclear norm of the centred feature cross-product, see
`trace_sqrt_product`) so a hundred replicates do not take a hundred 2048² `sqrtm`s.

`FeatureExtractor` turns images into features in batches and keeps a content-addressed cache:
key = sha256(image bytes or array bytes, extractor description, resize), one `.npy` per image under
a local folder or any fsspec URL, so re-evaluating a model recomputes only images it has not seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import torch
from scipy import linalg

from mangacolor.eval.inception import RESIZES, build_inception, prepare_images
from mangacolor.io.store import Store

FID_EPS = 1e-6
IMAGINARY_TOLERANCE = 1e-3
KID_GRAM_MAX_PAGES = 2048  # per side; above it KID works subset by subset instead of on full Gram matrices


# --- Fréchet distance ---------------------------------------------------------------------------


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples, N−1 normalisation) in float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need an NxD feature array with N >= 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = FID_EPS) -> float:
    """‖μ₁−μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr √(Σ₁Σ₂), exactly as the reference implementation computes it."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature statistics disagree: means {mu1.shape} vs {mu2.shape}, covariances {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # Singular products are the normal case for small sets; finiteness is checked below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        worst = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if worst > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"sqrt(Sigma1 Sigma2) has an imaginary diagonal component of {worst:.3g} (> {IMAGINARY_TOLERANCE}): "
                "the covariances are numerically broken (NaN/inf features or far too few samples)"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


FID_METHODS = ("sqrtm", "eig")


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray, method: str = "sqrtm") -> float:
    """FID of two feature sets. "sqrtm": the reference computation (`frechet_distance`); "eig": the
    same quantity through `trace_sqrt_product`, tens of times faster on 2048-d features and equal to
    the reference to about 1e-6 relative whenever the reference's square root is finite.
    """
    if method == "sqrtm":
        return frechet_distance(*feature_stats(feats_a), *feature_stats(feats_b))
    if method == "eig":
        feats_a, feats_b = np.asarray(feats_a), np.asarray(feats_b)
        return fid_weighted(feats_a, feats_b, np.ones(len(feats_a), np.int64), np.ones(len(feats_b), np.int64))
    raise ValueError(f"FID method must be one of {FID_METHODS}, got {method!r}")


def _weighted_centred(feats: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of sqrt(count)·(x − μ) for drawn pages, their mean and the number of draws.

    AᵀA/(n−1) is then exactly the covariance of the resampled set, without materialising it.
    """
    keep = counts > 0
    x, c = feats[keep], counts[keep].astype(np.float64)
    n = int(c.sum())
    mu = (c[:, None] * x).sum(axis=0) / n
    return np.sqrt(c)[:, None] * (x - mu), mu, n


def trace_sqrt_product(a_rows: np.ndarray, n_a: int, b_rows: np.ndarray, n_b: int) -> float:
    """Tr √(Σ₁Σ₂) for Σ₁ = AᵀA/(n_a−1), Σ₂ = BᵀB/(n_b−1), without a matrix square root.

    The non-zero eigenvalues of AᵀA·BᵀB are those of M·Mᵀ with M = ABᵀ (its squared singular
    values), so the trace of the root is the sum of M's singular values; a symmetric eigensolver on
    the smaller of MMᵀ, MᵀM is several times faster than an SVD. With more rows than feature
    dimensions the same trace comes from the symmetric form Σ₁^½ Σ₂ Σ₁^½ instead.
    """
    scale = math.sqrt((n_a - 1) * (n_b - 1))
    d = a_rows.shape[1]
    if a_rows.shape[0] * b_rows.shape[0] <= 2 * d * d:
        m = a_rows @ b_rows.T
        eig = np.linalg.eigvalsh(m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m)
    else:
        w, v = np.linalg.eigh(a_rows.T @ a_rows)
        root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        eig = np.linalg.eigvalsh(root1 @ (b_rows.T @ b_rows) @ root1)
    return float(np.sqrt(np.clip(eig, 0, None)).sum() / scale)


def fid_weighted(feats_a: np.ndarray, feats_b: np.ndarray, counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """FID of the sets in which page i of A appears counts_a[i] times (and likewise for B); exact, no eps."""
    a_rows, mu_a, n_a = _weighted_centred(np.asarray(feats_a, np.float64), counts_a)
    b_rows, mu_b, n_b = _weighted_centred(np.asarray(feats_b, np.float64), counts_b)
    diff = mu_a - mu_b
    tr_a = float((a_rows**2).sum() / (n_a - 1))
    tr_b = float((b_rows**2).sum() / (n_b - 1))
    return float(diff @ diff + tr_a + tr_b - 2.0 * trace_sqrt_product(a_rows, n_a, b_rows, n_b))


# --- KID ----------------------------------------------------------------------------------------


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x·y/d + 1)³, the KID kernel."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = kxx.shape[0], kyy.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(
    feats1: np.ndarray, feats2: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Unbiased KID: mean and std of the squared MMD over `subsets` random subsets of each set.

    Each subset draws `subset_size` pages without replacement from each side (capped at the
    smaller set), so each subset's estimate is unbiased and their mean is too.
    """
    x_all, y_all = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    m = min(subset_size, len(x_all), len(y_all))
    if m < 2:
        raise ValueError(f"KID needs at least 2 pages per set, got {len(x_all)} and {len(y_all)}")
    rng = np.random.default_rng(seed)
    grams = _Grams(x_all, y_all) if max(len(x_all), len(y_all)) <= KID_GRAM_MAX_PAGES else None
    values = np.empty(subsets)
    for s in range(subsets):
        ia = rng.choice(len(x_all), m, replace=False)
        ib = rng.choice(len(y_all), m, replace=False)
        if grams is not None:
            values[s] = _mmd2_unbiased(grams.aa[np.ix_(ia, ia)], grams.bb[np.ix_(ib, ib)], grams.ab[np.ix_(ia, ib)])
        else:
            x, y = x_all[ia], y_all[ib]
            values[s] = _mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    return float(values.mean()), float(values.std())


class _Grams:
    """Kernel matrices of two feature sets, computed once for many subsets or bootstrap replicates."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.aa, self.bb, self.ab = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)

    def mmd2_weighted(self, ca: np.ndarray, cb: np.ndarray) -> float:
        """Unbiased MMD² of the resampled sets, counting pairs of *distinct* pages only."""
        ca, cb = ca.astype(np.float64), cb.astype(np.float64)

        def within(k: np.ndarray, c: np.ndarray) -> float:
            same_page = (c**2) @ np.diagonal(k)
            pairs = c.sum() ** 2 - (c**2).sum()
            # Every draw the same page (likely only for 2-3 page sets): no distinct pair to average.
            return float((c @ k @ c - same_page) / pairs) if pairs > 0 else math.nan

        return within(self.aa, ca) + within(self.bb, cb) - 2.0 * float(ca @ self.ab @ cb / (ca.sum() * cb.sum()))


# --- bootstrap ----------------------------------------------------------------------------------


def bootstrap_ci(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    metric: str | Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float] = "fid",
    n_boot: int = 100,
    seed: int = 0,
    resample: str = "both",
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval over pages (see the module docstring for what it means).

    `metric`: "fid", "kid" (full-set unbiased MMD²) or a callable (feats_a, feats_b, counts_a,
    counts_b) -> float, where counts say how often each page was drawn. `resample`: "both" or "b".
    """
    if resample not in ("both", "b"):
        raise ValueError(f"resample must be 'both' or 'b', got {resample!r}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    n_a, n_b = len(feats_a), len(feats_b)
    if metric == "fid":
        fn = fid_weighted
    elif metric == "kid":
        if max(n_a, n_b) > KID_GRAM_MAX_PAGES:
            raise ValueError(
                f"KID bootstrap holds full Gram matrices; at most {KID_GRAM_MAX_PAGES} pages per side, got {n_a}/{n_b} "
                "(subsample the features first, as compute_fid_kid does)"
            )
        grams = _Grams(feats_a, feats_b)

        def fn(_a, _b, ca, cb):
            return grams.mmd2_weighted(ca, cb)
    elif callable(metric):
        fn = metric
    else:
        raise ValueError(f"metric must be 'fid', 'kid' or a callable, got {metric!r}")
    rng = np.random.default_rng(seed)
    ones_a = np.ones(n_a, dtype=np.int64)
    values = np.empty(n_boot)
    for i in range(n_boot):
        ca = rng.multinomial(n_a, np.full(n_a, 1.0 / n_a)) if resample == "both" else ones_a
        cb = rng.multinomial(n_b, np.full(n_b, 1.0 / n_b))
        values[i] = fn(feats_a, feats_b, ca, cb)
    tail = (1.0 - level) / 2.0 * 100.0
    if np.isnan(values).all():
        return math.nan, math.nan
    lo, hi = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


# --- features with a cache ----------------------------------------------------------------------

ImageLike = np.ndarray | bytes | str | Path


def image_digest(image: ImageLike) -> tuple[str, bytes | None]:
    """sha256 of an image's content and, for files and bytes, the bytes (to decode without rereading).

    Encoded images are hashed as their bytes; arrays as dtype, shape and pixel bytes.
    """
    if isinstance(image, np.ndarray):
        arr = np.ascontiguousarray(image)
        h = hashlib.sha256(f"array|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(memoryview(arr).cast("B"))
        return h.hexdigest(), None
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif isinstance(image, (str, Path)):
        with fsspec.open(str(image), "rb") as f:
            data = f.read()
    else:
        raise TypeError(f"images must be numpy arrays, encoded bytes or paths/URLs, got {type(image).__name__}")
    return hashlib.sha256(data).hexdigest(), data


class FeatureCache:
    """Feature vectors by content key, one `.npy` per image under a local folder or fsspec URL."""

    def __init__(self, root: str | Path, storage_options: dict | None = None):
        self.store = Store(root, storage_options)

    def _path(self, key: str) -> str:
        return self.store.path(key[:2], f"{key}.npy")

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        paths = {self._path(k): k for k in keys}
        # One call for the whole chunk: concurrent requests on object stores, plain reads locally.
        found = self.store.fs.cat(list(paths), on_error="omit")
        out = {}
        for path, data in found.items():
            key = paths.get(path) or paths.get(self.store.fs._strip_protocol(path))
            if key is None or not isinstance(data, bytes):
                continue
            try:
                out[key] = np.load(io.BytesIO(data), allow_pickle=False)
            except (ValueError, OSError, EOFError):
                continue  # an unreadable entry is a miss: it is recomputed and overwritten
        return out

    def put(self, key: str, value: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(value), allow_pickle=False)
        self.store.write_bytes(self._path(key), buf.getvalue())


class FeatureExtractor:
    """Images -> feature rows (N x D float32), in batches, through an optional content-addressed cache.

    `network` maps Nx3x299x299 in [-1, 1] to NxD and should carry `.description` and `.random_init`
    (build_inception sets both); default: the FID Inception with weights found by `locate_weights`.
    Images are uint8 / [0, 1] float arrays, encoded image bytes, or paths / fsspec URLs of image files.
    `n_computed` and `n_cached` count images since construction, for reports.
    """

    def __init__(
        self,
        network: torch.nn.Module | None = None,
        *,
        resize: str = "bilinear-torch",
        batch_size: int = 8,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
        cache_dir: str | Path | None = None,
        storage_options: dict | None = None,
        progress: Callable[[str], None] | None = None,
        lookup_chunk: int = 256,
    ):
        if resize not in RESIZES:
            raise ValueError(f"unknown resize {resize!r}; choose one of {', '.join(RESIZES)}")
        self.device = torch.device(device)
        self.network = (network if network is not None else build_inception("auto")).to(self.device).eval()
        self.description = str(getattr(self.network, "description", type(self.network).__name__))
        self.random_init = bool(getattr(self.network, "random_init", False))
        self.resize = resize
        self.batch_size = batch_size
        self.amp_dtype = amp_dtype
        self.cache = FeatureCache(cache_dir, storage_options) if cache_dir is not None else None
        self.progress = progress
        self.lookup_chunk = max(lookup_chunk, batch_size)
        self.n_computed = 0
        self.n_cached = 0

    def cache_key(self, digest: str) -> str:
        precision = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32"
        return hashlib.sha256(f"{digest}|{self.description}|{self.resize}|{precision}".encode()).hexdigest()

    @torch.no_grad()
    def _forward(self, images: list[np.ndarray]) -> np.ndarray:
        x = prepare_images(images, self.resize, self.device)
        ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        with ctx:
            feats = self.network(x)
        return feats.float().cpu().numpy()

    def __call__(self, images: Iterable[ImageLike]) -> np.ndarray:
        images = list(images)
        total = len(images)
        rows: list[np.ndarray | None] = [None] * total
        for start in range(0, total, self.lookup_chunk):
            chunk = range(start, min(start + self.lookup_chunk, total))
            digests = {i: image_digest(images[i]) for i in chunk}
            keys = {i: self.cache_key(digests[i][0]) for i in chunk}
            hits = self.cache.get_many(list(keys.values())) if self.cache is not None else {}
            missing = []
            for i in chunk:
                if keys[i] in hits:
                    rows[i] = hits[keys[i]]
                    self.n_cached += 1
                else:
                    missing.append(i)
            for b in range(0, len(missing), self.batch_size):
                batch = missing[b : b + self.batch_size]
                feats = self._forward([_decode(images[i], digests[i][1]) for i in batch])
                for i, f in zip(batch, feats):
                    rows[i] = f
                    if self.cache is not None:
                        self.cache.put(keys[i], f)
                self.n_computed += len(batch)
                if self.progress is not None:
                    done = chunk.start + len(chunk) - len(missing) + b + len(batch)
                    self.progress(f"features: {done}/{total} images ({len(chunk) - len(missing)} of this chunk cached)")
        if total == 0:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)


def _decode(image: ImageLike, data: bytes | None) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    from mangacolor.io.images import read_image

    return read_image(data, mode="RGB")


# --- report -------------------------------------------------------------------------------------


@dataclass
class MetricReport:
    """FID and KID of set B (generated) against set A (reference), with what they were computed with."""

    fid: float
    fid_ci: tuple[float, float] | None
    kid_mean: float
    kid_std: float
    kid_ci: tuple[float, float] | None
    n_a: int
    n_b: int
    resize: str
    feature_extractor: str
    random_init: bool
    n_boot: int = 0
    resample: str = "both"
    fid_method: str = "sqrtm"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        def ci(v):
            return "—" if v is None else f"[{v[0]:.3g}, {v[1]:.3g}]"

        lines = [
            "| metric | value | 95% bootstrap interval |",
            "| --- | --- | --- |",
            f"| FID | {self.fid:.3f} | {ci(self.fid_ci)} |",
            f"| KID ×10³ | {self.kid_mean * 1e3:.3f} ± {self.kid_std * 1e3:.3f} | "
            f"{ci(None if self.kid_ci is None else (self.kid_ci[0] * 1e3, self.kid_ci[1] * 1e3))} |",
            "",
            f"- pages: {self.n_a} reference, {self.n_b} generated",
            f"- features: {self.feature_extractor}; resize: {self.resize}",
            f"- FID square root: {'scipy sqrtm (reference)' if self.fid_method == 'sqrtm' else 'eigenvalue form (same quantity, ~1e-6 relative)'}",
        ]
        if self.n_boot:
            side = "both sets" if self.resample == "both" else "the generated set only"
            lines.append(f"- intervals: {self.n_boot} page-bootstrap replicates resampling {side}")
        if self.random_init:
            lines.append("- **random-init Inception: not comparable to published FID**")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def metric_report(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    *,
    feature_extractor: str,
    resize: str,
    random_init: bool,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    n_boot: int = 100,
    resample: str = "both",
    seed: int = 0,
    fid_method: str = "sqrtm",
) -> MetricReport:
    """FID, KID and their intervals from features already computed."""
    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    n_a, n_b = len(feats_a), len(feats_b)
    notes = []
    if min(n_a, n_b) < 2000:
        notes.append(f"FID on {min(n_a, n_b)} pages is biased upwards (it needs thousands); compare models by KID")
    fid = fid_from_features(feats_a, feats_b, fid_method)
    kid_mean, kid_std = kid(feats_a, feats_b, kid_subsets, kid_subset_size, seed)
    fid_ci = kid_ci = None
    if n_boot:
        fid_ci = bootstrap_ci(feats_a, feats_b, "fid", n_boot, seed, resample)
        rng = np.random.default_rng(seed)
        sub_a, sub_b = feats_a, feats_b
        if n_a > KID_GRAM_MAX_PAGES:
            sub_a = feats_a[rng.choice(n_a, KID_GRAM_MAX_PAGES, replace=False)]
        if n_b > KID_GRAM_MAX_PAGES:
            sub_b = feats_b[rng.choice(n_b, KID_GRAM_MAX_PAGES, replace=False)]
        if len(sub_a) < n_a or len(sub_b) < n_b:
            notes.append(f"KID interval from a random {len(sub_a)}/{len(sub_b)}-page subsample of each set")
        kid_ci = bootstrap_ci(sub_a, sub_b, "kid", n_boot, seed, resample)
    return MetricReport(
        fid=fid,
        fid_ci=fid_ci,
        kid_mean=kid_mean,
        kid_std=kid_std,
        kid_ci=kid_ci,
        n_a=n_a,
        n_b=n_b,
        resize=resize,
        feature_extractor=feature_extractor,
        random_init=random_init,
        n_boot=n_boot,
        resample=resample,
        fid_method=fid_method,
        notes=notes,
    )


def compute_fid_kid(
    images_a: Iterable[ImageLike],
    images_b: Iterable[ImageLike],
    extractor: FeatureExtractor,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    n_boot: int = 100,
    resample: str = "both",
    seed: int = 0,
    fid_method: str = "sqrtm",
) -> MetricReport:
    """FID and KID of generated pages `images_b` against reference pages `images_a`.

    `fid_method="eig"` avoids the reference's 2048² `sqrtm` (minutes on a 2-core CPU); see
    `fid_from_features`. Features of pages already in the extractor's cache are not recomputed.
    """
    return metric_report(
        extractor(images_a),
        extractor(images_b),
        feature_extractor=extractor.description,
        resize=extractor.resize,
        random_init=extractor.random_init,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        n_boot=n_boot,
        resample=resample,
        seed=seed,
        fid_method=fid_method,
    )
