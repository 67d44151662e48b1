"""The one caption tokenizer: the official COCO evaluation's PTB rule, in Python.

The official metrics (``train/metrics.py``, pycocoevalcap) run every caption through Stanford
CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` (Java) and then drop the tokens in
pycocoevalcap's ``PUNCTUATIONS`` list. :func:`tokenize` reproduces that pipeline without Java,
so the vocabulary, the training targets, the quick validation BLEU and the official test
references all see the same words. The rule, as the official path applies it:

* lower case (after tokenizing; unicode letters, digits and accents are kept as they are);
* clitics split off: ``man's`` -> ``man 's``, ``don't`` -> ``do n't``, ``can't`` -> ``ca n't``,
  ``they're``/``I've``/``we'll``/``he'd``/``I'm`` likewise; ``cannot`` -> ``can not``,
  ``gonna``/``wanna``/``gotta``/``lemme``/``gimme`` -> ``gon na`` ...; the typographic
  apostrophe ``’`` counts as ``'``; a possessive plural's apostrophe (``dogs'``) is dropped;
  ``o'clock``, ``ma'am``, ``o'neil``, ``'n'``, ``'90s``, ``y'`` (of ``y'all``) stay whole;
* hyphenated words and numbers stay one token (``t-shirt``, ``3-year-old``, ``10-20``), as do
  numbers with ``.``/``,``/``:`` inside (``3.5``, ``1,000``, ``10:30``), ``a/b`` and ``1/2``;
* abbreviations keep their period (``st.``, ``mr.``, ``dr.``, ``u.s.``, ``p.m.``, ``etc.``,
  ``vs.``, a single letter before a space: ``j. r. smith``); any other word-final period goes;
* punctuation tokens are dropped: ``. , ; : ? ! ...`` quotes of every kind, ``-`` ``--`` and
  dashes (``—``, ``–``); NOTE: not ``!!!`` or ``?!`` (the official list has only single ``?``/``!``);
* brackets become PTB's ``-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-`` and are KEPT: the official
  list names ``-LRB-`` in upper case but sees lower-cased tokens, so only its literal match
  would drop them. We keep them so a model can reproduce its references exactly;
* ``$ % & # + = * / ~ ^ | \\ @`` and other symbols (``©``, ``°``, ``♥``) are tokens of their
  own (``$5`` -> ``$ 5``, ``50%`` -> ``50 %``); ``£`` -> ``#``, ``€`` -> ``$``, ``¢`` -> ``cents``,
  ``½`` -> ``1/2``; ``AT&T``-style capitals joined by ``&`` stay one token;
* characters outside Unicode's Basic Multilingual Plane (emoji) are dropped, as the Java
  tokenizer (UTF-16, JFlex 1.4) deletes them as untokenizable.

Checked against the Java tokenizer in ``tests/sat/test_tokenizer.py``: 830 tricky captions
(``tests/fixtures/tricky_captions.json``) and every BMP character, all equal. Known limits:

* the one case where Java looks past the caption: a single letter + ``.`` ending a caption
  (``plan b.``) keeps its period there unless the NEXT caption of the batch starts with a
  capitalised word. We take that usual case (dataset captions start with ``A ...``): ``b``.
* tokens whose rule needs upper case (``AT&T``, ``US$``) or an apostrophe-initial form
  (``'t is``, ``y' all``) re-tokenize differently once lower-cased; this only matters if a model
  emits them as a hypothesis.
"""
from __future__ import annotations

import functools
import re

from .ptb_chars import SYMBOL_CHARS, WORD_CHARS

__all__ = ["PUNCTUATIONS", "tokenize"]

PUNCTUATIONS: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"])
"""pycocoevalcap's list (tokenizer/ptbtokenizer.py), compared with the LOWER-CASED tokens."""


_WS = re.compile("[\\s\u00a0\u2000-\u200f\u2028\u2029\u3000\ufeff]+")
_APOS = "['\u0092\u2019]"
_APOSETC = "['`\u0092\u2019\u0091\u2018\u201b]"
_LATEX_QUOTES = [("[\u0091\u2018\u201b\u2039]", "`"), ("[\u0092\u2019\u203a]", "'"),
                 ('[\u0093\u201c\u00ab]', "``"), ('[\u0094\u201d\u00bb]', "''"), ('"', "''")]
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$", "\u0080": "$"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}

# Abbreviations that keep their period (CoreNLP 3.4.1's lists, restricted to what captions use).
_ABBREV1 = ("jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|thurs|fri|"
            "ala|ariz|ark|calif|colo|conn|dak|del|fla|ga|ill|ind|kans?|ky|la|mass|md|mich|minn|miss|mo|"
            "mont|neb|nev|okla|ore|pa|penn|tenn|tex|va|vt|wash|wisc?|wyo|inc|cos?|corp|pp?tys?|ltd|plc|"
            "bancorp|dept|bhd|assn|univ|intl|sys|prop|ed\\.d|ph\\.d|ph|tel|est|ext|sq|ft|jr|sr|bros|"
            "blvd|rd|esq|etc|al|seq|bldg")
_ABTITLE = ("mr|mrs|ms|miss|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|"
            "pvt|mt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|vs|alex|wm|jos|cie|"
            "a\\.k\\.a|cf|treas|invt|elec|natl|m[ft]g")


@functools.cache
def _rules() -> list[tuple[str, re.Pattern[str]]]:
    """(action, pattern) pairs; at each position the longest match wins, ties go to the earlier rule.

    A pattern's group ``t`` is the token and the rest of the match is trailing context (it
    counts for the longest-match choice, as in JFlex, but is scanned again).
    """
    L = "A-Za-z\u00ad" + WORD_CHARS
    LET, AL = f"[{L}]", f"[{L}0-9]"
    ap, apx = _APOS, _APOSETC
    num = r"\d*(?:[.:,\u00ad\u066b\u066c]\d+)+|\d+"
    acro = r"[a-z](?:\.[a-z])+|(?:canada|sino|korean|eu|japan|non)-u\.s|u\.s\.-(?:u\.k|u\.s\.s\.r)"
    word = f"{LET}+"
    redaux = f"{ap}(?:[msd]|re|ve|ll)"
    thing_part = f"(?:[dol]{apx}{AL})?{AL}+"
    specs = [
        ("split3", r"(?P<t>can)not"),
        ("word", r"(?P<t><\/?[a-z!][^>]*>)"),
        ("word", r"(?P<t>https?://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])"),
        ("word", r"(?P<t>(?:(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-z]{2,4})|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+"
                 r"(?:com|net|org|edu)))(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?)"),
        ("word", r"(?P<t>[a-z0-9][^ \t\n\f\r\"<>|()\u00a0]*@(?:[^ \t\n\f\r\"<>|().\u00a0]+\.)+[a-z]{2,4})"),
        ("word", f"(?P<t>@[a-z_][a-z_0-9]*|#{LET}+)"),
        ("word", f"(?P<t>{LET}+(?:[.!?@]{LET}+)+)"),
        ("split2", r"(?P<t>gon(?=na)|got(?=ta)|wan(?=na)|lem(?=me)|gim(?=me))(?:na|ta|me)"),
        ("split2t", f"(?P<t>{ap}t)(?:is|was)"),
        ("word", r"(?P<t>c\+\+|[cf]#|<<|>>|s&p-500|s&ls)"),
        ("dash", "(?P<t>[\u2013\u2014\u2015\u0096\u0097])"),
        ("word", f"(?P<t>{word}){redaux}"),
        ("word", f"(?P<t>[a-z\u00ad]*[a-mo-z]\u00ad*)n{apx}t"),
        ("word", f"(?P<t>{word})"),
        ("word", f"(?P<t>{ap}n{ap}?|[ldj]{ap}|{ap}em|(?-i:[A-HJ-XZn]){apx}{LET}{{2,}}|{ap}[2-9]0s|"
                 f"{ap}till?|{LET}+(?-i:[aeiouyAEIOUY]){apx}(?-i:[aeiouA-Z]){LET}*|{ap}cause|cap{ap}n|c{ap}est|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l|"
                 f"dunkin{ap}|somethin{ap}|ol{ap})"),
        ("word", f"(?P<t>y{ap}){LET}"),
        ("quote", f"(?P<t>{redaux})(?:[^a-z]|$)"),
        ("quote", f"(?P<t>n{apx}t)"),
        ("word", r"(?P<t>\d{1,2}[-/]\d{1,2}[-/]\d{2,4})"),
        ("word", f"(?P<t>[-+]?(?:{num}))"),
        ("word", r"(?P<t>(?:\d{1,4}[- \u00a0])?\d{1,4}(?:\\?/|\u2044)\d{1,4})"),
        ("frac", "(?P<t>[\u00bc\u00bd\u00be\u2153-\u215e])"),
        ("word", r"(?P<t>-(?:rrb|lrb|rcb|lcb|rsb|lsb)-)"),
        ("word", r"(?P<t>[a-z0-9]+(?:-[a-z]+){0,2}(?:\\?/[a-z0-9]+(?:-[a-z]+){0,2}){1,2})"),
        ("word", r"(?P<t>(?-i:[A-Z]*)\$|#)"),
        ("currency", "(?P<t>[\u00a2-\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6])"),
        ("word", f"(?P<t>(?:{_ABBREV1})\\.)"),
        ("word", f"(?P<t>(?:{_ABTITLE}|{acro})\\.)"),
        ("word", f"(?P<t>[a-z]\\.)[ \\t\u00a0]"),
        ("word", r"(?P<t>(?:figs?|nos?|op|prop|sect?s?|arts?|paras?|pp|ca)\.)[ \t\u00a0]*[0-9]"),
        ("word", f"(?P<t>{acro})(?:[ \\t\u00a0]|$)"),
        ("word", f"(?P<t>{ap}[0-9][0-9])(?:[ \\t\u00a0]|$)"),
        ("word", f"(?P<t>{word}\\.)[,;:]"),
        ("phone", r"(?P<t>(?:\([0-9]{3}\)[ \u00a0]?|[0-9]{3}[- \u00a0.])[0-9]{3}[- \u00a0.][0-9]{4})"),
        ("quote", '(?P<t>")[a-z0-9$]'),
        ("quote", '(?P<t>")'),
        ("word", "(?P<t>[+%&\u2030\u2031~^|\\\\])"),
        ("bracket", r"(?P<t>[<>\[\]{}()])"),
        ("hyphens", r"(?P<t>-+)"),
        ("ellipsis", "(?P<t>\\.{3,5}|(?:\\.[ \u00a0]){2,4}\\.|[\u0085\u2026])"),
        ("word", r"(?P<t>@+|#+|_+|\*+|(?:\\\*){1,3})"),
        ("word", r"(?P<t>[,;:])"),
        ("word", r"(?P<t>[?!]+)"),
        ("word", "(?P<t>[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa=/])"),
        ("word", r"(?P<t>[a-z0-9][a-z0-9.,\u00ad]*(?:-(?:[a-z0-9\u00ad]+|" + acro + r"\.))+\.)[,;:]"),
        ("word", r"(?P<t>[a-z0-9][a-z0-9.,\u00ad]*(?:-(?:[a-z0-9\u00ad]+|" + acro + r"\.))+)"),
        ("word", f"(?P<t>{thing_part}(?:[-_\u058a\u2010\u2011]{thing_part})*\\.)[,;:]"),
        ("word", f"(?P<t>{thing_part}(?:[-_\u058a\u2010\u2011]{thing_part})*)"),
        ("word", r"(?P<t>(?-i:[A-Z]+(?:[+&][A-Z]+)+))"),
        ("quote", f"(?P<t>')[a-z][^ \\t\\n\\r\u00a0]"),
        ("quote", f"(?P<t>{redaux})"),
        ("quote", f"(?P<t>''|[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091-\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb]{{1,2}}|{ap})"),
    ]
    # NOTE: ASCII: JFlex %caseless folds only the literal (ASCII) strings, and \d must not take digits
    # of scripts the Java tokenizer does not know (WORD_CHARS lists the ones it does).
    return [(action, re.compile(p, re.IGNORECASE | re.ASCII)) for action, p in specs]


@functools.cache
def _symbol() -> re.Pattern[str]:
    return re.compile(f"[{SYMBOL_CHARS}]")


def _emit(action: str, tok: str) -> str:
    if action in ("quote",):
        for pattern, repl in _LATEX_QUOTES:
            tok = re.sub(pattern, repl, tok)
        return tok
    if action == "dash":
        return "--"
    if action == "hyphens":
        return "--" if 3 <= len(tok) <= 4 else tok
    if action == "ellipsis":
        return "..."
    if action == "phone":
        return tok.replace("(", "-LRB-").replace(")", "-RRB-")
    if action == "bracket":
        return _BRACKETS.get(tok, tok)
    if action == "currency":
        return _CURRENCY.get(tok, tok)
    if action == "frac":
        return _FRACTIONS.get(tok, tok)
    return tok.replace("\u00ad", "")


def _lex(line: str) -> list[str]:
    """PTB tokens of one line (original case, punctuation still in)."""
    rules = _rules()
    out: list[str] = []
    pos, n = 0, len(line)
    while pos < n:
        ws = _WS.match(line, pos)
        if ws:
            pos = ws.end()
            continue
        plain = _PLAIN.match(line, pos)
        if plain and plain.group().lower() not in _ASSIMILATIONS:
            # NOTE: an ASCII word followed by a space: no rule matches more (checked by the tests)
            out.append(plain.group())
            pos = plain.end()
            continue
        best, best_len = None, 0
        for action, pattern in rules:
            m = pattern.match(line, pos)
            if m and m.end() - pos > best_len:
                best, best_len = (action, m), m.end() - pos
        if best is None:
            ch = line[pos]
            # NOTE: what JFlex cannot lex it deletes: astral characters (emoji), controls, most
            # symbols it has no rule for; the ones it keeps stand alone.
            if _symbol().match(ch):
                out.append(ch)
            pos += 1
            continue
        action, m = best
        tok = m.group("t")
        out.append(_emit(action, tok))
        pos += len(tok)
    return out


def tokenize(text: str) -> list[str]:
    """Split a caption into lower-case words by the official evaluation's PTB rule (module docstring).

    >>> tokenize("A man's well-worn T-shirt, on a TABLE.")
    ['a', 'man', "'s", 'well-worn', 't-shirt', 'on', 'a', 'table']
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    simple = _SIMPLE.fullmatch(text)
    if simple is None:
        return _keep(_lex(text))
    # NOTE: the fast path (most real captions: ASCII words, commas, one final period) gives what
    # _lex gives, ~20x sooner; only the last word can be an abbreviation that keeps its period.
    words = simple.group(1).replace(",", " ").split()
    last = list(_last_word(words.pop() + simple.group(2)))
    out: list[str] = []
    for w in words:
        w = w.lower()
        out.extend(_ASSIMILATIONS.get(w, (w,)))
    return out + last


@functools.lru_cache(maxsize=1 << 16)
def _last_word(word: str) -> tuple[str, ...]:
    return tuple(_keep(_lex(word)))


_PLAIN = re.compile(r"[A-Za-z]+(?=[ \t]|$)")
_SIMPLE = re.compile(r"[ \t]*([A-Za-z]+(?:,?[ \t]+[A-Za-z]+)*)((?:[ \t]*\.)?)[ \t]*")
_ASSIMILATIONS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                  "wanna": ("wan", "na"), "lemme": ("lem", "me"), "gimme": ("gim", "me")}


def _keep(tokens: list[str]) -> list[str]:
    """Lower-case, drop pycocoevalcap's punctuation tokens, split what normalised to spaces."""
    words = []
    for tok in tokens:
        low = tok.lower()
        if low not in PUNCTUATIONS:
            words.extend(low.split())
    return words
