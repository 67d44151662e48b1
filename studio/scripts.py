"""The page's JavaScript: caption chips as buttons, the word a picture click steers, phone scrolling.

A word is selected on the server: a chip click or a slider move goes there and comes back as the
column's new slider value. A click on the picture sends the slider's value with it, so a click made
before that round trip returned used to steer the previously selected word. The chips and sliders
therefore also note the selection in the page at once (`window.satPick`), and the picture click's
`js` (`steer_word_js`) sends that word instead of the slider's while it is fresh: the same caption
is shown and the note is under `PICK_TTL_MS` old (by then the round trip has long set the slider).
"""
from __future__ import annotations

PICK_TTL_MS = 10_000
"""How long a word picked in the page outranks the slider's value for a picture click."""
LINK_DEFAULT = True
"""The "link the captions" checkbox's starting value. NOTE: the page tracks it from its change
events, since the checkbox sits in a collapsed accordion that Gradio has not rendered yet."""

_PICK_HELPERS = """
if (!window.satPick) {
  window.satWords = {};
  window.satLinked = %(linked)s;
  document.addEventListener('change', (e) => {
    if (e.target.closest?.('#link') && e.target.type === 'checkbox') window.satLinked = e.target.checked;
  }, true);
  const chips = (n) => document.querySelectorAll(`#${n}-caption .sat-chip`);
  const text = (n) => Array.from(chips(n), (c) => c.textContent).join(' ');
  // word: from 1. Linked columns take the same word number, clamped to their caption (LINK_RULE).
  window.satPick = (name, word) => {
    const linked = window.satLinked;
    document.querySelectorAll('[id$="-caption"]').forEach((el) => {
      const n = el.id.slice(0, -'-caption'.length), count = chips(n).length;
      if (count && (n === name || linked)) {
        window.satWords[n] = {word: Math.min(Math.max(1, word), count), text: text(n), at: Date.now()};
      }
    });
  };
  window.satWord = (name, position) => {
    const p = window.satWords[name];
    return p && Date.now() - p.at < %(ttl)d && p.text === text(name) ? p.word : position;
  };
  document.addEventListener('input', (e) => {
    const slider = e.target.closest?.('[id$="-slider"]');
    const v = Number(e.target.value);
    if (slider && Number.isFinite(v) && e.target.value !== '') window.satPick(slider.id.slice(0, -'-slider'.length), v);
  }, true);
}
""" % {"ttl": PICK_TTL_MS, "linked": "true" if LINK_DEFAULT else "false"}

CHIP_JS = _PICK_HELPERS + """
element.addEventListener('click', (e) => {
  const copy = e.target.closest('.sat-copy');
  if (copy) {
    const text = copy.dataset.copy;
    const done = () => { copy.textContent = 'Copied ✓'; };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done);
    else { const t = document.createElement('textarea'); t.value = text; document.body.appendChild(t);
           t.select(); document.execCommand('copy'); t.remove(); done(); }
    return;
  }
  const chip = e.target.closest('.sat-chip');
  if (!chip) return;
  const column = chip.closest('[id$="-caption"]');
  if (column) window.satPick(column.id.slice(0, -'-caption'.length), Number(chip.dataset.i) + 1);
  trigger('click', {index: Number(chip.dataset.i)});
});
"""
"""Chips are buttons: a click notes the word in the page and sends its index (0-based) as the HTML
component's click event."""


def steer_word_js(name: str, *, position: int) -> str:
    """The picture click's `js`: its inputs with input `position` (the slider's value) replaced by the
    word last picked in the page for column `name`, while that note is fresh (`window.satWord`)."""
    return (f"(...args) => {{ if (window.satWord) args[{position}] = window.satWord({name!r}, args[{position}]); "
            f"return args; }}")


SCROLL_JS = """() => { window.satWords = {};
  if (window.innerWidth <= 768) document.querySelector('#soft-column')?.scrollIntoView({block: 'start'}); }"""
"""After a caption: forget the words picked for the previous one (the server has set the sliders);
on phones, bring the first result column (caption, then overlay) to the top."""
