"""Deterministic multilingual corpus for the tokenizer comparison tests and the benchmark.

samples(total_bytes) returns a list of str documents (valid Unicode, no special-token strings)
covering: Latin with accents, Cyrillic, Greek, CJK (Chinese, Japanese kana, Korean), Arabic with
diacritics, Hebrew, Devanagari with matras, Thai, emoji with skin-tone modifiers, ZWJ sequences,
flags and variation selectors, source code, long whitespace and punctuation runs, mixed
\\r\\n / \\n / \\r newlines, Unicode spaces, digits, and English contractions in both cases.
invalid_utf8_samples() returns bytes that are not valid UTF-8.

Characters come from blocks assigned long ago (Unicode <= 13), so that PCRE2's, Rust regex's and
Oniguruma's Unicode tables agree on their categories.

Run as a script to write the corpus to a file: python3 make_corpus.py OUT [MEGABYTES].
"""

import random
import sys

SEED = 20250628


def _chars(lo, hi):
    return [chr(c) for c in range(lo, hi + 1)]


LATIN_WORDS = (
    "the quick brown fox jumps over lazy dog tokenizer model weights attention layer expert router "
    "sliding window context harmony channel message analysis final commentary function tool call "
    "être garçon naïve café façade Zürich straße Ærø smørrebrød señor año pingüino łódź žluťoučký "
    "İstanbul ıspanak ĳssel Ελλάδα αθήνα ΣΟΦΙΑ"
).split()
CONTRACTIONS = [
    "don't", "DON'T", "I'm", "I'M", "you're", "YOU'RE", "she's", "SHE'S", "we've", "WE'VE", "they'll",
    "THEY'LL", "he'd", "HE'D", "can't", "Won't", "it'S", "We'Re", "i'Ll", "O'Neil", "rock'n'roll",
    "y'all'd've", "'s", "'T", "l'été", "dell'Italia",
]
CYRILLIC = _chars(0x0410, 0x044F) + ["ё", "Ё", "і", "ї", "є", "ґ"]
GREEK = _chars(0x0391, 0x03A9) + _chars(0x03B1, 0x03C9) + ["ά", "έ", "ή", "ί", "ό", "ύ", "ώ"]
CJK = _chars(0x4E00, 0x4FFF) + _chars(0x6C00, 0x6FFF)
KANA = _chars(0x3041, 0x3096) + _chars(0x30A1, 0x30FA) + ["ー", "。", "、", "「", "」"]
HANGUL = _chars(0xAC00, 0xB7FF)
ARABIC = _chars(0x0621, 0x063A) + _chars(0x0641, 0x064A)
ARABIC_MARKS = _chars(0x064B, 0x0652)
HEBREW = _chars(0x05D0, 0x05EA)
DEVANAGARI = _chars(0x0905, 0x0939)
DEVANAGARI_MARKS = _chars(0x093E, 0x094D) + ["ं", "ः", "ँ"]
THAI = _chars(0x0E01, 0x0E2E) + _chars(0x0E31, 0x0E3A) + _chars(0x0E40, 0x0E4D)
EMOJI = _chars(0x1F600, 0x1F64F) + _chars(0x1F300, 0x1F3FA) + _chars(0x1F680, 0x1F6C5)
SKIN = _chars(0x1F3FB, 0x1F3FF)
PEOPLE = ["👍", "👋", "🙏", "💪", "👩", "👨", "🧑", "👧", "👦", "🤝"]
ZWJ = ["👨\u200d👩\u200d👧\u200d👦", "👩\u200d💻", "🏳\ufe0f\u200d🌈", "👨🏽\u200d🚀", "❤\ufe0f\u200d🔥", "🧑\u200d🤝\u200d🧑"]
FLAGS = ["🇫🇷", "🇯🇵", "🇧🇷", "🇮🇳", "🇺🇦", "🇪🇸", "🇰🇷", "🇺🇸"]
UNICODE_SPACES = ["\u00a0", "\u2003", "\u3000", "\u2009", "\u202f", "\u0085", "\u2028", "\u1680", "\u200a", "\t", "\x0b", "\x0c"]
PUNCT = list("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~") + ["…", "—", "–", "«", "»", "¿", "¡", "•", "→", "©", "€", "£"]
NEWLINES = ["\n", "\r\n", "\r", "\n\n", "\r\n\r\n", "\n\r"]
DIGITS_EXTRA = ["٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "１２３４", "½", "²", "Ⅻ"]

CODE_SNIPPETS = [
    "def f(x, y=3):\n    return [i ** 2 for i in range(x) if i % y == 0]\n",
    "int main(int argc, char** argv) {\n\tfor (int i = 0; i < argc; ++i) printf(\"%s\\n\", argv[i]);\n\treturn 0;\n}\n",
    "const obj = { a: 1, 'b-c': [true, null], d: `tmpl ${x}` };\r\nconsole.log(JSON.stringify(obj));\r\n",
    "SELECT id, name FROM users WHERE age >= 21 AND name LIKE '%ann%' ORDER BY id DESC;\n",
    "#include <vector>\ntemplate <typename T> T sum(const std::vector<T>& v) { T s{}; for (auto& x : v) s += x; return s; }\n",
    "    if (a&&b||!c) { x <<= 2; y >>= 1; } else { z ^= 0xFF; }  // comment: TODO(me)\n",
    "fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n    Ok(())\n}\n",
    "<div class=\"row\"><a href=\"https://example.com/path?q=1&r=2#frag\">link</a></div>\n",
    "$ ls -la /usr/local/bin | grep -E '^-rwx' && echo \"done\" >> ~/log.txt\n",
    "matrix = [[1.5e-3, -2.0], [3.14159, 2.71828]]  # shape [2, 2]\n",
]


def _word(rng, alphabet, lo=2, hi=8, marks=None, mark_p=0.0):
    out = []
    for _ in range(rng.randint(lo, hi)):
        out.append(rng.choice(alphabet))
        if marks and rng.random() < mark_p:
            out.append(rng.choice(marks))
    return "".join(out)


def _sentence(rng):
    kind = rng.randrange(16)
    if kind == 0:
        return " ".join(rng.choice(LATIN_WORDS) for _ in range(rng.randint(3, 15))) + rng.choice([".", "!", "?", ","])
    if kind == 1:
        return " ".join(rng.choice(CONTRACTIONS + LATIN_WORDS) for _ in range(rng.randint(3, 12)))
    if kind == 2:
        return " ".join(_word(rng, CYRILLIC) for _ in range(rng.randint(3, 10))) + "."
    if kind == 3:
        return " ".join(_word(rng, GREEK) for _ in range(rng.randint(3, 10)))
    if kind == 4:
        return _word(rng, CJK, 5, 30) + rng.choice(["。", "，", "！", "", " "]) + _word(rng, KANA, 3, 15)
    if kind == 5:
        return " ".join(_word(rng, HANGUL, 1, 5) for _ in range(rng.randint(2, 8))) + rng.choice([".", "?", ""])
    if kind == 6:
        return " ".join(_word(rng, ARABIC, 2, 7, ARABIC_MARKS, 0.3) for _ in range(rng.randint(3, 10))) + "؟"
    if kind == 7:
        return " ".join(_word(rng, HEBREW) for _ in range(rng.randint(3, 8)))
    if kind == 8:
        return " ".join(_word(rng, DEVANAGARI, 2, 6, DEVANAGARI_MARKS, 0.5) for _ in range(rng.randint(3, 10))) + "।"
    if kind == 9:
        return _word(rng, THAI, 5, 25)
    if kind == 10:
        parts = []
        for _ in range(rng.randint(1, 8)):
            r = rng.random()
            if r < 0.3:
                parts.append(rng.choice(PEOPLE) + rng.choice(SKIN))
            elif r < 0.5:
                parts.append(rng.choice(ZWJ))
            elif r < 0.6:
                parts.append(rng.choice(FLAGS))
            elif r < 0.7:
                parts.append(rng.choice(EMOJI) + "\ufe0f")
            else:
                parts.append(rng.choice(EMOJI))
        return rng.choice(["", " ", "wow "]) + rng.choice(["", " "]).join(parts)
    if kind == 11:
        return rng.choice(CODE_SNIPPETS)
    if kind == 12:
        # digits: long numbers, decimals, grouped, dates, other scripts' digits
        choices = [
            str(rng.randint(0, 10 ** rng.randint(1, 25))),
            f"{rng.random() * 1000:.{rng.randint(1, 8)}f}",
            f"{rng.randint(1, 9999):,}",
            f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            rng.choice(DIGITS_EXTRA),
            "v" + ".".join(str(rng.randint(0, 99)) for _ in range(3)),
            "+1 (555) 123-4567",
        ]
        return " ".join(rng.choice(choices) for _ in range(rng.randint(1, 6)))
    if kind == 13:
        # whitespace runs (long ones too) mixed with words and Unicode spaces
        ws = rng.choice([" ", "\t", "  ", " \t"]) * rng.randint(1, 300)
        if rng.random() < 0.3:
            ws += rng.choice(UNICODE_SPACES) * rng.randint(1, 5)
        return rng.choice(LATIN_WORDS) + ws + rng.choice(LATIN_WORDS + [""]) + rng.choice(["", " ", "   "])
    if kind == 14:
        # punctuation runs, some longer than 128 bytes
        run = "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.2:
            run = rng.choice(["=", "-", "*", "#", "~", "…"]) * rng.randint(50, 400)
        return rng.choice(["", " "]) + run + rng.choice(["", "\n", "/", "\r\n"])
    # mixed everything in one line
    return "".join(
        rng.choice([rng.choice(LATIN_WORDS), rng.choice(CJK), rng.choice(EMOJI), rng.choice(PUNCT),
                    rng.choice(UNICODE_SPACES), str(rng.randint(0, 99999)), rng.choice(CONTRACTIONS)])
        for _ in range(rng.randint(3, 20))
    )


def samples(total_bytes=5_300_000, seed=SEED):
    """Documents of ~0.2-4 KB each until their UTF-8 size reaches total_bytes."""
    rng = random.Random(seed)
    docs = []
    size = 0
    while size < total_bytes:
        parts = []
        for _ in range(rng.randint(2, 40)):
            parts.append(_sentence(rng))
            parts.append(rng.choice(NEWLINES) if rng.random() < 0.4 else rng.choice([" ", "", "  ", "\t"]))
        doc = "".join(parts)
        if rng.random() < 0.05:
            doc = " " * rng.randint(1, 5) + doc + "\n" * rng.randint(1, 4)
        docs.append(doc)
        size += len(doc.encode("utf-8"))
    return docs


def invalid_utf8_samples(seed=SEED):
    """Byte strings that are not valid UTF-8: stray continuation bytes, truncated sequences,
    overlong forms, surrogates, code points above U+10FFFF, 0xFF/0xFE, mixed with valid text."""
    rng = random.Random(seed + 1)
    bad = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
           b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\xfe", b"\xe4\xb8", b"\xf0\x9f\x98",
           b"\xc3", b"\xe2\x82", b"\xf0\x9f", b"\xc3\x28", b"\xe2\x28\xa1"]
    out = [b for b in bad]
    valid = samples(60_000, seed + 2)
    for doc in valid:
        data = bytearray(doc.encode("utf-8"))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randint(0, len(data))
            data[pos:pos] = rng.choice(bad)
        # sometimes cut a multi-byte character in half
        if rng.random() < 0.3 and len(data) > 3:
            del data[rng.randrange(len(data))]
        out.append(bytes(data))
    out.append(b"abc \xff  \xfe\n\xf0\x9f\x98 def" + b"\x80" * 50 + b"   ")
    return out


if __name__ == "__main__":
    mb = float(sys.argv[2]) if len(sys.argv) > 2 else 5.3
    with open(sys.argv[1], "w", encoding="utf-8", newline="") as f:
        for d in samples(int(mb * 1_000_000)):
            f.write(d)
