#!/usr/bin/env bash
# t5130 — handoff-inspect heatmap: a valid PNG (decoded here with python's zlib, every filter
# type) of a sensible size, whose cells are coloured exactly where the writes were (the band
# geometry comes from the PNG's own tEXt chunks), differently per generation or write count, and
# clean elsewhere; an image of 2 M chunks (8 GiB at 4 KiB chunks; here 1 GiB at 512 bytes, to
# spare hashing 8 GiB of base) still gives a picture about 1024 pixels wide.
. "$HANDOFF_SRC/tests/lib.sh"
command -v python3 >/dev/null || skip_all "python3 not installed"
fixture="$HANDOFF_BUILD/tests/inspect_fixture"
[ -x "$fixture" ] || bail "inspect_fixture not built"

cat >png.py <<'PY'
# decode an 8-bit RGB PNG: python3 png.py FILE CHECKS... ; prints nothing, exits 1 on a failed check
import struct, sys, zlib
def load(path):
    d = open(path, "rb").read()
    assert d[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, text = 8, b"", {}
    while pos < len(d):
        n, typ = struct.unpack(">I4s", d[pos:pos + 8])
        body = d[pos + 8:pos + 8 + n]
        assert zlib.crc32(typ + body) == struct.unpack(">I", d[pos + 8 + n:pos + 12 + n])[0], "bad crc"
        if typ == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype == 2, "not 8-bit RGB"
        elif typ == b"IDAT":
            idat += body
        elif typ == b"tEXt":
            k, v = body.split(b"\0", 1)
            text[k.decode()] = v.decode()
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), w * 3, [], bytearray(w * 3)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line); prev = line
    return w, h, rows, text
def cell(png, image, idx):
    w, h, rows, text = png
    x, y, per_row, px, cpc, n = map(int, text["handoff-band-" + image].split())
    k = idx // cpc
    cx, cy = x + (k % per_row) * px + px // 2, y + (k // per_row) * px + px // 2
    return tuple(rows[cy][cx * 3:cx * 3 + 3])
PY

head -c 4M /dev/urandom >base.disk
"$fixture" --disk base.disk --memory-size 2M ovl <<'SCRIPT' || bail "fixture failed"
time 1700000000
fill disk 0 4096 1
fill disk 409600 8192 2
checkpoint
fill disk 2097152 4096 3
fill disk 2097152 4096 4
fill disk 2097152 4096 5
fill memory 1048576 4096 6
SCRIPT

check "heatmap --by gen writes a PNG" handoff-inspect heatmap -o gen.png ovl
check "heatmap --by writes writes a PNG" handoff-inspect heatmap --by writes -o writes.png ovl
check "the PNG decodes, about 1024 pixels wide, bands for both images" python3 -c '
import sys; sys.path.insert(0, ".")
from png import load
w, h, rows, text = load("gen.png")
assert 1024 <= w <= 1400 and 200 <= h <= 1200, (w, h)
assert "handoff-band-disk" in text and "handoff-band-memory" in text, text
'
check "dirty cells are coloured where the writes were, clean cells are not" python3 -c '
import sys; sys.path.insert(0, ".")
from png import load, cell
p = load("gen.png")
clean = cell(p, "disk", 5)
for idx in (0, 100, 101, 512):
    assert cell(p, "disk", idx) != clean, idx
for idx in (1, 99, 102, 511, 513, 1023):
    assert cell(p, "disk", idx) == clean, idx
assert cell(p, "memory", 256) != clean and cell(p, "memory", 255) == clean
assert cell(p, "disk", 0) == cell(p, "disk", 100), "same generation, same colour"
assert cell(p, "disk", 0) != cell(p, "disk", 512), "generations differ in colour"
'
check "by writes, a chunk written three times differs from one written once" python3 -c '
import sys; sys.path.insert(0, ".")
from png import load, cell
p = load("writes.png")
assert cell(p, "disk", 512) != cell(p, "disk", 0) and cell(p, "disk", 0) == cell(p, "disk", 100)
assert cell(p, "disk", 5) != cell(p, "disk", 0)
'

# 2 M chunks: several chunks per pixel, still ~1024 wide and a few hundred high
printf 'time 1700000000\nfill disk 512M 131072 9\n' |
	"$fixture" --disk-size 1G --memory-size 64M --chunk-size 512 big || bail "fixture failed"
check "heatmap of a 2 M-chunk image" handoff-inspect heatmap -o big.png big
check "it is sized sensibly and the write shows up half-way" python3 -c '
import sys; sys.path.insert(0, ".")
from png import load, cell
p = load("big.png")
w, h, rows, text = p
assert 1024 <= w <= 1400 and h <= 1000, (w, h)
x, y, per_row, px, cpc, n = map(int, text["handoff-band-disk"].split())
assert cpc > 1 and n == 2097152, (cpc, n)
assert cell(p, "disk", 1048576) != cell(p, "disk", 0)
assert cell(p, "disk", 1048576 + 255) != cell(p, "disk", 0)
assert cell(p, "disk", 2097151) == cell(p, "disk", 0)
'
done_testing
