"""Official COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D).

Thin, defensive wrapper around ``pycocoevalcap`` (the pip package of the
coco-caption evaluation code).  Captions are first run through the Stanford
PTB tokenizer (Java) exactly as the COCO server does, then scored by Bleu(4),
Meteor 1.5 (Java), Rouge-L and Cider (which in coco-caption is CIDEr-D).
SPICE is not computed: it needs a separate Stanford CoreNLP download.

``caption_metrics`` is the one-shot entry point.  :class:`CaptionScorer`
keeps the METEOR JVM alive across several calls (it takes a few seconds to
start because it loads a paraphrase table) and must be closed afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Hashable

__all__ = ["METRIC_KEYS", "CaptionScorer", "caption_metrics", "java_available"]

METRIC_KEYS: tuple[str, ...] = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")

JAVA_MISSING_MESSAGE = (
    "METEOR and the PTB tokenizer need a Java runtime, but 'java' is not on PATH: "
    "apt-get install default-jre-headless"
)

# NOTE: the Java PTBTokenizer runs with -preserveLines and treats \r, \u2028
# etc. as line breaks too; pycocoevalcap only replaces "\n", so any of these
# would silently shift every later caption onto the wrong image.
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# The tokenizer's progress line on stderr ("PTBTokenizer tokenized 61 tokens at ...").
_PTB_NOISE = re.compile(r"^PTBTokenizer tokenized \d+ tokens")


def java_available() -> bool:
    """True when a ``java`` executable is on PATH (pycocoevalcap runs ``java`` by name)."""
    return shutil.which("java") is not None


def _require_java() -> None:
    if not java_available():
        raise RuntimeError(JAVA_MISSING_MESSAGE)


def _preview(ids: set[Hashable], limit: int = 5) -> str:
    shown = sorted(ids, key=repr)[:limit]
    more = f" ... ({len(ids)} in all)" if len(ids) > limit else ""
    return ", ".join(repr(i) for i in shown) + more


def _validate(
    references: Mapping[Hashable, Sequence[str]], hypotheses: Mapping[Hashable, str]
) -> None:
    if not isinstance(references, Mapping) or not isinstance(hypotheses, Mapping):
        raise TypeError("references and hypotheses must be mappings keyed by image id")
    ref_ids, hyp_ids = set(references), set(hypotheses)
    if ref_ids != hyp_ids:
        parts = []
        if ref_ids - hyp_ids:
            parts.append(f"no hypothesis for {_preview(ref_ids - hyp_ids)}")
        if hyp_ids - ref_ids:
            parts.append(f"no references for {_preview(hyp_ids - ref_ids)}")
        raise ValueError("references and hypotheses have different image ids: " + "; ".join(parts))
    if not ref_ids:
        raise ValueError("need at least one image to score")
    for key, refs in references.items():
        # NOTE: a bare string is a Sequence[str] too; scoring its characters
        # as references would give plausible-looking garbage.
        if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) == 0:
            raise ValueError(f"references[{key!r}] must be a non-empty list of strings")
        for r in refs:
            if not isinstance(r, str) or not r.strip():
                raise ValueError(f"references[{key!r}] contains an empty or non-string reference: {r!r}")
    for key, hyp in hypotheses.items():
        if not isinstance(hyp, str):
            raise ValueError(f"hypotheses[{key!r}] must be a string, got {type(hyp).__name__}")


@contextmanager
def _quiet_java_stderr() -> Iterator[None]:
    """Swallow the tokenizer's progress line on file descriptor 2.

    The JVM inherits fd 2 directly, so ``contextlib.redirect_stderr`` cannot
    catch it.  Everything else written there meanwhile is passed on to
    ``sys.stderr`` afterwards, so Java errors stay visible.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (e.g. a daemon): nothing to silence
        yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines() if line and not _PTB_NOISE.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def _tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """PTB-tokenize ``{id: [caption, ...]}``, checking that nothing got misaligned."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    payload = {
        key: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in caps] for key, caps in captions.items()
    }
    with _quiet_java_stderr():
        tokenized = PTBTokenizer().tokenize(payload)
    # NOTE: pycocoevalcap zips output lines with ids without checking the
    # count; a short output (tokenizer crash) would silently drop images.
    for key, caps in captions.items():
        got = tokenized.get(key)
        if got is None or len(got) != len(caps):
            raise RuntimeError(
                f"PTB tokenizer output does not line up with its input (image {key!r}); "
                "see the Java messages above"
            )
    return tokenized


def _close_meteor(meteor: Any) -> None:
    """Stop a pycocoevalcap ``Meteor`` JVM and leave its ``__del__`` harmless."""
    proc = meteor.meteor_p
    # NOTE: Meteor.compute_score does lock.acquire() ... lock.release() with no
    # try/finally, so an exception inside it leaves the lock held and its
    # __del__ (which acquires the same lock) would then hang the garbage
    # collector forever.  CaptionScorer serialises calls, so a held lock here
    # can only be such a leftover.
    if meteor.lock.locked():
        meteor.lock.release()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


class CaptionScorer:
    """Scores caption sets, reusing one METEOR JVM; use as a context manager.

    >>> with CaptionScorer() as scorer:            # doctest: +SKIP
    ...     val = scorer.score(refs, hyps)
    """

    def __init__(self) -> None:
        _require_java()
        self._meteor: Any = None
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # NOTE: never raise from a finaliser
            pass

    def close(self) -> None:
        """Stop the METEOR JVM (idempotent)."""
        with self._lock:
            self._closed = True
            meteor, self._meteor = self._meteor, None
            if meteor is not None:
                _close_meteor(meteor)

    def _meteor_score(self, gts: dict[Hashable, list[str]], res: dict[Hashable, list[str]]) -> float:
        from pycocoevalcap.meteor.meteor import Meteor

        if self._meteor is None:
            self._meteor = Meteor()
        # NOTE: " ||| " separates fields in METEOR's stdin protocol; pycocoevalcap
        # strips it from hypotheses only, so do the references here.
        gts = {k: [r.replace("|||", " ") for r in refs] for k, refs in gts.items()}
        try:
            score, _ = self._meteor.compute_score(gts, res)
        except (ValueError, OSError) as exc:
            # A dead JVM shows up as float(b'') or a broken pipe.
            meteor, self._meteor = self._meteor, None
            proc = meteor.meteor_p
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            try:
                detail = proc.stderr.read()[-2000:].decode("utf-8", errors="replace").strip()
            except (OSError, ValueError):
                detail = ""
            _close_meteor(meteor)
            raise RuntimeError(f"METEOR (Java) failed: {exc!r}; Java said: {detail or '(nothing)'}") from exc
        return float(score)

    def score(
        self,
        references: Mapping[Hashable, Sequence[str]],
        hypotheses: Mapping[Hashable, str],
    ) -> dict[str, float]:
        """Corpus-level metrics; see :func:`caption_metrics`."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        _validate(references, hypotheses)
        _require_java()
        with self._lock:
            if self._closed:
                raise RuntimeError("CaptionScorer is closed")
            ids = list(references)
            gts = _tokenize({k: list(references[k]) for k in ids})
            res = _tokenize({k: [hypotheses[k]] for k in ids})
            if not any(r for refs in gts.values() for r in refs):
                # NOTE: Cider would die on max() of an empty document-frequency table.
                raise ValueError("every reference is empty after PTB tokenization")

            # verbose=0: Bleu otherwise prints its internal counts to stdout.
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            rouge, _ = Rouge().compute_score(gts, res)
            cider, _ = Cider().compute_score(gts, res)
            meteor = self._meteor_score(gts, res)

        values = [*(float(b) for b in bleu), meteor, float(rouge), float(cider)]
        return dict(zip(METRIC_KEYS, values))


def caption_metrics(
    references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]
) -> dict[str, float]:
    """Score generated captions against references with the COCO metrics.

    ``references`` maps image id -> reference sentences (raw text; they are
    PTB-tokenized and lower-cased here), ``hypotheses`` maps the same ids ->
    one generated sentence (may be empty).  Returns corpus-level scores under
    the keys bleu1 bleu2 bleu3 bleu4 meteor rouge_l cider: BLEU, METEOR and
    ROUGE-L on the raw 0..1 scale, CIDEr(-D) as pycocoevalcap gives it
    (about 0..10; 1.0 is roughly a good model on COCO).

    Raises ``ValueError`` when the id sets differ or are empty and
    ``RuntimeError`` when Java is missing.  The METEOR JVM started here is
    shut down before returning.

    CIDEr's IDF weights come from the references being scored, so it is only
    meaningful over a reasonably large set of images.
    """
    # NOTE: for a single image every IDF weight is log(1) - log(1) = 0, so
    # CIDEr is 0 whatever the caption (likewise for n-grams present in every
    # image's references).
    with CaptionScorer() as scorer:
        return scorer.score(references, hypotheses)
