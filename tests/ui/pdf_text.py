"""The text of a PDF that Qt's writer made: its content streams decoded through the fonts' ToUnicode maps.

Enough for the report test (Qt writes each glyph as ``<hex> Tj`` of a Type0 font with a ToUnicode
CMap); not a general PDF reader.
"""
from __future__ import annotations

import re
import unicodedata
import zlib


def _objects(data: bytes) -> dict[int, bytes]:
    """Object number -> its body (a stream's data inflated)."""
    out = {}
    for m in re.finditer(rb"(\d+) 0 obj(.*?)endobj", data, re.S):
        body = m.group(2)
        sm = re.search(rb"stream\r?\n(.*?)\r?\nendstream", body, re.S)
        if sm:
            try:
                body = body[:sm.start()] + zlib.decompress(sm.group(1))
            except zlib.error:
                pass
        out[int(m.group(1))] = body
    return out


def _cmap(stream: bytes) -> dict[int, str]:
    table: dict[int, str] = {}
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", stream, re.S):
        for lo, hi, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*(\[[^\]]*\]|<[0-9A-Fa-f]+>)", block):
            lo_i, hi_i = int(lo, 16), int(hi, 16)
            if dst.startswith(b"["):
                for k, code in enumerate(re.findall(rb"<([0-9A-Fa-f]+)>", dst)):
                    table[lo_i + k] = bytes.fromhex(code.decode()).decode("utf-16-be")
            else:
                base = int(dst[1:-1], 16)
                for k in range(hi_i - lo_i + 1):
                    table[lo_i + k] = chr(base + k)
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", stream, re.S):
        for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            table[int(src, 16)] = bytes.fromhex(dst.decode()).decode("utf-16-be")
    return table


def pdf_text(path) -> str:
    """Every text run of the file, one per line (the glyphs of one ``BT`` block, through their font's map)."""
    objs = _objects(open(path, "rb").read())
    cmaps = {n: _cmap(objs[int(m.group(1))]) for n, body in objs.items()
             if (m := re.search(rb"/ToUnicode (\d+) 0 R", body)) and int(m.group(1)) in objs}
    fonts: dict[bytes, dict[int, str]] = {}
    for body in objs.values():
        for name, ref in re.findall(rb"/(F\d+) (\d+) 0 R", body):
            if int(ref) in cmaps:
                fonts[name] = cmaps[int(ref)]
    runs = []
    for body in objs.values():
        for block in re.findall(rb"BT(.*?)ET", body, re.S):
            font: dict[int, str] = {}
            text = []
            for tok in re.finditer(rb"/(F\d+) [\d.]+ Tf|<([0-9A-Fa-f]{4})>\s*Tj", block):
                if tok.group(1):
                    font = fonts.get(tok.group(1), {})
                else:
                    text.append(font.get(int(tok.group(2), 16), "?"))
            if text:
                runs.append("".join(text).replace("\t", " "))
    return unicodedata.normalize("NFKC", "\n".join(runs))   # the font's ligatures (ﬁ) as letters
