"""Offline speaker diarization of a mixed (mono) recording, in numpy only.

Who spoke when, for recordings that do not come with one stream per participant:
speech detection → 1.6 s sliding windows → speaker embeddings → clustering →
smoothing → turns. The embeddings come from a ``SpeakerEmbedder``
(``speakers.embedding``): an ONNX model the operator configured, or by default
Resemblyzer's voice encoder
(Apache-2.0; a 3-layer LSTM over 40 mel bands, 256-d L2-normalised output), whose
weights ship inside the ``resemblyzer`` wheel from the package registry. We read
those weights without torch (a restricted unpickler maps the checkpoint's tensor
storages to numpy arrays) and run the same mel front end and LSTM in numpy, so the
``diarize`` extra needs neither torch nor librosa: ``pip install --no-deps
resemblyzer==0.1.4`` next to what postcall already installs.

Also here: ``der`` (diarization error rate with optimal speaker mapping and a
forgiveness collar) and ``read_rttm``, for tests and benchmarks.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from postcall.speakers import clustering
from postcall.speakers.embedding import (
    FRAME_HOP,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    Array,
    SpeakerEmbedder,
    load_embedder,
)
from postcall.speakers.encoder import highpass, volume_gain_of

HOP = FRAME_HOP  # samples per 10 ms frame
PARTIAL_FRAMES = WINDOW_FRAMES  # frames per sliding window (1.6 s)

log = logging.getLogger(__name__)

_VAD_WINDOW = 512  # Silero's window at 16 kHz (32 ms)
# ~64 s of audio per model call: memory stays bounded (~50 MB; whole 5-minute blocks
# take ~150 MB), and the state reset at block edges does not move regions measurably.
_VAD_BLOCK = 2000 * _VAD_WINDOW
_MARGIN = 4096  # samples of context on each side of a block for the high-pass filter


def speech_regions(
    audio: Array,
    *,
    threshold: float = 0.5,
    highpass_hz: float = 0.0,
    peak_dbfs: float | None = None,
    max_gain_db: float = 30.0,
    local_gain: bool = False,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
    pad_s: float = 0.1,
) -> list[tuple[float, float]]:
    """Speech as (start, end) seconds, from the Silero VAD that faster-whisper bundles.

    Hysteresis: speech starts where the probability reaches ``threshold`` and ends
    where it stays below ``threshold - 0.15`` for ``min_silence_s``. Runs the model on
    blocks of about a minute, so its memory does not grow with the audio's length.

    Far-field conditioning (see ``DiarizeOptions``): ``highpass_hz`` removes the
    low-frequency rumble first, and ``peak_dbfs`` raises the whole recording (by at
    most ``max_gain_db``, never lowering it) so that its loud 32 ms frames (95th
    percentile) reach that level: Silero was trained on close-talk levels and hears
    a distant, quiet voice as noise. With ``local_gain`` the gain is worked out per
    32 ms frame instead, from the loudest frame within ``_LOCAL_S`` of it: a quiet
    participant (a remote caller 25 dB below the near one) is raised as well, where a
    gain for the whole recording is set by the loud one.
    """
    from faster_whisper.vad import get_vad_model  # heavy (onnxruntime): load on use

    audio = np.asarray(audio, dtype=np.float32)
    model = get_vad_model()
    gain = np.float32(1.0)
    if peak_dbfs is not None and not local_gain:
        gain = np.float32(
            10 ** (_recording_gain_db(audio, highpass_hz, peak_dbfs, max_gain_db) / 20)
        )
    probs: list[npt.NDArray[np.float32]] = []
    for start, block in _blocks(audio, highpass_hz):
        del start
        block = np.pad(block, (0, -block.size % _VAD_WINDOW))
        if local_gain and peak_dbfs is not None:
            block = block * _local_gain(block, peak_dbfs, max_gain_db)
        else:
            block = block * gain
        probs.append(np.asarray(model(block), dtype=np.float32).reshape(-1))
    prob = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    return _hysteresis(
        prob,
        _VAD_WINDOW / SAMPLE_RATE,
        audio.size / SAMPLE_RATE,
        high=threshold,
        low=max(threshold - 0.15, 0.01),
        min_speech_s=min_speech_s,
        min_silence_s=min_silence_s,
        pad_s=pad_s,
    )


def _blocks(audio: Array, highpass_hz: float) -> Iterator[tuple[int, Array]]:
    """(start, samples) of consecutive ``_VAD_BLOCK`` blocks, high-passed when asked."""
    for start in range(0, audio.size, _VAD_BLOCK):
        stop = min(audio.size, start + _VAD_BLOCK)
        if highpass_hz <= 0:
            yield start, audio[start:stop]
            continue
        lo, hi = max(0, start - _MARGIN), min(audio.size, stop + _MARGIN)
        yield start, highpass(audio[lo:hi], highpass_hz)[start - lo : stop - lo]


_LOCAL_S = 0.5  # ``local_gain``: the loudest frame within this many seconds sets the gain


def _local_gain(block: Array, peak_dbfs: float, max_db: float) -> Array:
    """Per-sample gain for ``block`` (a whole number of VAD windows): each 32 ms frame
    raised (by at most ``max_db``, never lowered) so that the loudest frame within
    ``_LOCAL_S`` of it reaches ``peak_dbfs``."""
    n = block.size // _VAD_WINDOW
    frames = block.reshape(n, _VAD_WINDOW)
    level = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)
    reach = round(_LOCAL_S * SAMPLE_RATE / _VAD_WINDOW)
    padded = np.pad(level, reach, mode="edge")
    loud = np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1).max(axis=1)
    gain_db = np.clip(peak_dbfs - loud, 0.0, max_db)
    return np.repeat(10 ** (gain_db / 20), _VAD_WINDOW).astype(np.float32)


def _recording_gain_db(audio: Array, highpass_hz: float, peak_dbfs: float, max_db: float) -> float:
    """Gain in dB (0 to ``max_db``) that brings the loud frames to ``peak_dbfs``.

    Loud: the 95th percentile of the 32 ms frame levels, after the high-pass.
    """
    levels = []
    for _, block in _blocks(audio, highpass_hz):
        n = block.size // _VAD_WINDOW
        if n:
            frames = block[: n * _VAD_WINDOW].reshape(n, _VAD_WINDOW)
            power = np.mean(np.square(frames, dtype=np.float64), axis=1)
            levels.append(10 * np.log10(power + 1e-12))
    if not levels:
        return 0.0
    loud = float(np.percentile(np.concatenate(levels), 95))
    return float(np.clip(peak_dbfs - loud, 0.0, max_db))


def _hysteresis(
    score: npt.NDArray[np.float32],
    step_s: float,
    duration: float,
    *,
    high: float,
    low: float,
    min_speech_s: float,
    min_silence_s: float,
    pad_s: float,
) -> list[tuple[float, float]]:
    """Regions where ``score`` rises above ``high``, extended while it stays above ``low``."""
    regions: list[tuple[float, float]] = []
    active = False
    begin = 0
    for i, value in enumerate(score.tolist()):
        if not active and value >= high:
            active, begin = True, i
            # Extend backwards over the rising edge (the "low" hysteresis on the left).
            while begin > 0 and score[begin - 1] >= low:
                begin -= 1
        elif active and value < low:
            active = False
            regions.append((begin * step_s, i * step_s))
    if active:
        regions.append((begin * step_s, score.size * step_s))
    merged: list[tuple[float, float]] = []
    for start, end in regions:
        if merged and start - merged[-1][1] < min_silence_s:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return [
        (max(0.0, start - pad_s), min(duration, end + pad_s))
        for start, end in merged
        if end - start >= min_speech_s
    ]


def energy_regions(
    audio: Array,
    *,
    margin_db: float = 12.0,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.3,
    pad_s: float = 0.1,
) -> list[tuple[float, float]]:
    """Speech as (start, end) seconds from frame energy relative to the noise floor.

    The floor is the 10th percentile of 30 ms frame levels; frames more than
    ``margin_db`` above it count as speech (with a 6 dB hysteresis).
    """
    audio = np.asarray(audio, dtype=np.float32)
    step = 480
    n = audio.size // step
    if n == 0:
        return []
    power = np.mean(np.square(audio[: n * step].reshape(n, step), dtype=np.float64), axis=1)
    level = 10 * np.log10(power + 1e-10)
    level = np.convolve(level, np.ones(5) / 5, mode="same")  # 150 ms smoothing
    floor = float(np.percentile(level, 10))
    return _hysteresis(
        level.astype(np.float32),
        step / SAMPLE_RATE,
        audio.size / SAMPLE_RATE,
        high=floor + margin_db,
        low=floor + margin_db - 6.0,
        min_speech_s=min_speech_s,
        min_silence_s=min_silence_s,
        pad_s=pad_s,
    )


# ------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class Turn:
    """One speaker talking from ``start`` to ``end`` seconds; speakers count from 0."""

    start: float
    end: float
    speaker: int


@dataclass(frozen=True)
class DiarizeOptions:
    """Tuning of ``diarize``; the defaults are the values the benchmark was run with.

    ``threshold`` and the far-field conditioning were chosen on development mixes
    (bench/diarize.py's synthetic conversations, seeds 1-3, clean and through
    simulated rooms with rumble); the benchmark's own seeds and the AMI excerpts were
    not used to choose them. ``clustering="spectral"`` and ``vad_local_gain`` were
    chosen on bench/calls.py's development set (``--set dev``); its report set and
    the AMI excerpts were not used to choose them.
    """

    hop_s: float = 0.4  # between the 1.6 s windows (the encoder's partial utterances)
    # spectral: the count from the eigengap of a pruned affinity graph (NME-SC), no
    # threshold; ahc: average linkage cut where the merge distance reaches ``threshold``.
    clustering: Literal["spectral", "ahc"] = "spectral"
    # spectral: the estimate counts at most one speaker per this much speech (as window
    # hops), so that a few seconds of audio are not split into many voices.
    min_speaker_s: float = 2.0
    threshold: float = 0.3  # average-linkage cosine distance at which clusters stay apart
    max_cluster_windows: int = 2000  # more windows: cluster a subsample, assign the rest
    min_speaker_share: float = 0.05  # smaller clusters (share of windows) are dissolved
    min_turn_s: float = 0.5  # shorter runs of one label give way to their neighbours
    merge_gap_s: float = 0.5  # same-speaker turns this close become one
    vad: Literal["silero", "energy"] = "silero"  # energy: only for clean recordings
    # Far-field conditioning (distant microphones: quiet speech over low rumble).
    vad_threshold: float = 0.25  # Silero speech probability where a region starts
    vad_peak_dbfs: float | None = -20.0  # raise loud frames to this level before the VAD
    highpass_hz: float = 200.0  # rumble cut before the VAD and the embeddings (0: none)
    # The VAD gain per 32 ms frame (from the loudest frame within 0.5 s) rather than one
    # for the whole recording: a participant far quieter than the others is heard too.
    vad_local_gain: bool = True


def diarize(
    audio: Array,
    *,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    max_speakers: int = 8,
    speech: Sequence[tuple[float, float]] | None = None,
    options: DiarizeOptions | None = None,
    encoder: SpeakerEmbedder | None = None,
) -> list[Turn]:
    """Who speaks when in ``audio`` (16 kHz mono float32), as non-overlapping turns.

    ``num_speakers`` fixes the count; otherwise it is estimated between
    ``min_speakers`` and ``max_speakers``. ``speech`` gives the speech regions in
    seconds (e.g. from the transcriber) instead of detecting them. Speakers are
    numbered in order of first appearance. Overlapping speech gets one speaker.
    ``encoder`` makes the embeddings (default: the bundled Resemblyzer encoder).
    Raises ``ModelUnavailable`` when the resemblyzer weights are not installed.
    """
    if num_speakers is not None and num_speakers < 1:
        raise ValueError("num_speakers must be at least 1")
    if not 1 <= min_speakers <= max_speakers:
        raise ValueError("need 1 <= min_speakers <= max_speakers")
    opts = options or DiarizeOptions()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
    encoder = encoder or load_embedder()
    if speech is None:
        speech = (
            energy_regions(audio)
            if opts.vad == "energy"
            else speech_regions(
                audio,
                threshold=opts.vad_threshold,
                highpass_hz=opts.highpass_hz,
                peak_dbfs=opts.vad_peak_dbfs,
                local_gain=opts.vad_local_gain,
            )
        )
    spans = _sample_spans(speech, audio.size)
    if not spans:
        return []
    # Embeddings are computed on the speech alone, pauses cut out (as resemblyzer trims
    # long silences): windows then hold 1.6 s of voice, not of room noise.
    voiced = _Voiced(audio, spans)
    frame_n = -(-voiced.size // HOP)
    starts = _window_starts(frame_n, round(opts.hop_s * 100))
    embeddings = encoder.embed_windows(
        voiced, starts, highpass_hz=opts.highpass_hz, gain=voiced.gain(opts.highpass_hz)
    )
    if num_speakers is not None:
        low = high = num_speakers
    else:
        low, high = min_speakers, max_speakers
    centroids = _cluster(
        embeddings,
        low,
        high,
        opts.threshold,
        opts.max_cluster_windows,
        opts.min_speaker_share,
        spectral=opts.clustering == "spectral",
        min_windows=max(1, round(opts.min_speaker_s / opts.hop_s)),
    )
    labels = _frame_labels(embeddings, centroids, starts, frame_n)
    labels = _smooth(labels, round(opts.min_turn_s * 100))
    turns = _turns(labels, spans, opts.merge_gap_s)
    log.debug(
        "diarized %.1f s of speech in %d windows: %d speakers, %d turns",
        voiced.size / SAMPLE_RATE,
        starts.size,
        len({t.speaker for t in turns}),
        len(turns),
    )
    return turns


def _sample_spans(regions: Sequence[tuple[float, float]], size: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for start, end in sorted(regions):
        a = max(0, round(start * SAMPLE_RATE))
        b = min(size, round(end * SAMPLE_RATE))
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], b))
        elif b > a:
            spans.append((a, b))
    return spans


def _window_starts(frame_n: int, hop: int) -> npt.NDArray[np.int64]:
    """First frames of the windows: every ``hop`` frames, the last one flush with the end."""
    last = max(0, frame_n - PARTIAL_FRAMES)
    starts = np.arange(0, last + 1, max(1, hop), dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts


class _Voiced:
    """The speech of a recording with the pauses cut out, read piece by piece.

    Windows are placed on this "voiced" timeline; slices are copied out on demand,
    so the speech is never held twice.
    """

    def __init__(self, audio: Array, spans: list[tuple[int, int]]) -> None:
        self.audio = audio
        self.spans = spans
        lengths = np.array([b - a for a, b in spans], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(lengths)))
        self.size = int(self.offsets[-1])

    def __getitem__(self, window: slice) -> Array:
        lo, hi = max(0, window.start or 0), min(self.size, window.stop)
        if hi <= lo:
            return np.zeros(0, dtype=np.float32)
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        pieces = []
        for k in range(first, len(self.spans)):
            begin = int(self.offsets[k])
            if begin >= hi:
                break
            a = self.spans[k][0] + max(lo - begin, 0)
            b = self.spans[k][0] + min(hi - begin, self.spans[k][1] - self.spans[k][0])
            pieces.append(self.audio[a:b])
        return np.concatenate(pieces)

    def gain(self, highpass_hz: float = 0.0) -> float:
        """``volume_gain`` of the voiced audio (high-passed if asked), without assembling it."""
        if highpass_hz <= 0:
            energy = sum(float(np.dot(self.audio[a:b], self.audio[a:b])) for a, b in self.spans)
            return volume_gain_of(energy, self.size)
        energy, block = 0.0, 2**20
        for start in range(0, self.size, block):
            stop = min(self.size, start + block)
            lo, hi = max(0, start - _MARGIN), min(self.size, stop + _MARGIN)
            piece = highpass(self[lo:hi], highpass_hz)[start - lo : stop - lo]
            energy += float(np.dot(piece, piece))
        return volume_gain_of(energy, self.size)


def _cluster(
    embeddings: Array,
    low: int,
    high: int,
    threshold: float,
    max_windows: int,
    min_share: float = 0.0,
    *,
    spectral: bool = False,
    min_windows: int = 1,
) -> Array:
    """Speaker centroids (k, 256) by clustering the windows' embeddings.

    ``spectral``: spectral clustering, the count from the eigengap (``clustering``),
    within [low, high]. Otherwise average-linkage clustering on cosine distance, the
    number of clusters where the merge distance first reaches ``threshold``, clamped
    to [low, high]. Over ``max_windows`` windows, an evenly spaced subsample is
    clustered and the rest only assigned, which bounds memory and time to
    O(max_windows²) (O(max_windows³) for the spectral eigendecompositions).
    """
    n = embeddings.shape[0]
    sample = embeddings
    if n > max_windows:
        sample = embeddings[np.linspace(0, n - 1, max_windows).round().astype(np.int64)]
    if spectral:
        labels = clustering.spectral_labels(sample, low, high, min_windows=min_windows)
        k = int(labels.max()) + 1
    else:
        merges = _average_linkage(sample)
        k = 1 + sum(1 for _, _, distance in merges if distance >= threshold)
        k = min(max(k, low), high, sample.shape[0])
        labels = _cut(merges, sample.shape[0], k)
    sizes = np.bincount(labels, minlength=k)
    # Clusters of a few windows are mostly overlapped speech, laughter or noise, not a
    # participant: their windows go to the nearest larger cluster (down to ``low``).
    order = np.argsort(-sizes, kind="stable")
    keep = [c for i, c in enumerate(order) if i < low or sizes[c] >= min_share * labels.size]
    centroids = np.stack([sample[labels == c].mean(axis=0) for c in sorted(keep)])
    # Two spherical k-means steps over all windows (also those a subsample left out):
    # each centroid moves to the mean of the windows nearest to it, which undoes early
    # merges that average linkage can not take back.
    for _ in range(2):
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        assign = np.argmax(embeddings @ centroids.T, axis=1)
        for c in range(centroids.shape[0]):
            if np.any(assign == c):
                centroids[c] = embeddings[assign == c].mean(axis=0)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return centroids.astype(np.float32)


def _average_linkage(x: Array) -> list[tuple[int, int, float]]:
    """Average-linkage (UPGMA) merges of the rows of ``x`` by cosine distance.

    Returns n - 1 merges (kept, absorbed, distance) with non-decreasing distances.
    Keeps each row's nearest neighbour, so a merge usually costs O(n), not O(n²).
    """
    n = x.shape[0]
    if n < 2:
        return []
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    dist = 1.0 - (unit @ unit.T).astype(np.float64)
    np.fill_diagonal(dist, np.inf)
    size = np.ones(n)
    nearest = np.argmin(dist, axis=1)
    nearest_d = dist[np.arange(n), nearest]
    merges: list[tuple[int, int, float]] = []
    for _ in range(n - 1):
        i = int(np.argmin(nearest_d))
        j = int(nearest[i])
        merges.append((i, j, float(nearest_d[i])))
        row = (size[i] * dist[i] + size[j] * dist[j]) / (size[i] + size[j])
        row[i] = np.inf
        dist[i, :] = row
        dist[:, i] = row
        dist[j, :] = np.inf
        dist[:, j] = np.inf
        size[i] += size[j]
        nearest_d[j] = np.inf
        # Rows whose nearest neighbour was i or j look again; others may now prefer i.
        stale = np.flatnonzero(((nearest == i) | (nearest == j)) & np.isfinite(nearest_d))
        for r in [*stale.tolist(), i]:
            nearest[r] = int(np.argmin(dist[r]))
            nearest_d[r] = dist[r, nearest[r]]
        closer = np.flatnonzero(row < nearest_d)
        nearest[closer] = i
        nearest_d[closer] = row[closer]
    return merges


def _cut(merges: list[tuple[int, int, float]], n: int, k: int) -> npt.NDArray[np.int64]:
    """Cluster labels 0..k-1 after the first n - k merges."""
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for kept, absorbed, _ in merges[: n - k]:
        parent[root(absorbed)] = root(kept)
    roots = [root(a) for a in range(n)]
    ids = {r: c for c, r in enumerate(dict.fromkeys(roots))}
    return np.array([ids[r] for r in roots], dtype=np.int64)


def _frame_labels(
    embeddings: Array, centroids: Array, starts: npt.NDArray[np.int64], frame_n: int
) -> npt.NDArray[np.int64]:
    """A speaker per 10 ms frame: the centroid closest to the windows around it.

    Each window votes its cosine similarity to every centroid into the frames it
    covers, weighted by a Hann taper: a frame's label comes mostly from the windows
    centred near it, which places speaker changes more precisely than whole windows.
    """
    similarity = embeddings @ centroids.T
    taper = np.hanning(PARTIAL_FRAMES + 2)[1:-1].astype(np.float32)
    votes = np.zeros((frame_n + PARTIAL_FRAMES, centroids.shape[0]), dtype=np.float32)
    weight = np.zeros(frame_n + PARTIAL_FRAMES, dtype=np.float32)
    for start, sim in zip(starts.tolist(), similarity, strict=True):
        votes[start : start + PARTIAL_FRAMES] += taper[:, None] * sim[None, :]
        weight[start : start + PARTIAL_FRAMES] += taper
    mean = votes[:frame_n] / np.maximum(weight[:frame_n], np.float32(1e-6))[:, None]
    labels: npt.NDArray[np.int64] = np.argmax(mean, axis=1).astype(np.int64)
    return labels


def _runs(labels: npt.NDArray[np.int64]) -> Iterator[tuple[int, int, int]]:
    """(start, end, label) of each run of equal labels."""
    if not labels.size:
        return
    edges = np.flatnonzero(np.diff(labels)) + 1
    bounds = [0, *edges.tolist(), labels.size]
    for a, b in itertools.pairwise(bounds):
        yield a, b, int(labels[a])


def _smooth(labels: npt.NDArray[np.int64], min_frames: int) -> npt.NDArray[np.int64]:
    """Give runs shorter than ``min_frames`` to their longer neighbour, shortest first.

    Runs form a linked list and short ones wait in a heap: O(r log r) for r runs.
    """
    runs = list(_runs(labels))
    if len(runs) < 2:
        return labels
    start = [r[0] for r in runs]
    end = [r[1] for r in runs]
    label = [r[2] for r in runs]
    before = list(range(-1, len(runs) - 1))
    after = [*range(1, len(runs)), -1]
    alive = [True] * len(runs)
    heap = [(end[i] - start[i], i) for i in range(len(runs)) if end[i] - start[i] < min_frames]
    heapq.heapify(heap)
    while heap:
        length, i = heapq.heappop(heap)
        if not alive[i] or end[i] - start[i] != length:
            continue  # absorbed or grown since it was queued
        p, q = before[i], after[i]
        if p < 0 and q < 0:
            break
        longer_before = q < 0 or (p >= 0 and end[p] - start[p] >= end[q] - start[q])
        if longer_before:
            end[p] = end[i]
        else:
            start[q] = start[i]
        alive[i] = False
        _unlink(i, before, after)
        kept = p if longer_before else q
        if p >= 0 and q >= 0 and label[p] == label[q]:  # the neighbours now touch: join
            end[p] = end[q]
            alive[q] = False
            _unlink(q, before, after)
            kept = p
        if end[kept] - start[kept] < min_frames:
            heapq.heappush(heap, (end[kept] - start[kept], kept))
    out = labels.copy()
    for i in range(len(runs)):
        if alive[i]:
            out[start[i] : end[i]] = label[i]
    return out


def _unlink(i: int, before: list[int], after: list[int]) -> None:
    if before[i] >= 0:
        after[before[i]] = after[i]
    if after[i] >= 0:
        before[after[i]] = before[i]


def _turns(
    labels: npt.NDArray[np.int64], spans: list[tuple[int, int]], merge_gap_s: float
) -> list[Turn]:
    """Frame labels on the voiced timeline → turns on the recording's timeline."""
    raw: list[tuple[float, float, int]] = []
    offset = 0  # where the span starts on the voiced timeline, in samples
    for a, b in spans:
        length = b - a
        first, last = offset // HOP, (offset + length - 1) // HOP
        for r0, r1, label in _runs(labels[first : last + 1]):
            s0 = max(offset, (first + r0) * HOP) - offset + a
            s1 = min(offset + length, (first + r1) * HOP) - offset + a
            raw.append((s0 / SAMPLE_RATE, s1 / SAMPLE_RATE, label))
        offset += length
    merged: list[tuple[float, float, int]] = []
    for start, end, label in raw:
        if merged and merged[-1][2] == label and start - merged[-1][1] <= merge_gap_s:
            merged[-1] = (merged[-1][0], end, label)
        else:
            merged.append((start, end, label))
    order: dict[int, int] = {}
    for _, _, label in merged:
        order.setdefault(label, len(order))
    return [Turn(round(s, 3), round(e, 3), order[label]) for s, e, label in merged]
